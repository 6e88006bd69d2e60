"""Multi30K English->German: train the Transformer and the RNN translator under a wall-clock budget.

For each model (`--models transformer,rnn`), in one process:

1. WordPiece vocabularies (`pipelines.text.build_wordpiece_vocab`) are learned on the English and
   the German training sentences (`raw/train.{en,de}.gz`, cased and untokenized: the realistic
   input of a string-in/string-out model; lower-cased by default, since the metric is
   case-insensitive, `--cased` keeps case). They are written once under `<output-dir>/vocab/`
   and reused while their options match.
2. Teacher-forcing batches from `pipelines.translation.make_dataset`: 64 sentence pairs per batch,
   bucketed by length (little padding), pairs longer than 64 tokens dropped (none in Multi30K:
   the longest has 51 English / 62 German word pieces), cached, reshuffled every epoch.
3. Training with the package's generic `keras_attention.training.fit` (the one every
   `keras-attention train <task>` uses) until `--budget-minutes` of wall-clock time are spent
   (per model). The clock starts right before `Model.fit`, so tracing, the first pass through
   the tokenizing pipeline and the validation passes all count; training stops after the batch
   that would leave less time than the last validation pass took (`FitConfig.budget_minutes`).
   Learning rate: linear warmup, then a cosine decay driven by the elapsed fraction of the
   budget (down to 5% of the peak; `schedule="cosine"`), so the schedule fits any budget
   without knowing the number of steps in advance. Adam, gradient clipping at norm 1, label
   smoothing 0.1 (`MaskedCrossEntropy`: the cross-entropy against
   `0.9 * one_hot + 0.1 / vocabulary_size`). The weights with the best validation loss
   (`raw/val`) are kept and restored at the end; `fit` also writes its backup, best checkpoint
   and TensorBoard logs under `<output-dir>/<model>/`.
4. BLEU on `test_2016_flickr` with sacrebleu, greedy search and beam search (width 5, GNMT
   length penalty 0.6), through `keras_attention.models.Translator` (strings in, strings out).
5. `keras_attention.export.export_translator`, the SavedModel reloaded with
   `tf.saved_model.load`, and the latency of its `serving_default` signature: the median of
   single-sentence calls and of calls on batches of 32 sentences (after one warm-up call).

What "BLEU on lower-cased tokenized text" means here: the translations (detokenized strings) are
scored against the raw, cased German references with `sacrebleu.corpus_bleu(hypotheses,
[references], tokenize="13a", lowercase=True)`: both sides lower-cased, then split with
sacrebleu's 13a tokenizer (mteval-v13a: punctuation split off, as Moses does). That is the
published Multi30K protocol: the 13a tokens of the lower-cased raw references equal the official
`tok/test_2016_flickr.lc.norm.tok.de` lines for 991 of the 1,000 sentences (the others differ
only by `&quot;` escapes; the raw references score 99.9 BLEU against the official ones). The
JSON also holds `bleu_tok`: the lower-cased, 13a-tokenized translations scored against those
official tokenized references with `tokenize="none"` (multi-bleu.perl style).

Model sizes (for a 2-core CPU and a 60-minute budget):

- `transformer`: `transformer_translator(num_layers=3, hidden_dim=256, num_heads=4,
  intermediate_dim=1024, dropout=0.1, normalize_first=True, sequence_length=64)` (pre-LN, stable at a peak learning
  rate of 1e-3 with a 500-step warmup): 8.1M parameters with the ~2.9k English / ~3.5k German
  word pieces (the WordPiece learner keeps only pieces seen 10 times, so it returns far fewer than
  the 8,000 asked for; ~14.4 English and ~15.2 German pieces per sentence, 470k target tokens per
  epoch with `[END]`). Measured on the shared 2-core machine while other jobs ran (load ~5):
  ~1,050 target tokens/s in float32 (~1,230 with `mixed_bfloat16`, not used by default), i.e.
  ~7.4 minutes per epoch, so 60 minutes give ~8 epochs there; on the idle machine: 2,273
  tokens/s, 14.5 epochs, 36.59 BLEU with beam search; with `--dtype-policy mixed_bfloat16
  --tokens-per-batch 2048`: 3,723 tokens/s, 26 epochs, 37.64 BLEU (README, "Speed"). The data README's keras_hub baseline (the same size, 5 epochs, no bucketing, no
  label smoothing) reached 32.3 BLEU in 36 minutes.
- `rnn`: `seq2seq_translator(embedding_dim=256, units=512, cell="gru", score="additive",
  style="bahdanau", dropout=0.2)`: a bidirectional GRU encoder (256 units per direction) and a
  Bahdanau attention decoder, Adam at 2e-3 after a 200-step warmup: 7.0M parameters, ~1,000
  target tokens/s on the same contended machine (~8 minutes per epoch); idle: 1,942 tokens/s,
  14 epochs, 35.80 BLEU with beam search.

- `keras_hub`: the peer, keras.io's "English-to-Spanish translation with KerasHub" recipe at the
  Transformer's size (`keras_hub_model`: keras_hub `TokenAndPositionEmbedding`, 3+3
  `TransformerEncoder` / `TransformerDecoder` blocks, hidden 256, 4 heads, feed-forward 1024,
  dropout 0.1, dropout 0.5 before the logits), trained the recipe's way: 64 pairs per batch
  padded to 40 tokens (longer pairs dropped), no buckets, Adam at a constant 5e-4, no label
  smoothing, no clipping; greedy decoding with keras_hub's `GreedySampler` re-running the whole
  model every step (the recipe has no cache; `keras_hub_translate`). Same vocabularies, data,
  dtype policy, budget rule and best-checkpoint restore as ours; no beam search and no export
  (the recipe has neither).

`--transformer-sizes KEY=VALUE,...` changes the Transformer's sizes (`num_layers`, `hidden_dim`,
`num_heads`, `intermediate_dim`, `dropout`; the keras_hub recipe takes the same, to stay of equal
size), `--rnn-sizes` the RNN's (`embedding_dim`, `units`, `dropout`). A trained model's sizes
go to its `training.json` and to `results.json` under `config.builder` (with `--throughput`:
`results.json`'s `args.builders`); `--reuse-trained` refuses a translator trained at other sizes.

Quality options (issue 17): `--shared-vocabulary` (one WordPiece vocabulary learned on both
languages), `--tie-embeddings target|all` (`TransformerTranslator(tie_embeddings=...)`; `all`
needs the shared vocabulary), `--average-last-epochs N` (`FitConfig(average_last_epochs=N)`:
checkpoint averaging, kept when no worse on validation), `--tune-beam-widths` /
`--tune-length-penalties` (each setting decodes the first `--tune-sentences` validation sentences;
the best BLEU there decodes the test set; the grid goes to `results.json` as `beam_tuning`).

Tracing the Transformer's training step took ~75 s there (~16 s for the RNN); it is spent from
the budget, and left out of the reported tokens/s.

Speed (issue 17):

- `--export-jit-compile off,on` (default): each export is timed twice, as `Translator(jit_compile=
  False)` and as `Translator(jit_compile=True)` (the encoder and the decoding loop compiled with XLA
  inside the SavedModel), both checked against the in-memory translations. Every timed input is
  called once before the timing (XLA compiles once per padded shape).
- `--throughput`: no BLEU; each of `--throughput-settings` (`DTYPE_POLICY:PAIRS` or
  `DTYPE_POLICY:tokensN`, the first one the baseline) trains `--throughput-steps` batches of a new
  model with the generic `fit`, settings in turns, `--repeats` times, and the table gives the median
  target tokens/s of each against the first, in one run.
- `--dtype-policy mixed_bfloat16` and `--tokens-per-batch N` train the main run that way.

`--train-limit`, `--val-limit` and `--test-limit` take the first sentences of each split for a
quick end-to-end check:

    python benchmarks/multi30k.py --budget-minutes 60 --models transformer,rnn \\
        --data-dir ../shared/data/multi30k --output-dir runs/multi30k
    python benchmarks/multi30k.py --budget-minutes 3 --train-limit 5000 --test-limit 200 \\
        --output-dir runs/multi30k_smoke                                    # smoke test

`--reuse-trained transformer` (or `rnn`, or both) skips training that model: its translator and
its training summary are read from `<output-dir>/<model>/translator/` and
`<output-dir>/<model>/training.json`, which every training run writes, and only the evaluation
runs (e.g. after an evaluation failed, or to evaluate with newer decoding code).

Long runs: start them from a copy of the source tree (or leave the source alone while they run):
autograph reads a function's source from disk when it converts it, so an edited file makes a
running process trace the wrong lines.

Prints a Markdown table (also written to `<output-dir>/results.md`) and writes every number to
`<output-dir>/results.json`; the translations go to `<output-dir>/<model>/`, the trained
translator (`Translator.save`) to `<output-dir>/<model>/translator/` and the SavedModels to
`<output-dir>/saved_models/multi30k_<model>_<decoding>/1/`.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

# A bucketed dataset has no known length: Keras warns at the end of every epoch.
warnings.filterwarnings("ignore", message="Your input ran out of data")
# keras_hub's blocks (the keras_hub recipe) pass a Keras mask to layers that drop it, every call.
warnings.filterwarnings("ignore", message=".*was passed an input with a mask attached to it")

MODELS = ("transformer", "rnn", "keras_hub")
TIE_EMBEDDINGS = ("none", "target", "all")
KERAS_HUB_LENGTH = 40  # keras.io's recipe pads every batch to 40 tokens
DECODINGS = ("greedy", "beam")
EXPORT_KEYS = {False: "export", True: "export_xla"}  # by `jit_compile`
SOURCE_LANGUAGE, TARGET_LANGUAGE = "en", "de"
TEST_SPLIT = "test_2016_flickr"
MAX_LENGTH = 64  # word pieces: training filter, Transformer positions, translator limits
BUCKET_BOUNDARIES = [8, 12, 16, 20, 24, 28, 32, 40, 48]
BLEU_DEFINITION = (
    "sacrebleu corpus BLEU, tokenize='13a', lowercase=True, on the detokenized translations "
    "against the raw cased references (both lower-cased, then 13a-tokenized: the published "
    "'lower-cased tokenized' Multi30K protocol)"
)
# The Transformer's sizes, also the keras_hub recipe's (equal size, side by side).
TRANSFORMER_SIZES = {
    "num_layers": 3,
    "hidden_dim": 256,
    "num_heads": 4,
    "intermediate_dim": 1024,
    "dropout": 0.1,
}
RNN_SIZE_KEYS = ("embedding_dim", "units", "dropout")
CONFIGS = {
    "transformer": {
        "builder": {**TRANSFORMER_SIZES, "normalize_first": True, "sequence_length": MAX_LENGTH},
        "learning_rate": 1e-3,
        "warmup_steps": 500,
    },
    "rnn": {
        "builder": {
            "embedding_dim": 256,
            "units": 512,
            "cell": "gru",
            "score": "additive",
            "style": "bahdanau",
            "dropout": 0.2,
        },
        "learning_rate": 2e-3,
        "warmup_steps": 200,
    },
    # The keras_hub recipe (keras.io's "English-to-Spanish translation with KerasHub", at the
    # Transformer's size): keras_hub TransformerEncoder/TransformerDecoder blocks (post-LN),
    # every batch padded to 40 tokens, Adam at a constant 5e-4, no label smoothing, no clipping.
    "keras_hub": {
        "builder": dict(TRANSFORMER_SIZES),
        "learning_rate": 5e-4,
        "warmup_steps": 0,
        "schedule": "constant",
        "clipnorm": None,
        "label_smoothing": 0.0,
    },
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="transformer,rnn", help="comma-separated: %(default)s")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="wall-clock training budget per model (default %(default)s)",
    )
    parser.add_argument("--data-dir", default="../shared/data/multi30k")
    parser.add_argument("--output-dir", default="runs/multi30k")
    parser.add_argument("--batch-size", type=int, default=64, help="sentence pairs per batch")
    parser.add_argument(
        "--tokens-per-batch",
        type=int,
        help="token-based batching: each length bucket's batches hold about this many padded "
        "tokens (make_dataset(tokens_per_batch=...)) instead of --batch-size pairs",
    )
    parser.add_argument(
        "--vocabulary-size",
        "--vocab-size",
        dest="vocabulary_size",
        type=int,
        default=8000,
        help="largest WordPiece size (--vocab-size: its old name)",
    )
    parser.add_argument("--cased", action="store_true", help="keep case in the vocabularies")
    parser.add_argument(
        "--shared-vocabulary",
        action="store_true",
        help="one WordPiece vocabulary learned on the English and the German sentences together",
    )
    parser.add_argument(
        "--tie-embeddings",
        default="none",
        choices=TIE_EMBEDDINGS,
        help="the Transformer's TransformerTranslator(tie_embeddings=...): target (the output "
        "layer is the target token table) or all (three-way, needs --shared-vocabulary)",
    )
    parser.add_argument(
        "--average-last-epochs",
        type=int,
        help="checkpoint averaging: FitConfig(average_last_epochs=N), the mean of the last N "
        "epochs' weights when its validation loss is no worse than the best epoch's",
    )
    parser.add_argument(
        "--tune-beam-widths",
        default="",
        help="comma-separated beam widths to try on the first --tune-sentences validation "
        "sentences (with --tune-length-penalties); the best by BLEU decodes the test set",
    )
    parser.add_argument(
        "--tune-length-penalties",
        default="",
        help="comma-separated length penalties (alpha) to try on validation sentences",
    )
    parser.add_argument(
        "--tune-sentences", type=int, default=500, help="validation sentences for the tuning"
    )
    parser.add_argument(
        "--transformer-sizes",
        default="",
        help="KEY=VALUE,... over the Transformer's sizes (and the keras_hub recipe's: equal "
        f"size), keys {sorted(TRANSFORMER_SIZES)}; e.g. num_layers=4,hidden_dim=128,"
        "intermediate_dim=256,dropout=0.3",
    )
    parser.add_argument(
        "--rnn-sizes",
        default="",
        help=f"KEY=VALUE,... over the RNN's sizes, keys {sorted(RNN_SIZE_KEYS)}",
    )
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument(
        "--learning-rate", type=float, help="peak learning rate (default: per model, see CONFIGS)"
    )
    parser.add_argument(
        "--warmup-steps", type=int, help="linear warmup steps (default: per model, see CONFIGS)"
    )
    parser.add_argument("--beam-width", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--decode-batch-size", type=int, default=100, help="sentences per call")
    parser.add_argument(
        "--export",
        default="greedy,beam",
        help="decodings to export and time as SavedModels, comma-separated, or 'none'",
    )
    parser.add_argument(
        "--export-jit-compile",
        default="off,on",
        help="time each export without XLA (off), with XLA inside the SavedModel "
        "(on: Translator(jit_compile=True)), or both: %(default)s",
    )
    parser.add_argument("--latency-runs", type=int, default=30, help="timed calls per latency")
    parser.add_argument("--train-limit", type=int, help="use the first N training pairs")
    parser.add_argument("--val-limit", type=int, help="use the first N validation pairs")
    parser.add_argument("--test-limit", type=int, help="translate the first N test sentences")
    parser.add_argument("--dtype-policy", default="float32", help="e.g. mixed_bfloat16")
    parser.add_argument(
        "--reuse-trained",
        default="",
        help="comma-separated models not to train again: their translator and training summary "
        "are read from <output-dir>/<model>/ (translator/, training.json) of an earlier run, "
        "and only the evaluation runs",
    )
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="only compare training throughput: each of --throughput-settings trains "
        "--throughput-steps batches of each model with the generic fit, in turns, "
        "--repeats times; prints target tokens/s side by side (no BLEU)",
    )
    parser.add_argument(
        "--throughput-settings",
        default="float32:64,mixed_bfloat16:64,mixed_bfloat16:tokens1024,mixed_bfloat16:tokens2048",
        help="comma-separated DTYPE_POLICY:BATCHING, BATCHING a number of pairs per batch or "
        "tokensN (--tokens-per-batch N); the first is the baseline (default: %(default)s)",
    )
    parser.add_argument("--throughput-steps", type=int, default=150, help="batches per run")
    parser.add_argument("--repeats", type=int, default=3, help="--throughput runs per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, help="Model.fit verbosity")
    args = parser.parse_args(argv)
    args.models = _split_choices(parser, "--models", args.models, MODELS)
    args.reuse_trained = (
        _split_choices(parser, "--reuse-trained", args.reuse_trained, MODELS)
        if args.reuse_trained
        else []
    )
    args.export = (
        [] if args.export == "none" else _split_choices(parser, "--export", args.export, DECODINGS)
    )
    args.export_jit_compile = [
        choice == "on"
        for choice in _split_choices(
            parser, "--export-jit-compile", args.export_jit_compile, ("off", "on")
        )
    ]
    args.tune_beam_widths = _numbers(parser, "--tune-beam-widths", args.tune_beam_widths, int)
    args.tune_length_penalties = _numbers(
        parser, "--tune-length-penalties", args.tune_length_penalties, float
    )
    if any(width < 1 for width in args.tune_beam_widths) or not all(
        math.isfinite(alpha) and alpha >= 0 for alpha in args.tune_length_penalties
    ):
        parser.error(
            "--tune-beam-widths must be >= 1 and --tune-length-penalties >= 0. Received: "
            f"{args.tune_beam_widths}, {args.tune_length_penalties}"
        )
    if args.tie_embeddings == "all" and not args.shared_vocabulary:
        parser.error("--tie-embeddings all needs --shared-vocabulary (one token table)")
    if "keras_hub" in args.reuse_trained:
        parser.error("--reuse-trained keras_hub: the keras_hub recipe has no saved translator")
    transformer = _sizes(parser, "--transformer-sizes", args.transformer_sizes, TRANSFORMER_SIZES)
    rnn = _sizes(parser, "--rnn-sizes", args.rnn_sizes, RNN_SIZE_KEYS)
    args.builders = {
        "transformer": {**CONFIGS["transformer"]["builder"], **transformer},
        "keras_hub": {**CONFIGS["keras_hub"]["builder"], **transformer},
        "rnn": {**CONFIGS["rnn"]["builder"], **rnn},
    }
    sizes = args.builders["transformer"]
    if sizes["hidden_dim"] % sizes["num_heads"]:
        parser.error(
            "--transformer-sizes: hidden_dim must be a multiple of num_heads (the keras_hub "
            f"recipe would silently narrow its heads). Received: hidden_dim={sizes['hidden_dim']}"
            f", num_heads={sizes['num_heads']}"
        )
    if args.average_last_epochs is not None and args.average_last_epochs < 2:
        parser.error(f"--average-last-epochs must be >= 2. Received: {args.average_last_epochs}")
    args.throughput_settings = [
        _throughput_setting(parser, item) for item in args.throughput_settings.split(",")
    ]
    for name in (
        "batch_size", "vocabulary_size", "beam_width", "decode_batch_size", "latency_runs",
        "throughput_steps", "repeats", "tune_sentences",
    ):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be >= 1. Received: {getattr(args, name)}"
            )
    for name in ("train_limit", "val_limit", "test_limit", "tokens_per_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    if not args.budget_minutes > 0:
        parser.error(f"--budget-minutes must be > 0. Received: {args.budget_minutes}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        parser.error(f"--learning-rate must be > 0. Received: {args.learning_rate}")
    if args.warmup_steps is not None and args.warmup_steps < 1:
        parser.error(f"--warmup-steps must be >= 1. Received: {args.warmup_steps}")
    if not 0 <= args.label_smoothing < 1:
        parser.error(f"--label-smoothing must be in [0, 1). Received: {args.label_smoothing}")
    return args


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    data = load_data(args)
    os.makedirs(args.output_dir, exist_ok=True)
    source_tokenizer, target_tokenizer, vocab_info = build_vocabularies(args, data)
    results = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "bleu_definition": BLEU_DEFINITION,
        "system": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "args": {key: value for key, value in vars(args).items()},
        "data": {split: len(data[split][0]) for split in ("train", "val", "test")},
        "vocabulary": vocab_info,
        "models": {},
    }
    if args.throughput:
        return run_throughput(args, data, source_tokenizer, target_tokenizer, results)
    for kind in args.models:
        print(f"\n=== {kind} ===", flush=True)
        results["models"][kind] = run_model(kind, args, data, source_tokenizer, target_tokenizer)
        write_results(args.output_dir, results)  # after each model, in case a later one fails
    table = results_table(results)
    print("\n" + table)
    write_results(args.output_dir, results, table)
    return results


# -- data and vocabularies ----------------------------------------------------------------------


def load_data(args):
    """`{"train"|"val"|"test": (sources, targets)}` (raw text) and `"test_tok"`.

    `"test_tok"`: the official lower-cased tokenized test references (a list of str), or
    `None` when `tok/` is missing.
    """
    from pipelines.text import read_lines

    raw = os.path.join(args.data_dir, "raw")
    if not os.path.isdir(raw):
        raise FileNotFoundError(
            f"No Multi30K data under '{args.data_dir}': expected raw/train.en.gz and the other "
            "splits (see ../shared/data/README.md). Received: --data-dir "
            f"{args.data_dir!r}"
        )
    data = {}
    for split, file_split, limit in (
        ("train", "train", args.train_limit),
        ("val", "val", args.val_limit),
        ("test", TEST_SPLIT, args.test_limit),
    ):
        sources = read_lines(os.path.join(raw, f"{file_split}.{SOURCE_LANGUAGE}.gz"), False)
        targets = read_lines(os.path.join(raw, f"{file_split}.{TARGET_LANGUAGE}.gz"), False)
        if len(sources) != len(targets):
            raise ValueError(f"Misaligned {split} files: {len(sources)} vs {len(targets)} lines")
        data[split] = (sources[:limit], targets[:limit])
    tok_path = os.path.join(args.data_dir, "tok", f"{TEST_SPLIT}.lc.norm.tok.{TARGET_LANGUAGE}")
    data["test_tok"] = (
        read_lines(tok_path, False)[: args.test_limit] if os.path.isfile(tok_path) else None
    )
    return data


def build_vocabularies(args, data):
    """Learns (or reuses) the WordPiece vocabularies; returns the two tokenizers and a summary.

    With `--shared-vocabulary` one vocabulary (`shared.txt`) is learned on the sentences of
    both languages, and both tokenizers are it.
    """
    from pipelines.text import build_wordpiece_vocab, load_tokenizer

    vocab_dir = os.path.join(args.output_dir, "vocab")
    os.makedirs(vocab_dir, exist_ok=True)
    options = {
        "vocab_size": args.vocabulary_size,
        "lowercase": not args.cased,
        "train_sentences": len(data["train"][0]),
        "data_dir": os.path.abspath(args.data_dir),
    }
    info = {}
    tokenizers = []
    sides = (
        [("shared", data["train"][0] + data["train"][1])]
        if args.shared_vocabulary
        else [(SOURCE_LANGUAGE, data["train"][0]), (TARGET_LANGUAGE, data["train"][1])]
    )
    for language, texts in sides:
        path = os.path.join(vocab_dir, f"{language}.txt")
        meta_path = os.path.join(vocab_dir, f"{language}.options.json")
        reuse = os.path.isfile(path) and os.path.isfile(meta_path)
        if reuse:
            with open(meta_path, encoding="utf-8") as f:
                reuse = json.load(f) == options
        start = time.perf_counter()
        if not reuse:
            print(f"learning the {language} WordPiece vocabulary ...", flush=True)
            build_wordpiece_vocab(
                texts, path, args.vocabulary_size, lowercase=not args.cased, progress=False
            )
            with open(meta_path, "w", encoding="utf-8") as f:
                json.dump(options, f, indent=2)
        tokenizer = load_tokenizer(path)
        tokenizers.append(tokenizer)
        info[language] = {
            "path": path,
            "size": tokenizer.vocabulary_size,
            "reused": reuse,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"{language} vocabulary: {tokenizer.vocabulary_size} word pieces", flush=True)
    return tokenizers[0], tokenizers[-1], info


# -- training -----------------------------------------------------------------------------------


TRAINING_FILE = "training.json"


def run_model(kind, args, data, source_tokenizer, target_tokenizer):
    """Trains (or, with `--reuse-trained`, reloads) one model, then evaluates it."""
    from keras_attention.models import Translator

    model_dir = os.path.join(args.output_dir, kind)
    if kind in args.reuse_trained:
        translator_dir = os.path.join(model_dir, "translator")
        training_path = os.path.join(model_dir, TRAINING_FILE)
        for path in (translator_dir, training_path):
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"--reuse-trained {kind}: no '{path}' (written by a run that trained "
                    f"{kind} with --output-dir {args.output_dir})"
                )
        keras.backend.clear_session()
        reused = Translator.load(translator_dir)
        sizes = (reused.source_tokenizer.vocabulary_size, reused.target_tokenizer.vocabulary_size)
        if sizes != (source_tokenizer.vocabulary_size, target_tokenizer.vocabulary_size):
            raise ValueError(
                f"--reuse-trained {kind}: the translator in '{translator_dir}' was trained on "
                f"vocabularies of {sizes[0]} / {sizes[1]} pieces, this run's have "
                f"{source_tokenizer.vocabulary_size} / {target_tokenizer.vocabulary_size} "
                "(other --vocabulary-size, --cased or --shared-vocabulary options)"
            )
        model = reused.model
        with open(training_path, encoding="utf-8") as f:
            result = json.load(f)
        trained = result.get("config", {}).get("builder")
        if trained is not None and trained != args.builders[kind]:
            raise ValueError(
                f"--reuse-trained {kind}: the translator in '{translator_dir}' was trained "
                f"with sizes {trained}, this run asks for {args.builders[kind]} (other "
                "--transformer-sizes or --rnn-sizes)"
            )
        result["reused_from"] = training_path
        result["parameters"] = int(model.count_params())
        print(f"{kind}: reusing the trained translator in {translator_dir}", flush=True)
    else:
        model, result = train_model(kind, args, data, source_tokenizer, target_tokenizer)
    return evaluate_model(kind, model, result, args, data, source_tokenizer, target_tokenizer)


def train_model(kind, args, data, source_tokenizer, target_tokenizer):
    """Builds and trains one model under the budget with the generic `fit`; returns it and a summary.

    The summary is also written to `<output-dir>/<model>/training.json`, for `--reuse-trained`.
    """
    from keras_attention.training import (
        FitConfig,
        MaskedCrossEntropy,
        TargetTokens,
        ThroughputMeter,
        fit,
    )

    config = model_config(kind, args)
    model = new_model(kind, args, args.dtype_policy, source_tokenizer, target_tokenizer)
    model_dir = os.path.join(args.output_dir, kind)
    os.makedirs(model_dir, exist_ok=True)
    train_data, val_data = (
        dataset(args, data, split, source_tokenizer, target_tokenizer, shuffle, kind)
        for split, shuffle in (("train", True), ("val", False))
    )
    epoch_tokens = count_target_tokens(
        data["train"], source_tokenizer, target_tokenizer, max_length(kind)
    )
    meter = ThroughputMeter()
    fit_config = FitConfig(
        epochs=100_000,  # the budget stops training
        batch_size=args.batch_size,
        learning_rate=config["learning_rate"],
        # cosine: over the elapsed fraction of the budget, down to 5% of the peak
        schedule=config.get("schedule", "cosine"),
        warmup_steps=config["warmup_steps"],
        clipnorm=config.get("clipnorm", 1.0),
        budget_minutes=args.budget_minutes,
        restore_best_weights=True,
        average_last_epochs=args.average_last_epochs,
        # Bucketed batches change shape from batch to batch; XLA would recompile for each.
        jit_compile="off",
        seed=args.seed,
        verbose=args.verbose,
    )
    result = fit(
        model,
        train_data,
        model_dir,
        validation_data=val_data,
        config=fit_config,
        loss=MaskedCrossEntropy(config.get("label_smoothing", args.label_smoothing)),
        metrics=[TargetTokens()],
        callbacks=[meter],
        resume=False,
    )
    summary = training_summary(model, config, fit_config, result, meter, epoch_tokens)
    summary["tie_embeddings"] = args.tie_embeddings if kind == "transformer" else "none"
    summary["shared_vocabulary"] = args.shared_vocabulary
    print(
        f"{kind}: {summary['steps']} steps, {summary['epochs']} epochs in "
        f"{summary['train_seconds'] / 60:.1f} min, best val_loss {summary['best_val_loss']} "
        f"(epoch {summary['best_epoch']}), {summary['tokens_per_second']:.0f} target tokens/s",
        flush=True,
    )
    with open(os.path.join(model_dir, TRAINING_FILE), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, default=str)
        f.write("\n")
    return model, summary


def model_config(kind, args):
    """`CONFIGS[kind]` with this run's sizes, `--learning-rate` and `--warmup-steps`."""
    config = {**CONFIGS[kind], "builder": args.builders[kind]}
    for key in ("learning_rate", "warmup_steps"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def new_model(kind, args, dtype_policy, source_tokenizer, target_tokenizer):
    """A new model of `args.builders[kind]` (`CONFIGS[kind]["builder"]` with `--transformer-sizes`
    or `--rnn-sizes`) in `dtype_policy` (set globally: Keras's layers read it)."""
    from keras_attention.models import seq2seq_translator, transformer_translator

    keras.backend.clear_session()
    keras.config.set_dtype_policy(dtype_policy)
    keras.utils.set_random_seed(args.seed)
    sizes = (source_tokenizer.vocabulary_size, target_tokenizer.vocabulary_size)
    if kind == "keras_hub":
        return keras_hub_model(*sizes, args.builders[kind])
    if kind == "transformer":
        return transformer_translator(
            *sizes, **args.builders[kind], tie_embeddings=args.tie_embeddings
        )
    return seq2seq_translator(*sizes, **args.builders[kind])


def max_length(kind):
    """The longest source / target (with `[START]` or `[END]`) a model trains on."""
    return KERAS_HUB_LENGTH if kind == "keras_hub" else MAX_LENGTH


def dataset(args, data, split, source_tokenizer, target_tokenizer, shuffle, kind="transformer"):
    """Bucketed, cached teacher-forcing batches of one split.

    For the keras_hub recipe: batches of `--batch-size` pairs without buckets, every one padded
    to 40 tokens (pairs longer than that dropped), as keras.io's recipe does.
    """
    from pipelines.translation import make_dataset

    sources, targets = data[split]
    recipe = kind == "keras_hub"
    batches = make_dataset(
        list(zip(sources, targets, strict=True)),
        source_tokenizer,
        target_tokenizer,
        batch_size=args.batch_size,
        tokens_per_batch=None if recipe else args.tokens_per_batch,
        source_sequence_length=max_length(kind),
        target_sequence_length=max_length(kind),
        shuffle=len(sources) if shuffle else None,
        seed=args.seed if shuffle else None,
        bucket_boundaries=None if recipe else BUCKET_BOUNDARIES,
        cache=True,
    )
    return batches.map(_pad_to_recipe_length) if recipe else batches


def training_summary(model, config, fit_config, result, meter, epoch_tokens):
    """The numbers of one training run, as `training.json` and the results table hold them."""
    val_losses = result.history.get("val_loss", [])
    throughput = meter.summary()
    return {
        "parameters": int(model.count_params()),
        "config": config,
        "budget_seconds": fit_config.budget_seconds,
        "train_seconds": round(result.train_seconds, 1),
        "epochs": round(throughput["target_tokens"] / epoch_tokens, 2),
        "epoch_target_tokens": epoch_tokens,
        "steps": meter.steps,
        "best_epoch": result.best["epoch"],
        "best_val_loss": round(result.best["value"], 4),
        "val_loss_history": [round(v, 4) for v in val_losses],
        "validation_seconds": round(result.validation_seconds, 1),
        "stop_reason": result.stop_reason,
        "averaged": result.averaged,
        **throughput,
    }


def evaluate_model(kind, model, result, args, data, source_tokenizer, target_tokenizer):
    """BLEU of greedy and beam search on the test set, then the SavedModel exports.

    The beam settings are `--beam-width` / `--length-penalty`, or with `--tune-beam-widths` /
    `--tune-length-penalties` the best of those on validation sentences.
    """
    from keras_attention.models import Translator

    if kind == "keras_hub":
        return evaluate_keras_hub(model, result, args, data, source_tokenizer, target_tokenizer)
    model_dir = os.path.join(args.output_dir, kind)

    def translator(beam_width, length_penalty):
        return Translator(
            model,
            source_tokenizer,
            target_tokenizer,
            source_sequence_length=MAX_LENGTH,
            max_length=MAX_LENGTH,
            beam_width=beam_width,
            length_penalty=length_penalty,
        )

    beam_width, length_penalty = args.beam_width, args.length_penalty
    if args.tune_beam_widths or args.tune_length_penalties:
        result["beam_tuning"] = tune_beam(translator, args, data)
        best = max(result["beam_tuning"], key=lambda row: row["bleu"])
        beam_width, length_penalty = best["beam_width"], best["length_penalty"]
    translators = {
        "greedy": translator(1, args.length_penalty),
        "beam": translator(beam_width, length_penalty),
    }
    translators["greedy"].save(os.path.join(model_dir, "translator"))
    sources, references = data["test"]
    tok_references = data["test_tok"]
    hypotheses = {}
    for decoding, translator in translators.items():
        begin = time.perf_counter()
        hypotheses[decoding] = translate_all(translator, sources, args.decode_batch_size)
        seconds = time.perf_counter() - begin
        path = os.path.join(model_dir, f"{TEST_SPLIT}.{decoding}.{TARGET_LANGUAGE}")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in hypotheses[decoding])
        scores = bleu(hypotheses[decoding], references, tok_references)
        result[decoding] = {
            **scores,
            "beam_width": translator.beam_width,
            "length_penalty": translator.length_penalty,
            "decode_seconds": round(seconds, 1),  # tracing of the first call included
            "sentences": len(sources),
            "translations_file": path,
        }
        print(
            f"{kind} {decoding}: BLEU {scores['bleu']:.2f} (tok refs {scores.get('bleu_tok', '-')})"
            f", {len(sources)} sentences decoded in {seconds:.1f} s",
            flush=True,
        )
    result["beam_at_least_greedy"] = result["beam"]["bleu"] >= result["greedy"]["bleu"]
    result["examples"] = [
        {"source": s, "reference": r, **{d: hypotheses[d][i] for d in DECODINGS}}
        for i, (s, r) in enumerate(zip(sources[:3], references[:3], strict=True))
    ]
    for decoding in args.export:
        for jit_compile in args.export_jit_compile:
            translator = translators[decoding]
            if jit_compile:
                options = {**translator.get_config(), "jit_compile": True}
                translator = Translator(model, preprocessor=translator.preprocessor, **options)
            result[decoding][EXPORT_KEYS[jit_compile]] = export_and_time(
                translator, kind, decoding, args, sources, hypotheses[decoding]
            )
    return result


