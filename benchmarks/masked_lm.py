"""Masked-LM pre-training on WikiText-2: our BERT against keras_hub's, then SST-2 fine-tuning.

In one process:

1. One WordPiece vocabulary (`pipelines.text.build_wordpiece_vocab`, lower-cased, with
   `BERT_RESERVED_TOKENS`) is learned from `wikitext-2/train.txt`, written once under
   `<output-dir>/vocab/` and reused while its options match. With `--task-text` the SST-2
   training phrases (labels dropped; `dev.tsv` never read) join the pre-training text and the
   vocabulary (task-adaptive pre-training); test perplexities and tokens/s are then not
   comparable with runs without it (another vocabulary).
2. Pre-training batches from `pipelines.masked_lm.make_dataset`: the corpus tokenized once and
   packed into full `[CLS] ... [SEP]` sequences of `--sequence-length` tokens (the packing
   efficiency, the fraction of real positions, is reported), 15% of the tokens chosen per
   sequence (80% `[MASK]`, 10% random, 10% kept), masks re-drawn every epoch. Each model gets
   a dataset built afresh after `keras.utils.set_random_seed(--seed)`: the same batches, in the
   same order, with the same masks.
3. Both models (`--models ours,keras_hub`) have the same size: ours is
   `keras_attention.models.bert_masked_lm(...)`; keras_hub's is
   `keras_hub.models.BertMaskedLM(keras_hub.models.BertBackbone(...), preprocessor=None)`. Both
   are trained by the same loop: plain `compile` + `fit`, AdamW (weight decay 0.01, not on
   biases and layer norms, gradient clipping at norm 1), the package's `MaskedCrossEntropy`
   (the mean cross-entropy over the masked tokens) and `MaskedTokenAccuracy`, a linear warmup
   then a cosine decay over the elapsed fraction of the budget (`LearningRateSchedule`), and
   `WallClockBudget`, which stops training after the batch that spends `--budget-minutes`
   (counted from right before `fit`, so tracing counts against it).
4. Throughput: real (non-`[PAD]`) input tokens per second of training time after the first
   step (its tracing and compilation left out). Every step is counted at the mean real tokens
   per batch of an epoch (the batches are full but one; both models see the same ones).
5. Both are scored on `test.txt` with one set of masks (drawn once, `--seed`): masked-token
   accuracy and perplexity, `exp` of the mean cross-entropy over the masked tokens.
6. SST-2: `keras_attention.training.train("classifier", ...)` fine-tunes a `TextClassifier`
   on `sst-2/train.tsv` (`--sst-limit` for smoke runs), (a) from our pre-trained encoder, saved
   as a `MaskedLM` task in `<output-dir>/ours/` (`ClassifierConfig(init_from=...)`), and (b)
   from the same architecture, vocabulary and initial seed without pre-training (an untrained
   `MaskedLM` saved in `<output-dir>/scratch_init/`): same epochs, learning rate, batches. No
   model selection on dev: the weights after the last epoch are scored on `dev.tsv` (872).

Cost on the shared 2-core CPU (measured with short smoke runs, load ~2): the default size
(4 layers, hidden 256: 3.33M parameters plus 257 per vocabulary entry, ~5.4M at 8k pieces)
runs ~3,100 real tokens/s for both models (~1.3 s per batch of 32 x 128), tracing the first step
~12 s; so a 10-minute budget gives ~450 steps, about 0.6 of a WikiText-2 epoch (~23.6k packed
sequences, ~740 batches). SST-2 fine-tuning (67k sentences, batches cut to their longest
sentence) takes several minutes per epoch and run; `--finetune-budget-minutes` caps each run.

    python benchmarks/masked_lm.py --data-dir ../shared/data --output-dir runs/masked_lm
    python benchmarks/masked_lm.py --budget-minutes 0.3 --train-limit 2000 --test-limit 300 \\
        --sst-limit 2000 --finetune-epochs 1 --output-dir runs/masked_lm_smoke   # smoke test

Prints a Markdown table (also `<output-dir>/results.md`) and writes every number to
`<output-dir>/results.json` (and to `--json OUT`).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

warnings.filterwarnings("ignore", message="Your input ran out of data")

MODELS = ("ours", "keras_hub")
MODES = ("packed", "pairs")
FINETUNE_RUNS = ("pretrained", "scratch")
WEIGHT_DECAY = 0.01


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--data-dir", default="../shared/data", help="holds wikitext-2/ and sst-2/")
    add("--output-dir", default="runs/masked_lm")
    add("--json", help="also write all results to this JSON file")
    add("--models", default="ours,keras_hub", help="comma-separated: %(default)s")
    add("--budget-minutes", type=float, default=10.0, help="pre-training budget per model")
    add("--num-layers", type=int, default=4)
    add("--num-heads", type=int, default=4)
    add("--hidden-dim", type=int, default=256)
    add("--intermediate-dim", type=int, default=1024)
    add("--dropout", type=float, default=0.1)
    add("--sequence-length", type=int, default=128)
    add("--vocabulary-size", type=int, default=8000, help="largest WordPiece size")
    add("--batch-size", type=int, default=32)
    add("--learning-rate", type=float, default=5e-4, help="peak pre-training learning rate")
    add("--warmup-steps", type=int, default=200)
    add("--mode", default="packed", choices=MODES, help="packed sequences or sentence pairs")
    add("--mask-rate", type=float, default=0.15)
    add("--whole-word", action="store_true", help="mask every piece of a chosen word")
    add("--task-text", action="store_true",
        help="also pre-train on the SST-2 training phrases, labels dropped (task-adaptive "
             "pre-training; the vocabulary is learned from both; dev.tsv is never read for it)")  # fmt: skip
    add("--jit-compile", default="auto", choices=("auto", "on", "off"), help="both models")
    add("--dtype-policy", default="float32", help="e.g. mixed_bfloat16 (both models)")
    add("--speed-matrix", action="store_true",
        help="first time training steps of both models under float32 / mixed_bfloat16 and XLA "
             "off / on, on the same batches")  # fmt: skip
    add("--speed-steps", type=int, default=15, help="timed steps per setting of --speed-matrix")
    add("--speed-settings", default=",".join(f"{p}:{j}" for p, j in SPEED_SETTINGS),
        help="POLICY:XLA settings of --speed-matrix, comma-separated (default: %(default)s)")
    add("--skip-pretraining", action="store_true", help="only --speed-matrix")
    add("--skip-finetune", action="store_true", help="no SST-2 fine-tuning")
    add("--finetune-epochs", type=int, default=2)
    add("--finetune-learning-rate", type=float, default=1e-4)
    add("--finetune-warmup-steps", type=int, default=200)
    add("--finetune-batch-size", type=int, default=32)
    add("--finetune-budget-minutes", type=float, help="optional budget per fine-tuning run")
    add("--finetune-runs", default="pretrained,scratch",
        help="SST-2 fine-tuning runs, comma-separated subset of %(default)s")  # fmt: skip
    add("--finetune-pooling", default="first", choices=("first", "mean"),
        help="what both classifiers classify: the pooled [CLS] output or the mean token output")
    add("--finetune-only", action="store_true",
        help="no pre-training: fine-tune from the run already in --output-dir (its ours/ and "
             "vocabulary); results go to results_sst2_<pooling>.json / .md beside its own")  # fmt: skip
    add("--train-limit", type=int, help="read the first N lines of train.txt")
    add("--test-limit", type=int, help="read the first N lines of test.txt")
    add("--sst-limit", type=int, help="fine-tune on the first N SST-2 training sentences")
    add("--seed", type=int, default=0)
    add("--verbose", type=int, default=2, choices=(0, 1, 2), help="Model.fit verbosity")
    args = parser.parse_args(argv)
    args.models = _split_choices(parser, "--models", args.models, MODELS)
    args.speed_settings = _speed_settings(parser, args.speed_settings)
    args.finetune_runs = _split_choices(parser, "--finetune-runs", args.finetune_runs,
                                        FINETUNE_RUNS)  # fmt: skip
    positive = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "vocabulary_size",
                "batch_size", "finetune_epochs", "finetune_batch_size")  # fmt: skip
    for name in positive + ("train_limit", "test_limit", "sst_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    for name in ("budget_minutes", "learning_rate", "finetune_learning_rate",
                 "finetune_budget_minutes"):  # fmt: skip
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0. Received: {value}")
    if args.sequence_length < 8:
        parser.error(f"--sequence-length must be >= 8. Received: {args.sequence_length}")
    if args.hidden_dim % args.num_heads:
        parser.error(
            f"--hidden-dim must be divisible by --num-heads. Received: {args.hidden_dim}, "
            f"{args.num_heads}"
        )
    if not 0 <= args.dropout < 1 or not 0 < args.mask_rate < 1:
        parser.error(f"--dropout in [0, 1), --mask-rate in (0, 1). Received: {args.dropout}, "
                     f"{args.mask_rate}")  # fmt: skip
    if args.warmup_steps < 0 or args.finetune_warmup_steps < 0:
        parser.error("--warmup-steps and --finetune-warmup-steps must be >= 0")
    if args.skip_pretraining:
        args.skip_finetune = True
    if args.finetune_only and (args.skip_finetune or args.speed_matrix):
        parser.error("--finetune-only fine-tunes: leave out --skip-finetune / --skip-pretraining "
                     "and --speed-matrix")  # fmt: skip
    if not args.skip_finetune and "ours" not in args.models:
        parser.error("SST-2 fine-tuning starts from ours: add it to --models or --skip-finetune")
    return args


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    os.makedirs(args.output_dir, exist_ok=True)
    if args.finetune_only:
        return finetune_only(args)
    corpus = load_corpus(args)
    vocab_path, vocab_info = build_vocabulary(args, corpus["train"])
    data_info = training_data_info(args, corpus["train"], vocab_path)
    print(
        f"training data: {data_info['sequences']} sequences of {args.sequence_length} tokens, "
        f"packing efficiency {data_info['packing_efficiency']:.2%}",
        flush=True,
    )
    test_batches = masked_test_batches(args, corpus["test"], vocab_path)
    results = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "system": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_hub": _keras_hub_version(),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
        },
        "args": dict(vars(args)),
        "vocabulary": vocab_info,
        "data": {
            **data_info,
            "test_sequences": sum(len(b[1]) for b in test_batches),
            "wikitext_documents": corpus["wikitext_documents"],
            "task_text_documents": len(corpus["train"]) - corpus["wikitext_documents"],
        },
        "pretraining": {},
    }
    if args.speed_matrix:
        results["speed_matrix"] = speed_matrix(args, corpus, vocab_path, data_info)
        print("\n" + speed_table(results["speed_matrix"]), flush=True)
        write_results(args, results)
    if args.skip_pretraining:
        return results
    for kind in args.models:
        print(f"\n=== pre-training {kind} ===", flush=True)
        results["pretraining"][kind] = pretrain(kind, args, corpus, vocab_path, data_info,
                                                test_batches)  # fmt: skip
        write_results(args, results)  # after each model, in case a later step fails
    if len(args.models) == 2:
        ours, hub = (results["pretraining"][kind] for kind in MODELS)
        # None when the budget ended before a timed step (a very small budget on a busy machine).
        ratio = ours["tokens_per_second"] / hub["tokens_per_second"] if hub["tokens_per_second"] else None
        results["tokens_per_second_ratio"] = ratio
    if not args.skip_finetune:
        results["sst2"] = finetune_sst2(args, vocab_path, results["pretraining"]["ours"]["task_dir"])
    table = results_table(results)
    print("\n" + table, flush=True)
    write_results(args, results, table)
    return results


# What `--finetune-only` keeps from the command line; every other option (the model's sizes,
# the sequence length, the vocabulary) is the pre-training run's.
FINETUNE_OPTIONS = ("output_dir", "data_dir", "json", "seed", "verbose", "sst_limit")


def finetune_only(args):
    """SST-2 from the pre-trained run already in `--output-dir` (`--finetune-only`).

    The pre-trained encoder's vocabulary (its saved assets) and the sizes it was
    pre-trained with (`results.json`) are used for both the pre-trained and the
    scratch classifier, whatever the current flags say; nothing of the
    pre-training run is rewritten, and the table's header and pre-training rows
    are that run's.
    """
    task_dir = os.path.join(args.output_dir, "ours")
    previous_path = os.path.join(args.output_dir, "results.json")
    for path in (os.path.join(task_dir, "task.json"), previous_path):
        if not os.path.exists(path):
            raise SystemExit(f"--finetune-only: no pre-training run in {args.output_dir!r} "
                             f"({os.path.basename(path)} missing)")  # fmt: skip
    with open(previous_path, encoding="utf-8") as f:
        results = json.load(f)
    current = vars(args)
    options = dict(results["args"])
    options.update({key: value for key, value in current.items()
                    if key in FINETUNE_OPTIONS or key.startswith("finetune")})  # fmt: skip
    args = argparse.Namespace(**{**current, **options})
    results["args"] = dict(vars(args))  # the run's options, with this command's fine-tuning ones
    vocab_path = os.path.join(task_dir, "assets", "vocabulary.txt")
    if not os.path.isfile(vocab_path):
        raise SystemExit(f"--finetune-only: the pre-trained run has no vocabulary at "
                         f"{vocab_path!r}")  # fmt: skip
    results["finetune_command"] = " ".join([os.path.basename(sys.executable), *sys.argv])
    results["sst2"] = finetune_sst2(args, vocab_path, task_dir)
    table = results_table(results)
    print("\n" + table, flush=True)
    write_results(args, results, table, name=f"results_sst2_{args.finetune_pooling}")
    return results


# -- data and vocabulary ------------------------------------------------------------------------


def load_corpus(args):
    """`{"train": documents, "test": documents}` of WikiText-2 (`read_corpus`), limited.

    With `--task-text` the training documents also hold the SST-2 training
    phrases (`task_text_documents`); the test documents stay WikiText-2's.
    """
    from pipelines.masked_lm import read_corpus
    from pipelines.text import read_lines

    corpus = {}
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        path = os.path.join(args.data_dir, "wikitext-2", f"{split}.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No WikiText-2 {split} file: expected '{path}' (see ../shared/data/README.md). "
                f"Received: --data-dir {args.data_dir!r}"
            )
        corpus[split] = read_corpus(read_lines(path, False)[:limit], progress=False)
    corpus["wikitext_documents"] = len(corpus["train"])
    if getattr(args, "task_text", False):  # benchmarks/generation.py reads WikiText-2 only
        corpus["train"] = corpus["train"] + task_text_documents(args)
    return corpus


def task_text_documents(args):
    """The SST-2 training phrases as pre-training documents: one each, labels dropped.

    Exact repeats are kept once (file order). SST-2's training set is the
    phrases of ~6.9k parsed sentences, so most texts are parts of others: the
    fine-tuning inputs themselves, which is what task-adaptive pre-training
    (Gururangan et al. 2020) and self-pre-training on the downstream data
    (Krishna et al. 2023) train on. Limited by `--sst-limit` like the
    fine-tuning set; `dev.tsv` is not read.
    """
    texts, _ = read_sst2(args, splits=("train",))["train"]
    return [[text] for text in dict.fromkeys(text for text in texts if text.strip())]


def build_vocabulary(args, documents):
    """Learns (or reuses) the WordPiece vocabulary of the training text; returns its path, info."""
    from pipelines.masked_lm import BERT_RESERVED_TOKENS
    from pipelines.text import build_wordpiece_vocab, load_tokenizer

    vocab_dir = os.path.join(args.output_dir, "vocab")
    os.makedirs(vocab_dir, exist_ok=True)
    path = os.path.join(vocab_dir, "vocabulary.txt")
    meta_path = os.path.join(vocab_dir, "options.json")
    options = {
        "vocabulary_size": args.vocabulary_size,
        "lowercase": True,
        "train_file": os.path.abspath(os.path.join(args.data_dir, "wikitext-2", "train.txt")),
        "train_limit": args.train_limit,
        "task_text": args.task_text,
        "sst_limit": args.sst_limit if args.task_text else None,
    }
    reuse = os.path.isfile(path) and os.path.isfile(meta_path)
    if reuse:
        with open(meta_path, encoding="utf-8") as f:
            reuse = json.load(f) == options
    start = time.perf_counter()
    if not reuse:
        print("learning the WordPiece vocabulary ...", flush=True)
        paragraphs = [paragraph for document in documents for paragraph in document]
        build_wordpiece_vocab(
            paragraphs, path, args.vocabulary_size, lowercase=True,
            extra_reserved_tokens=BERT_RESERVED_TOKENS, progress=False,
        )  # fmt: skip
        with open(meta_path, "w", encoding="utf-8") as f:
            json.dump(options, f, indent=2)
    size = load_tokenizer(path).vocabulary_size
    print(f"vocabulary: {size} word pieces", flush=True)
    return path, {"path": path, "size": size, "reused": reuse,
                  "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def training_data_info(args, documents, vocab_path):
    """Sequences, real tokens, packing efficiency and steps per epoch of the training batches."""
    from pipelines.masked_lm import MaskedLMPreprocessor, pack_examples

    preprocessor = MaskedLMPreprocessor(vocab_path, args.sequence_length)
    packed = pack_examples(None, preprocessor, mode=args.mode, documents=documents, progress=False)
    sequences = len(packed["token_ids"])
    steps = math.ceil(sequences / args.batch_size)
    real = int(packed["padding_mask"].sum())
    return {
        "sequences": sequences,
        "real_tokens": real,
        # The fraction of real positions: `pipelines.masked_lm.packing_efficiency`'s definition.
        "packing_efficiency": float(packed["padding_mask"].mean()),
        "steps_per_epoch": steps,
        "real_tokens_per_step": real / steps,
    }


def masked_test_batches(args, documents, vocab_path):
    """The test batches with their masks, drawn once (NumPy): every model is scored on them."""
    from pipelines.masked_lm import make_dataset

    dataset = make_dataset(
        None, vocab_path, args.sequence_length, batch_size=args.batch_size, mode=args.mode,
        mask_rate=args.mask_rate, whole_word=args.whole_word, seed=args.seed, shuffle=False,
        documents=documents, progress=False,
    )  # fmt: skip
    return [
        ({key: value.numpy() for key, value in inputs.items()}, labels.numpy(), weights.numpy())
        for inputs, labels, weights in dataset
    ]


# -- pre-training -------------------------------------------------------------------------------


class StepClock(keras.callbacks.Callback):
    """Counts the training steps and times those after the first (its tracing left out).

    Also each step's own time (`on_train_batch_begin` to `_end`; the step has
    run when the call returns): `median_step_seconds` of the steps after the
    first resists the stalls of a shared machine better than the total.
    """

    def __init__(self):
        super().__init__()
        self.steps = 0
        self.first_step_seconds = None
        self._start = self._after_first = self._batch_begin = None
        self.timed_seconds = 0.0
        self.step_seconds = []

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == 1:
            float((logs or {}).get("loss", 0.0))  # waits for the first step to finish
            self._after_first = time.perf_counter()
            self.first_step_seconds = self._after_first - self._start
        else:
            self.step_seconds.append(time.perf_counter() - self._batch_begin)

    def on_train_end(self, logs=None):
        if self._after_first is not None:
            self.timed_seconds = time.perf_counter() - self._after_first

    @property
    def median_step_seconds(self):
        return float(np.median(self.step_seconds)) if self.step_seconds else 0.0


def build_model(kind, args, vocabulary_size):
    """Our `BertMaskedLM` or keras_hub's, of the same size."""
    options = {
        "num_layers": args.num_layers,
        "num_heads": args.num_heads,
        "hidden_dim": args.hidden_dim,
        "intermediate_dim": args.intermediate_dim,
        "dropout": args.dropout,
        "max_sequence_length": args.sequence_length,
    }
    if kind == "ours":
        from keras_attention.models import bert_masked_lm

        return bert_masked_lm(vocabulary_size, **options)
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=vocabulary_size, **options)
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def compile_model(model, args):
    """The same optimizer, loss and metric for both models."""
    from keras_attention.tasks import MaskedCrossEntropy, MaskedTokenAccuracy

    optimizer = keras.optimizers.AdamW(args.learning_rate, weight_decay=WEIGHT_DECAY, clipnorm=1.0)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=MaskedCrossEntropy(),
        metrics=[MaskedTokenAccuracy()],
        weighted_metrics=None,  # keras_hub's MaskedLM would add its own accuracy
        jit_compile={"auto": "auto", "on": True, "off": False}[args.jit_compile],
    )


def pretrain(kind, args, corpus, vocab_path, data_info, test_batches):
    """Trains one model under the budget, scores it on the test masks; returns its numbers."""
    from keras_attention.training import LearningRateSchedule, WallClockBudget
    from pipelines.masked_lm import MaskedLMPreprocessor, make_dataset

    keras.backend.clear_session()
    keras.config.set_dtype_policy(args.dtype_policy)
    keras.utils.set_random_seed(args.seed)
    preprocessor = MaskedLMPreprocessor(vocab_path, args.sequence_length)
    dataset = make_dataset(
        None, preprocessor, batch_size=args.batch_size, mode=args.mode, mask_rate=args.mask_rate,
        whole_word=args.whole_word, seed=args.seed, shuffle=True, documents=corpus["train"],
        progress=False,
    )  # fmt: skip
    model = build_model(kind, args, preprocessor.vocabulary_size)
    compile_model(model, args)
    budget_seconds = 60.0 * args.budget_minutes
    clock = StepClock()
    start = time.perf_counter()
    budget = WallClockBudget(start, budget_seconds)
    schedule = LearningRateSchedule(args.learning_rate, args.warmup_steps, "cosine",
                                    budget_seconds=budget_seconds, start=start)  # fmt: skip
    history = model.fit(dataset, epochs=1_000_000, callbacks=[schedule, budget, clock],
                        verbose=args.verbose)  # fmt: skip
    train_seconds = time.perf_counter() - start
    timed_tokens = (clock.steps - 1) * data_info["real_tokens_per_step"]
    result = {
        "parameters": int(model.count_params()),
        "jit_compile": bool(model.jit_compile),  # "auto": off on a CPU-only machine
        "steps": clock.steps,
        "epochs": round(clock.steps / data_info["steps_per_epoch"], 2),
        "budget_seconds": budget_seconds,
        "train_seconds": round(train_seconds, 1),
        "first_step_seconds": round(clock.first_step_seconds or 0.0, 1),
        "timed_seconds": round(clock.timed_seconds, 1),
        "tokens_per_second": timed_tokens / clock.timed_seconds if clock.timed_seconds else 0.0,
        "median_step_seconds": clock.median_step_seconds,
        "median_tokens_per_second": (data_info["real_tokens_per_step"] / clock.median_step_seconds
                                     if clock.median_step_seconds else 0.0),  # fmt: skip
        "final_train_loss": float(history.history["loss"][-1]),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
    }
    begin = time.perf_counter()
    result["test"] = evaluate_masked_lm(model, test_batches)
    result["test"]["seconds"] = round(time.perf_counter() - begin, 1)
    if kind == "ours":
        result["task_dir"] = save_masked_lm(model, preprocessor, os.path.join(args.output_dir, kind))
    print(
        f"{kind}: {result['steps']} steps in {train_seconds / 60:.1f} min, "
        f"{result['tokens_per_second']:.0f} tokens/s; test masked-token accuracy "
        f"{result['test']['accuracy']:.2%}, perplexity {result['test']['perplexity']:.2f}",
        flush=True,
    )
    return result