def tune_beam(translator, args, data):
    """BLEU of every (width, alpha) of the tuning grid on the first validation sentences."""
    sources, references = (side[: args.tune_sentences] for side in data["val"])
    rows = []
    for width in args.tune_beam_widths or [args.beam_width]:
        for alpha in args.tune_length_penalties or [args.length_penalty]:
            hypotheses = translate_all(translator(width, alpha), sources, args.decode_batch_size)
            rows.append(
                {"beam_width": width, "length_penalty": alpha,
                 "bleu": bleu(hypotheses, references)["bleu"], "sentences": len(sources)}
            )  # fmt: skip
            print(f"beam tuning on val: width {width}, alpha {alpha:g}: BLEU {rows[-1]['bleu']}",
                  flush=True)  # fmt: skip
    return rows


# -- the keras_hub recipe -----------------------------------------------------------------------


def keras_hub_model(source_vocabulary_size, target_vocabulary_size, size=None):
    """keras.io's KerasHub translation model at `size` (default `CONFIGS["keras_hub"]`'s) sizes.

    keras_hub `TokenAndPositionEmbedding` (40 positions, id 0 masked), `TransformerEncoder`s,
    `TransformerDecoder`s (causal self-attention, cross-attention over the encoder outputs),
    dropout 0.5 and a dense layer giving float32 logits, as in the keras.io example; inputs
    `{"source", "target_in"}` like our translators, so the same batches feed it.
    """
    import keras_hub

    size = size or CONFIGS["keras_hub"]["builder"]
    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")

    def embed(ids, vocabulary_size, name):
        return keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size, KERAS_HUB_LENGTH, size["hidden_dim"], mask_zero=True, name=name
        )(ids)

    block = {"intermediate_dim": size["intermediate_dim"], "num_heads": size["num_heads"],
             "dropout": size["dropout"]}  # fmt: skip
    memory = embed(source, source_vocabulary_size, "source_embedding")
    for i in range(size["num_layers"]):
        memory = keras_hub.layers.TransformerEncoder(**block, name=f"encoder_{i}")(memory)
    x = embed(target_in, target_vocabulary_size, "target_embedding")
    for i in range(size["num_layers"]):
        x = keras_hub.layers.TransformerDecoder(**block, name=f"decoder_{i}")(x, memory)
    x = keras.layers.Dropout(0.5)(x)
    logits = keras.layers.Dense(target_vocabulary_size, dtype="float32", name="logits")(x)
    return keras.Model({"source": source, "target_in": target_in}, logits, name="keras_hub_recipe")