SPEED_SETTINGS = (("float32", "off"), ("float32", "on"), ("mixed_bfloat16", "off"),
                  ("mixed_bfloat16", "on"))  # fmt: skip


def speed_matrix(args, corpus, vocab_path, data_info):
    """Seconds per training step of each model under each (dtype policy, XLA) setting.

    The same few real batches (taken once, held in memory) for every model
    and setting; two steps warm up (tracing, XLA compilation), then
    `--speed-steps` are timed. Returns a list of dicts.
    """
    import tensorflow as tf

    from pipelines.masked_lm import MaskedLMPreprocessor, make_dataset

    preprocessor = MaskedLMPreprocessor(vocab_path, args.sequence_length)
    batches = list(make_dataset(
        None, preprocessor, batch_size=args.batch_size, mode=args.mode, seed=args.seed,
        documents=corpus["train"], progress=False,
    ).take(4))  # fmt: skip
    dataset = tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *xs: tf.stack(xs), *batches)
    ).repeat()
    rows = []
    for policy, jit in args.speed_settings:
        for kind in args.models:
            keras.backend.clear_session()
            keras.config.set_dtype_policy(policy)
            keras.utils.set_random_seed(args.seed)
            model = build_model(kind, args, preprocessor.vocabulary_size)
            compile_model(model, argparse.Namespace(**{**vars(args), "jit_compile": jit}))
            model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # tracing, compilation
            clock = StepClock()  # the median step: a stall of the machine moves it little
            history = model.fit(dataset, steps_per_epoch=args.speed_steps + 1, epochs=1,
                                verbose=0, callbacks=[clock])  # fmt: skip
            seconds = clock.median_step_seconds
            rows.append({"model": kind, "dtype_policy": policy, "jit_compile": jit,
                         "seconds_per_step": seconds, "finite": bool(np.isfinite(
                             history.history["loss"][-1])),
                         "tokens_per_second": data_info["real_tokens_per_step"] / seconds})  # fmt: skip
            print(f"{kind:9s} {policy:15s} XLA {jit:3s}: {seconds * 1000:.0f} ms/step", flush=True)
    keras.config.set_dtype_policy(args.dtype_policy)
    return rows