def _pad_to_recipe_length(inputs, target_out):
    import tensorflow as tf

    def pad(ids):
        return tf.pad(ids, [[0, 0], [0, KERAS_HUB_LENGTH - tf.shape(ids)[1]]])

    return {"source": pad(inputs["source"]), "target_in": pad(inputs["target_in"])}, pad(
        target_out
    )


def keras_hub_translate(model, source_tokenizer, target_tokenizer, sentences, batch_size):
    """keras.io's `decode_sequences`: keras_hub's `GreedySampler`, no cache, 40 tokens at most.

    Every step runs the whole model on the source and the prompt so far (the recipe has no
    decoding cache); the sampler is compiled with `tf.function` here (keras.io calls it
    eagerly: slower, same tokens).
    """
    import keras_hub
    import tensorflow as tf

    from pipelines.text import END_ID, START_ID

    sampler = keras_hub.samplers.GreedySampler()

    @tf.function(reduce_retracing=True)
    def decode(source):
        batch = tf.shape(source)[0]

        def next_token(prompt, cache, index):
            logits = model({"source": source, "target_in": prompt}, training=False)
            return logits[:, index - 1, :], None, cache

        prompt = tf.concat(
            [tf.fill([batch, 1], START_ID), tf.zeros([batch, KERAS_HUB_LENGTH - 1], tf.int32)],
            axis=1,
        )
        return sampler(next_token, prompt, stop_token_ids=[END_ID], index=1)

    translations = []
    for begin in range(0, len(sentences), batch_size):
        ids = source_tokenizer.tokenize(tf.constant(sentences[begin : begin + batch_size]))
        source = ids[:, :KERAS_HUB_LENGTH].to_tensor(shape=[None, KERAS_HUB_LENGTH])
        tokens = decode(tf.cast(source, tf.int32))
        translations += [
            t.decode("utf-8") for t in target_tokenizer.detokenize(tokens[:, 1:]).numpy()
        ]
    return translations