def speed_table(rows):
    """The Markdown table of `speed_matrix`: tokens/s, and ours over keras_hub per setting."""
    lines = ["| dtype policy | XLA | model | ms/step | tokens/s | ours / keras_hub |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    by_setting = {}
    for row in rows:
        by_setting.setdefault((row["dtype_policy"], row["jit_compile"]), {})[row["model"]] = row
    for (policy, jit), models in by_setting.items():
        for kind, row in models.items():
            ratio = ""
            if kind == "ours" and "keras_hub" in models:
                ratio = f"{row['tokens_per_second'] / models['keras_hub']['tokens_per_second']:.2f}x"
            lines.append(f"| {policy} | {jit} | {kind} | {row['seconds_per_step'] * 1000:.0f} | "
                         f"{row['tokens_per_second']:,.0f} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def save_masked_lm(model, preprocessor, directory):
    """Saves our `BertMaskedLM` as a `MaskedLM` task (what `ClassifierConfig.init_from` reads)."""
    from keras_attention.tasks import MaskedLM

    return MaskedLM(model, preprocessor).save(directory)


# -- scores -------------------------------------------------------------------------------------


def masked_token_totals(logits, labels, weights):
    """`(cross-entropy sum, correct, count)` over the weighted positions of one batch.

    Args:
        logits: float `(batch_size, num_positions, vocabulary_size)`.
        labels: int `(batch_size, num_positions)`, the original token ids.
        weights: float `(batch_size, num_positions)`, `1` at a masked position, `0` at filler.
    """
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    labels = np.asarray(labels, np.int64)
    weights = np.asarray(weights, np.float64)
    picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    correct = (np.argmax(logits, axis=-1) == labels) * weights
    return float(-(picked * weights).sum()), float(correct.sum()), float(weights.sum())


def scores_from_totals(cross_entropy, correct, count):
    """Masked-token accuracy, mean cross-entropy (nats) and perplexity from summed totals."""
    mean = cross_entropy / max(count, 1.0)
    return {
        "masked_tokens": int(count),
        "accuracy": correct / max(count, 1.0),
        "loss": mean,
        "perplexity": math.exp(min(mean, 700.0)),
    }


def evaluate_masked_lm(model, batches):
    """Scores a masked LM on prepared `(inputs, labels, weights)` NumPy batches."""
    totals = np.zeros(3)
    for inputs, labels, weights in batches:
        logits = model.predict_on_batch(inputs)
        totals += masked_token_totals(keras.ops.convert_to_numpy(logits), labels, weights)
    return scores_from_totals(*totals)


# -- SST-2 fine-tuning --------------------------------------------------------------------------


def read_sst2(args, splits=("train", "dev")):
    """`{"train": (texts, labels), "dev": (texts, labels)}` (training texts limited)."""
    from pipelines.classification import read_labeled_texts

    data = {}
    for split in splits:
        limit = args.sst_limit if split == "train" else None
        path = os.path.join(args.data_dir, "sst-2", f"{split}.tsv")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No SST-2 {split} file: expected '{path}'. Received: --data-dir {args.data_dir!r}"
            )
        texts, labels = read_labeled_texts(path)
        data[split] = ([str(t) for t in texts[:limit]], [str(label) for label in labels[:limit]])
    return data


def finetune_sst2(args, vocab_path, pretrained_dir):
    """Fine-tunes a classifier from our pre-trained encoder and from scratch; dev accuracy."""
    from keras_attention.tasks import ClassifierConfig
    from keras_attention.training import FitConfig, train
    from pipelines.masked_lm import MaskedLMPreprocessor

    data = read_sst2(args)
    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    preprocessor = MaskedLMPreprocessor(vocab_path, args.sequence_length)
    scratch_dir = None
    if "scratch" in args.finetune_runs:
        untrained = build_model("ours", args, preprocessor.vocabulary_size)
        scratch_dir = save_masked_lm(untrained, preprocessor,
                                     os.path.join(args.output_dir, "scratch_init"))  # fmt: skip
    fit_config = FitConfig(
        epochs=args.finetune_epochs,
        batch_size=args.finetune_batch_size,
        learning_rate=args.finetune_learning_rate,
        schedule="cosine",
        warmup_steps=args.finetune_warmup_steps,
        clipnorm=1.0,
        budget_minutes=args.finetune_budget_minutes,
        restore_best_weights=False,  # no model selection on dev
        jit_compile="off",  # every batch is cut to its longest sentence: many shapes
        seed=args.seed,
        verbose=args.verbose,
    )
    results = {"train_sentences": len(data["train"][0]), "dev_sentences": len(data["dev"][0])}
    starts = {"pretrained": pretrained_dir, "scratch": scratch_dir}
    for name, init_from in ((name, starts[name]) for name in args.finetune_runs):
        print(f"\n=== SST-2 fine-tuning, {name} ===", flush=True)
        keras.backend.clear_session()
        config = ClassifierConfig(init_from=init_from, sequence_length=args.sequence_length,
                                  pooling=args.finetune_pooling)  # fmt: skip
        suffix = "" if args.finetune_pooling == "first" else f"_{args.finetune_pooling}"
        begin = time.perf_counter()
        run = train("classifier", data["train"], os.path.join(args.output_dir, f"sst2_{name}{suffix}"),
                    config=config, fit_config=fit_config, resume=False, overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - begin
        scores = run.task.evaluate(data["dev"])
        results[name] = {
            "init_from": init_from,
            "dev_accuracy": scores["accuracy"],
            "dev_macro_f1": scores["macro_f1"],
            "epochs": len(run.epochs),
            "stop_reason": run.stop_reason,
            "train_seconds": round(seconds, 1),
            "run_dir": run.output_dir,
        }
        print(f"SST-2 {name}: dev accuracy {scores['accuracy']:.2%}", flush=True)
    if len(args.finetune_runs) == 2:
        results["gain"] = (results["pretrained"]["dev_accuracy"]
                           - results["scratch"]["dev_accuracy"])  # fmt: skip
    return results


# -- output -------------------------------------------------------------------------------------


def results_table(results):
    """The Markdown table: pre-training side by side, then SST-2."""
    system = results["system"]
    data = results["data"]
    models = results["pretraining"]
    hub = models.get("keras_hub")
    lines = [
        f"# {results['command']}",
        f"# TensorFlow {system['tensorflow']}, Keras {system['keras']}, keras_hub "
        f"{system['keras_hub']}, {system['cpu_count']} CPU cores; both models: dtype policy "
        f"{results['args']['dtype_policy']}, jit_compile {results['args']['jit_compile']}",
        "",
        f"Training data: {data['sequences']} sequences, {data['real_tokens']} real tokens, "
        f"packing efficiency {data['packing_efficiency']:.2%}; test: {data['test_sequences']} "
        "sequences, the same masks for every model."
        + (f" Pre-training text: WikiText-2 and {data['task_text_documents']} distinct SST-2 "
           "training phrases (--task-text)." if data.get("task_text_documents") else ""),
        "",
        "| pre-training | params | steps | epochs | tokens/s | vs keras_hub | median-step "
        "tokens/s | vs keras_hub | test masked-token accuracy | test perplexity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in models.items():
        # keras_hub's rate is 0 when its budget ended before a timed step (a tiny budget, a
        # busy machine): no ratio then.
        hub_rate = hub["tokens_per_second"] if hub else 0.0
        ratio = f"{r['tokens_per_second'] / hub_rate:.2f}x" if hub_rate else "-"
        median = r.get("median_tokens_per_second", 0.0)
        hub_median = hub.get("median_tokens_per_second", 0.0) if hub else 0.0
        median_ratio = f"{median / hub_median:.2f}x" if hub_median else "-"
        lines.append(
            f"| {kind} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['epochs']:.2f} "
            f"| {r['tokens_per_second']:,.0f} | {ratio} | {median:,.0f} | {median_ratio} "
            f"| {r['test']['accuracy']:.2%} | {r['test']['perplexity']:.2f} |"
        )
    lines += ["", "Tokens/s: real (non-[PAD]) input tokens per second of training after the "
              "first step (tracing left out); the budget counts from before `fit`. Median-step "
              "tokens/s: the same tokens per step over the median step time (a stall of the "
              "shared machine moves it little)."]  # fmt: skip
    if results.get("speed_matrix"):
        lines += ["", speed_table(results["speed_matrix"])]
    sst = results.get("sst2")
    if sst:
        pooling = results["args"].get("finetune_pooling", "first")
        lines += [
            "",
            f"| SST-2 ({sst['train_sentences']} training sentences, pooling {pooling}) | dev accuracy "
            f"({sst['dev_sentences']}) | epochs | minutes |",
            "|---|---:|---:|---:|",
        ]
        for name in (name for name in FINETUNE_RUNS if name in sst):
            r = sst[name]
            lines.append(f"| {name} | {r['dev_accuracy']:.2%} | {r['epochs']} "
                         f"| {r['train_seconds'] / 60:.1f} |")  # fmt: skip
        if "gain" in sst:
            lines.append(f"| gain from pre-training | {100 * sst['gain']:+.2f} points | | |")
    return "\n".join(lines)


def write_results(args, results, table=None, name="results"):
    paths = [os.path.join(args.output_dir, f"{name}.json")] + ([args.json] if args.json else [])
    for path in paths:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
    if table is not None:
        with open(os.path.join(args.output_dir, f"{name}.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")


def _keras_hub_version():
    try:
        import keras_hub
    except ImportError:
        return None
    return keras_hub.__version__


def _speed_settings(parser, value):
    """`--speed-settings` as `[(policy, "off"|"on"), ...]`; `parser.error` names a bad one."""
    settings = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        policy, _, jit = item.rpartition(":")
        if jit not in ("off", "on") or policy not in ("float32", "mixed_bfloat16",
                                                      "mixed_float16", "bfloat16"):  # fmt: skip
            parser.error(f"--speed-settings: {item!r} is not POLICY:off|on with POLICY one of "
                         "float32, mixed_bfloat16, mixed_float16, bfloat16")  # fmt: skip
        settings.append((policy, jit))
    if not settings:
        parser.error("--speed-settings needs at least one POLICY:off|on")
    return settings


def _split_choices(parser, flag, value, choices):
    items = [item.strip() for item in value.split(",") if item.strip()]
    bad = [item for item in items if item not in choices]
    if not items or bad or len(set(items)) != len(items):
        parser.error(f"{flag} takes a comma-separated subset of {choices}. Received: {value!r}")
    return items


if __name__ == "__main__":
    main()