def evaluate_keras_hub(model, result, args, data, source_tokenizer, target_tokenizer):
    """The recipe's BLEU: greedy search only (keras.io decodes greedily), no exports."""
    sources, references = data["test"]
    begin = time.perf_counter()
    hypotheses = keras_hub_translate(
        model, source_tokenizer, target_tokenizer, sources, args.decode_batch_size
    )
    seconds = time.perf_counter() - begin
    path = os.path.join(args.output_dir, "keras_hub", f"{TEST_SPLIT}.greedy.{TARGET_LANGUAGE}")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in hypotheses)
    scores = bleu(hypotheses, references, data["test_tok"])
    result["greedy"] = {**scores, "decode_seconds": round(seconds, 1), "sentences": len(sources),
                        "translations_file": path}  # fmt: skip
    result["beam"] = None  # the recipe has no beam search
    result["beam_at_least_greedy"] = None
    result["examples"] = [
        {"source": s, "reference": r, "greedy": h}
        for s, r, h in zip(sources[:3], references[:3], hypotheses[:3], strict=False)
    ]
    print(f"keras_hub greedy: BLEU {scores['bleu']:.2f}, {len(sources)} sentences decoded in "
          f"{seconds:.1f} s", flush=True)  # fmt: skip
    return result


def count_target_tokens(pairs, source_tokenizer, target_tokenizer, length=MAX_LENGTH):
    """The target tokens (with `[END]`) of one epoch: of the pairs `make_dataset` keeps."""
    sources = source_tokenizer.tokenize(pairs[0]).row_lengths().numpy()
    targets = target_tokenizer.tokenize(pairs[1]).row_lengths().numpy() + 1
    kept = (sources > 0) & (sources <= length) & (targets <= length)
    return int(targets[kept].sum())


def translate_all(translator, sources, batch_size):
    translations = []
    for begin in range(0, len(sources), batch_size):
        translations += translator.translate(sources[begin : begin + batch_size])
    return translations


def bleu(hypotheses, references, tok_references=None):
    """sacrebleu corpus BLEU, lower-cased and 13a-tokenized (see the module docstring)."""
    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    metric = sacrebleu.BLEU(tokenize="13a", lowercase=True)
    score = metric.corpus_score(hypotheses, [references])
    result = {"bleu": round(score.score, 2), "signature": str(metric.get_signature())}
    if tok_references is not None:
        tokenize = Tokenizer13a()
        tokenized = [tokenize(h.lower()) for h in hypotheses]
        result["bleu_tok"] = round(
            sacrebleu.corpus_bleu(tokenized, [tok_references], tokenize="none", force=True).score,
            2,
        )
    return result


def export_and_time(translator, kind, decoding, args, sources, expected):
    """Exports, reloads the SavedModel and times its `serving_default` signature."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops for the reload)

    from keras_attention.export import export_translator

    xla = "_xla" if translator.jit_compile else ""
    begin = time.perf_counter()
    path = export_translator(
        translator,
        os.path.join(args.output_dir, "saved_models"),
        name=f"multi30k_{kind}_{decoding}{xla}",
        version=1,
        overwrite=True,
    )
    export_seconds = time.perf_counter() - begin
    begin = time.perf_counter()
    serve = tf.saved_model.load(path).signatures["serving_default"]
    load_seconds = time.perf_counter() - begin

    def call(texts):
        start = time.perf_counter()
        output = serve(text=tf.constant(texts, tf.string))["translation"].numpy()
        return time.perf_counter() - start, [t.decode("utf-8") for t in output]

    runs = min(args.latency_runs, len(sources))
    batch_size = min(32, len(sources))
    batches = [
        sources[i * batch_size : (i + 1) * batch_size]
        for i in range(max(1, min(args.latency_runs // 3, len(sources) // batch_size)))
    ]
    # Warm-up: every timed input once (XLA compiles once per padded shape; a server would
    # replay warm-up requests at load).
    begin = time.perf_counter()
    for texts in [[sources[i]] for i in range(runs)] + batches:
        call(texts)
    warm_up_seconds = time.perf_counter() - begin
    single = [call([sources[i]]) for i in range(runs)]
    batched = [call(batch) for batch in batches]
    # The reloaded SavedModel must translate as the in-memory translator did.
    served = [t for _, (t,) in single] + batched[0][1]
    wanted = expected[:runs] + expected[:batch_size]
    matches = sum(a == b for a, b in zip(served, wanted, strict=True)) / len(wanted)
    result = {
        "path": path,
        "export_seconds": round(export_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "jit_compile": translator.jit_compile,
        "warm_up_seconds": round(warm_up_seconds, 1),
        "latency_single_ms": round(1000 * statistics.median(t for t, _ in single), 1),
        "latency_single_runs": runs,
        "latency_batch_ms": round(1000 * statistics.median(t for t, _ in batched), 1),
        "latency_batch_size": batch_size,
        "latency_batch_runs": len(batched),
        "matches_in_memory": round(matches, 4),
    }
    print(
        f"{kind} {decoding} SavedModel{' (XLA)' if xla else ''}: "
        f"{result['latency_single_ms']} ms per sentence, "
        f"{result['latency_batch_ms']} ms per batch of {batch_size} (medians), "
        f"matches in-memory {matches:.0%}",
        flush=True,
    )
    return result


# -- training throughput ------------------------------------------------------------------------


def run_throughput(args, data, source_tokenizer, target_tokenizer, results):
    """`--throughput`: target tokens/s of every setting, in turns, with the generic `fit`."""
    runs = {}
    for repeat in range(args.repeats):
        for kind in args.models:
            for policy, pairs, tokens in args.throughput_settings:
                label = _setting_label(policy, pairs, tokens)
                speed = measure_throughput(
                    kind, policy, pairs, tokens, args, data, source_tokenizer, target_tokenizer
                )
                runs.setdefault(kind, {}).setdefault(label, []).append(round(speed, 1))
                print(f"{kind} {label} (run {repeat + 1}): {speed:.0f} target tokens/s", flush=True)
    results["throughput"] = runs
    table = throughput_table(results)
    print("\n" + table)
    write_results(args.output_dir, results, table)
    return results


def measure_throughput(kind, policy, pairs, tokens, args, data, source_tokenizer, target_tokenizer):
    """Trains `--throughput-steps` batches of a new model; its steady target tokens/s."""
    import tempfile

    from keras_attention.training import (
        FitConfig,
        MaskedCrossEntropy,
        TargetTokens,
        ThroughputMeter,
        fit,
    )

    config = model_config(kind, args)
    try:
        model = new_model(kind, args, policy, source_tokenizer, target_tokenizer)
        setting = argparse.Namespace(**{**vars(args), "batch_size": pairs, "tokens_per_batch": tokens})
        train_data = dataset(setting, data, "train", source_tokenizer, target_tokenizer, True, kind)
        meter = ThroughputMeter()
        with tempfile.TemporaryDirectory() as output_dir:
            fit(
                model,
                train_data.take(args.throughput_steps),
                output_dir,
                config=FitConfig(
                    epochs=1,
                    batch_size=pairs,
                    learning_rate=config["learning_rate"],
                    warmup_steps=config["warmup_steps"],
                    clipnorm=1.0,
                    restore_best_weights=False,
                    jit_compile="off",
                    seed=args.seed,
                    verbose=0,
                ),
                loss=MaskedCrossEntropy(args.label_smoothing),
                metrics=[TargetTokens()],
                callbacks=[meter],
                resume=False,
            )
        return meter.summary()["tokens_per_second"]
    finally:
        keras.config.set_dtype_policy("float32")


def throughput_table(results):
    """The Markdown table of `--throughput`: medians per setting, against the first setting."""
    lines = [
        f"# {results['command']}",
        f"# TensorFlow {results['system']['tensorflow']}, Keras {results['system']['keras']}, "
        f"Python {results['system']['python']}, {results['system']['cpu_count']} CPU cores, "
        f"load average {results['system']['load_average_at_start'][0]:.2f} at the start",
        "",
        "| model | dtype policy | batches | target tokens/s (median) | runs | vs the first |",
        "|---|---|---|---:|---|---:|",
    ]
    for kind, settings in results["throughput"].items():
        baseline = None
        for label, speeds in settings.items():
            median = statistics.median(speeds)
            baseline = baseline or median
            policy, batches = label.split(" ", 1)
            lines.append(
                f"| {kind} | {policy} | {batches} | {median:,.0f} "
                f"| {', '.join(f'{s:,.0f}' for s in speeds)} | {median / baseline:.2f}x |"
            )
    lines += [
        "",
        "Target tokens/s: target word pieces (with [END]) per second of training batches "
        "(`ThroughputMeter`: tracing batches left out), each run a new model trained with the "
        "generic `fit` on shuffled, length-bucketed Multi30K batches.",
    ]
    return "\n".join(lines)


def _throughput_setting(parser, item):
    policy, _, batching = item.strip().partition(":")
    try:
        keras.dtype_policies.get(policy)
        if batching.startswith("tokens"):
            pairs, tokens = 64, int(batching[len("tokens") :])
        else:
            pairs, tokens = int(batching), None
        if pairs < 1 or (tokens is not None and tokens < 1):
            raise ValueError(batching)
    except ValueError:
        parser.error(
            "--throughput-settings takes DTYPE_POLICY:PAIRS or DTYPE_POLICY:tokensN items, e.g. "
            f"float32:64,mixed_bfloat16:tokens1536. Received: {item!r}"
        )
    return policy, pairs, tokens


def _setting_label(policy, pairs, tokens):
    return f"{policy} {pairs} pairs" if tokens is None else f"{policy} ~{tokens} tokens"


# -- output -------------------------------------------------------------------------------------


def results_table(results):
    """The Markdown table of the results (the README's)."""
    lines = [
        f"# {results['command']}",
        f"# TensorFlow {results['system']['tensorflow']}, Keras {results['system']['keras']}, "
        f"Python {results['system']['python']}, {results['system']['cpu_count']} CPU cores; "
        f"BLEU: {results['bleu_definition']}",
        "",
        "| model | params | budget min | epochs | target tokens/s | best val loss "
        "| BLEU greedy | BLEU beam | beam >= greedy | decode s greedy / beam "
        "| SavedModel ms, 1 sentence (greedy / beam) | SavedModel ms, batch of 32 (greedy / beam) "
        "| with XLA: 1 sentence | with XLA: batch of 32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind, r in results["models"].items():
        beam = r["beam"]

        def latency(key, export="export", r=r):
            exports = [(r[d] or {}).get(export) for d in DECODINGS]
            return " / ".join(f"{e[key]:.0f}" if e else "-" for e in exports)

        beam_bleu = "-" if beam is None else (
            f"{beam['bleu']:.2f} (width {beam['beam_width']}, alpha {beam['length_penalty']:g})"
        )
        beam_ok = {True: "yes", False: "NO", None: "-"}[r["beam_at_least_greedy"]]
        beam_seconds = "-" if beam is None else f"{beam['decode_seconds']:.0f}"
        lines.append(
            f"| {kind} | {r['parameters'] / 1e6:.1f}M | {r['budget_seconds'] / 60:g} "
            f"| {r['epochs']:.1f} | {r['tokens_per_second']:.0f} | {r['best_val_loss']:.3f} "
            f"| {r['greedy']['bleu']:.2f} | {beam_bleu} | {beam_ok} "
            f"| {r['greedy']['decode_seconds']:.0f} / {beam_seconds} "
            f"| {latency('latency_single_ms')} | {latency('latency_batch_ms')} "
            f"| {latency('latency_single_ms', 'export_xla')} "
            f"| {latency('latency_batch_ms', 'export_xla')} |"
        )
    sentences = {r["greedy"]["sentences"] for r in results["models"].values()}
    lines += [
        "",
        f"Test sentences: {', '.join(map(str, sorted(sentences)))} of {TEST_SPLIT}. "
        "Target tokens/s: training batches only, target word pieces (with [END]) per second, "
        "tracing batches excluded. Decode s: the whole test set in batches, first-call tracing "
        "included. SavedModel latency: medians of serving_default calls after a warm-up "
        "(every timed input once); with XLA: `Translator(jit_compile=True)` exported.",
    ]
    return "\n".join(lines)


def write_results(output_dir, results, table=None):
    with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    if table is not None:
        with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")


def _numbers(parser, flag, value, kind):
    try:
        return [kind(item) for item in value.split(",") if item.strip()]
    except ValueError:
        parser.error(f"{flag} takes comma-separated numbers. Received: {value!r}")


def _sizes(parser, flag, value, keys):
    """`KEY=VALUE,...` as a dict: integers, and a float for `dropout` (in [0, 1))."""
    sizes = {}
    for item in (item.strip() for item in value.split(",")):
        if not item:
            continue
        key, equals, number = item.partition("=")
        key = key.strip()
        try:
            if not equals:
                raise ValueError(f"{item!r} is not KEY=VALUE")
            if key not in keys:
                raise ValueError(f"unknown key {key!r}")
            sizes[key] = float(number) if key == "dropout" else int(number)
            if not (0 <= sizes[key] < 1 if key == "dropout" else sizes[key] >= 1):
                raise ValueError(f"{key} out of range")
        except ValueError as error:
            parser.error(
                f"{flag} takes KEY=VALUE,... with keys {sorted(keys)} (positive integers; "
                f"dropout in [0, 1)). Received: {value!r} ({error})"
            )
    return sizes


def _split_choices(parser, flag, value, choices):
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if item not in choices]
    if not items or bad:
        parser.error(f"{flag} takes a comma-separated subset of {choices}. Received: {value!r}")
    return items


if __name__ == "__main__":
    main()
