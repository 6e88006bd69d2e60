"""Text generation with our GPT against keras_hub's GPT2CausalLM: speed, exports, perplexity.

In one process, three sections (`--speed`, `--export`, `--perplexity`; all when none is given):

1. Speed. A keras_hub `GPT2CausalLM` (`GPT2Backbone` of `--num-layers` / `--hidden-dim` /
   `--num-heads` / `--intermediate-dim`, `--vocabulary-size` ids, randomly initialized,
   `preprocessor=None`) and ours converted from it (`keras_attention.models.convert_keras_hub`:
   the same weights) continue the same seeded random prompts greedily by `--new-tokens`
   tokens: `--prompt-length` tokens at batch size 1, ragged lengths from `--min-prompt-length`
   to `--prompt-length` at larger batch sizes (`--batch-sizes`). Both are XLA-compiled:
   keras_hub's with `hub.compile(sampler="greedy", jit_compile=True)` (its default,
   `jit_compile="auto"`, turns XLA off on a CPU-only machine) and
   `hub.generate({"token_ids", "padding_mask"}, stop_token_ids=None)` on a buffer as wide as
   the output (with `preprocessor=None` that width is the generation length: every row runs to
   `prompt_length + new_tokens`); ours with
   `keras_attention.generation.generate(model, token_ids, padding_mask,
   max_length=prompt_length + new_tokens, sampler="greedy", jit_compile=True)`. The first call
   of each (tracing, XLA) is timed on its own; then the median of `--repeats` calls, the two
   models taking turns. Tokens/s counts every generated token (a shorter prompt generates
   more). The generated tokens of both are compared one for one ("identical: yes/no"); where
   they differ, each model's top-two logit gap at the first difference goes to the JSON.
2. Export. Ours inside a `keras_attention.tasks.CausalLM` with a generated vocabulary of
   exactly `--vocabulary-size` tokens (the reserved ones, then `w0`, `w1`, ...) is exported
   (`keras_attention.export.export_task`), loaded back with `tf.saved_model.load`, and its
   `generate` signature (greedy: `temperature=0`, `max_new_tokens=--new-tokens`; the task stops
   at `[END]` and never emits `[PAD]`, `[START]`, `[MASK]`) continues prompts written with those
   words (its loop runs in the signature's graph, without XLA). Then the LiteRT loop
   (`keras_attention.export.litert_causal_lm`, if installed): `convert_causal_lm_tflite` in
   float32 and with int8 weights (`quantization="dynamic"`), `TFLiteCausalLM.generate` row by
   row to `prompt_length + new_tokens`. Each is compared with
   the in-memory generation of the same tokens, timed the same way, and its file size given.
3. Perplexity. One WordPiece vocabulary (`CausalLM.build_preprocessor`: lower-cased,
   `--vocabulary-size` at most) is learned from `wikitext-2/train.txt`; both models of the same
   size (ours `gpt_causal_lm`, as the task builds it; keras_hub's `GPT2CausalLM`) train on the
   same packed windows (`pipelines.causal_lm.make_dataset`, shuffled with `--seed`, rebuilt for
   each model so the order is the same), with the same loop as `benchmarks/masked_lm.py`
   (`compile_model`: AdamW, weight decay 0.01, clipnorm 1, the tasks' masked cross-entropy;
   `--warmup-steps` then a cosine decay over the budget; `WallClockBudget` stops after the batch
   that spends `--budget-minutes`, counted from right before `fit`), then are scored on
   `test.txt`: perplexity per word piece (`exp` of the mean NLL of the predicted tokens) and per
   word (`exp(total NLL / words)`, words as `pipelines.causal_lm.count_words` counts them).

    python benchmarks/generation.py                              # everything, default sizes
    python benchmarks/generation.py --speed --repeats 9
    python benchmarks/generation.py --perplexity --budget-minutes 10
    python benchmarks/generation.py --quick --speed --export     # smoke run: tiny, seconds

Prints Markdown tables (also `<output-dir>/results.md`) and writes every number to
`<output-dir>/results.json` (and to `--json OUT`).
"""

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from masked_lm import (  # noqa: E402
    StepClock,
    _keras_hub_version,
    compile_model,
    load_corpus,
    masked_token_totals,
    scores_from_totals,
    write_results,
)

MODELS = ("ours", "keras_hub")
SECTIONS = ("speed", "export", "perplexity")
FIRST_WORD_ID = 5  # after [PAD] [UNK] [START] [END] [MASK]
QUANTIZATIONS = ((None, "float32"), ("dynamic", "int8 (dynamic)"))
# --quick: tiny sizes, a few tokens, seconds (only the options left at their defaults).
QUICK = {
    "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64,
    "vocabulary_size": 300, "new_tokens": 8, "prompt_length": 6, "min_prompt_length": 3,
    "batch_sizes": "1,3", "repeats": 2, "budget_minutes": 0.1, "sequence_length": 32,
    "batch_size": 8, "warmup_steps": 2, "train_limit": 300, "test_limit": 40,
}  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    for section in SECTIONS:
        add(f"--{section}", action="store_true", help=f"run the {section} section (default: all)")
    add("--quick", action="store_true", help="tiny sizes and few tokens: a smoke run")
    add("--json", help="also write all results to this JSON file")
    add("--output-dir", default="runs/generation")
    add("--data-dir", default="../shared/data", help="holds wikitext-2/")
    add("--num-layers", type=int, default=4)
    add("--num-heads", type=int, default=4)
    add("--hidden-dim", type=int, default=256)
    add("--intermediate-dim", type=int, default=1024)
    add("--vocabulary-size", type=int, default=5000, help="ids (WordPiece: the largest size)")
    add("--batch-sizes", default="1,8", help="generation batch sizes, comma-separated")
    add("--prompt-length", type=int, default=16, help="the longest prompt (batch size 1: all)")
    add("--min-prompt-length", type=int, default=8, help="the shortest prompt of a larger batch")
    add("--new-tokens", type=int, default=128, help="generated after the longest prompt")
    add("--repeats", type=int, default=5, help="timed calls per model (the median is given)")
    add("--budget-minutes", type=float, default=5.0, help="training budget per model")
    add("--sequence-length", type=int, default=128, help="training windows")
    add("--batch-size", type=int, default=32, help="training batch size")
    add("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    add("--warmup-steps", type=int, default=50)
    add("--dropout", type=float, default=0.1, help="in training (generation: none)")
    add("--jit-compile", default="auto", choices=("auto", "on", "off"), help="training, both")
    add("--train-limit", type=int, help="read the first N lines of train.txt")
    add("--test-limit", type=int, help="read the first N lines of test.txt")
    add("--seed", type=int, default=0)
    add("--verbose", type=int, default=2, choices=(0, 1, 2), help="Model.fit verbosity")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.sections = [s for s in SECTIONS if getattr(args, s)] or list(SECTIONS)
    _check_args(parser, args)
    return args


def _check_args(parser, args):
    try:
        args.batch_sizes = sorted({int(b) for b in args.batch_sizes.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--batch-sizes takes comma-separated ints. Received: {args.batch_sizes!r}")
    positive = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "new_tokens",
                "repeats", "batch_size", "min_prompt_length", "train_limit", "test_limit")  # fmt: skip
    for name in positive:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. Received: {value}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes must be positive ints. Received: {args.batch_sizes}")
    if not args.min_prompt_length <= args.prompt_length:
        parser.error(f"--min-prompt-length must be <= --prompt-length. Received: "
                     f"{args.min_prompt_length}, {args.prompt_length}")  # fmt: skip
    if args.vocabulary_size <= FIRST_WORD_ID:
        parser.error(f"--vocabulary-size must be > {FIRST_WORD_ID}. Received: "
                     f"{args.vocabulary_size}")  # fmt: skip
    if args.hidden_dim % args.num_heads:
        parser.error(f"--hidden-dim must be divisible by --num-heads. Received: "
                     f"{args.hidden_dim}, {args.num_heads}")  # fmt: skip
    for name in ("budget_minutes", "learning_rate"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0. Received: "
                         f"{getattr(args, name)}")  # fmt: skip
    if args.sequence_length < 8 or args.warmup_steps < 0 or not 0 <= args.dropout < 1:
        parser.error("--sequence-length must be >= 8, --warmup-steps >= 0, --dropout in [0, 1)")


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
               "system": system_info(), "args": dict(vars(args))}  # fmt: skip
    if "speed" in args.sections or "export" in args.sections:
        hub, ours = build_peers(args)
        if "speed" in args.sections:
            print("\n=== generation speed ===", flush=True)
            results["speed"] = [speed_case(args, hub, ours, b) for b in args.batch_sizes]
            write_results(args, results)
        if "export" in args.sections:
            print("\n=== exports ===", flush=True)
            with tempfile.TemporaryDirectory(prefix="generation_bench_") as tmp:
                results["export"] = export_section(args, ours, tmp)
            write_results(args, results)
    if "perplexity" in args.sections:
        print("\n=== perplexity ===", flush=True)
        results["perplexity"] = perplexity_section(args)
    table = results_table(results)
    print("\n" + table, flush=True)
    write_results(args, results, table)
    return results


def system_info():
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": _keras_hub_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
    }


# -- models and prompts -------------------------------------------------------------------------


def hub_causal_lm(args, max_sequence_length, dropout):
    """keras_hub's `GPT2CausalLM` of the benchmark's size, without a preprocessor."""
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=args.vocabulary_size, num_layers=args.num_layers,
        num_heads=args.num_heads, hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim, dropout=dropout,
        max_sequence_length=max_sequence_length,
    )  # fmt: skip
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def build_peers(args):
    """keras_hub's model (random init, greedy, XLA) and ours with its weights."""
    from keras_attention.models import convert_keras_hub

    keras.utils.set_random_seed(args.seed)
    hub = hub_causal_lm(args, max_length_of(args), dropout=0.0)
    hub.compile(sampler="greedy", jit_compile=True)
    return hub, convert_keras_hub(hub)


def max_length_of(args):
    """The generation length: the longest prompt and the new tokens."""
    return args.prompt_length + args.new_tokens


def random_prompts(args, batch_size, rng):
    """Left-aligned random prompts: int32 ids and bool mask `(batch_size, prompt_length)`.

    Every prompt holds `prompt_length` tokens at batch size 1; a larger batch draws lengths
    in `[min_prompt_length, prompt_length]`, the first row the longest (the width is fixed),
    the last the shortest.
    """
    lengths = rng.integers(args.min_prompt_length, args.prompt_length + 1, batch_size)
    lengths[-1] = args.min_prompt_length
    lengths[0] = args.prompt_length
    mask = np.arange(args.prompt_length)[None, :] < lengths[:, None]
    token_ids = rng.integers(FIRST_WORD_ID, args.vocabulary_size, mask.shape)
    return np.where(mask, token_ids, 0).astype(np.int32), mask


def compare_generated(ours, theirs, mask):
    """Compares the tokens after each prompt: `{"identical", "compared", "differing", ...}`."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    lengths = np.asarray(mask).sum(axis=1)
    generated = np.arange(ours.shape[1])[None, :] >= lengths[:, None]
    differ = generated & (ours != theirs)
    result = {
        "identical": not differ.any(),
        "compared": int(generated.sum()),
        "differing": int(differ.sum()),
    }
    if differ.any():
        row, position = (int(i) for i in np.argwhere(differ)[0])
        result["first_difference"] = {"row": row, "position": position,
                                      "step": position - int(lengths[row]),
                                      "ours": int(ours[row, position]),
                                      "other": int(theirs[row, position])}  # fmt: skip
    return result


def identical_text(comparison):
    """`"yes"`, or `"no (3 of 128 tokens differ, first at step 41)"`."""
    if comparison["identical"]:
        return "yes"
    first = comparison["first_difference"]
    return (f"no ({comparison['differing']} of {comparison['compared']} tokens differ, first "
            f"at row {first['row']} step {first['step']})")  # fmt: skip


def time_calls(functions, repeats):
    """Calls each function `repeats` times, taking turns; `{name: median seconds}`."""
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def first_call(function):
    """`(output, seconds)` of a first (tracing, compiling) call."""
    start = time.perf_counter()
    output = function()
    return output, time.perf_counter() - start


# -- 1. speed -----------------------------------------------------------------------------------


def speed_case(args, hub, ours, batch_size):
    """Both models continue the same prompts: first-call and median seconds, tokens/s, identity."""
    from keras_attention.generation import generate

    rng = np.random.default_rng([args.seed, batch_size])
    token_ids, mask = random_prompts(args, batch_size, rng)
    max_length = max_length_of(args)
    pad = [[0, 0], [0, max_length - token_ids.shape[1]]]
    hub_inputs = {"token_ids": np.pad(token_ids, pad), "padding_mask": np.pad(mask, pad)}
    calls = {
        "ours": lambda: generate(ours, token_ids, mask, max_length=max_length, sampler="greedy",
                                 jit_compile=True).numpy(),
        "keras_hub": lambda: hub.generate(hub_inputs, stop_token_ids=None)["token_ids"],
    }  # fmt: skip
    outputs, compile_seconds = {}, {}
    for name, call in calls.items():
        outputs[name], compile_seconds[name] = first_call(call)
    comparison = compare_generated(outputs["ours"], outputs["keras_hub"], mask)
    if not comparison["identical"]:
        comparison["logit_gaps"] = divergence_gaps(ours, hub, outputs, comparison)
    seconds = time_calls(calls, args.repeats)
    new_tokens = int(batch_size * max_length - mask.sum())
    result = {
        "batch_size": batch_size,
        "prompt_lengths": mask.sum(axis=1).tolist(),
        "max_length": max_length,
        "new_tokens": new_tokens,
        "keras_hub_jit_compile": bool(hub.jit_compile),
        "first_call_seconds": compile_seconds,
        "seconds": seconds,
        "tokens_per_second": {name: new_tokens / s for name, s in seconds.items()},
        "comparison": comparison,
    }
    rates = result["tokens_per_second"]
    print(f"batch {batch_size}: ours {rates['ours']:,.0f} tokens/s, keras_hub "
          f"{rates['keras_hub']:,.0f} tokens/s ({new_tokens} new tokens, median of "
          f"{args.repeats}); identical: {identical_text(comparison)}", flush=True)  # fmt: skip
    return result


def divergence_gaps(ours, hub, outputs, comparison):
    """Where the tokens first differ: each model's top-two logit gap there (no cache).

    Both models read the same prefix (the tokens before the first difference, which agree);
    a gap near float32 rounding (~1e-6) means a near tie that either order of summation flips.
    """
    first = comparison["first_difference"]
    row, position = first["row"], first["position"]
    prefix = outputs["ours"][row : row + 1, :position]
    inputs = {"token_ids": prefix, "padding_mask": np.ones_like(prefix)}
    gaps = {}
    for name, model in (("ours", ours), ("keras_hub", hub)):
        logits = keras.ops.convert_to_numpy(model(inputs, training=False))[0, -1]
        top = np.sort(logits)[-2:]
        gaps[name] = {"top_two": top[::-1].tolist(), "gap": float(top[1] - top[0]),
                      "argmax": int(np.argmax(logits))}  # fmt: skip
    return gaps


# -- 2. exports ---------------------------------------------------------------------------------


def word_vocabulary(size):
    """The reserved tokens, then `w0`, `w1`, ...: exactly `size` tokens (`w<i>` is id `i + 5`)."""
    from pipelines.text import RESERVED_TOKENS

    return list(RESERVED_TOKENS) + [f"w{i}" for i in range(size - len(RESERVED_TOKENS))]


def prompt_texts(token_ids, mask):
    """Random prompts as text: the words of each row's ids (a row starts with a word)."""
    rows = zip(token_ids, mask, strict=True)
    return [" ".join(f"w{i - FIRST_WORD_ID}" for i in row[real]) for row, real in rows]


def export_section(args, ours, tmp):
    """The SavedModel `generate` signature, then the LiteRT loop (float32, int8)."""
    import tensorflow as tf

    from keras_attention.export import export_task
    from keras_attention.tasks import CausalLM
    from pipelines.causal_lm import CausalLMPreprocessor
    from pipelines.text import TextTokenizer

    max_length = max_length_of(args)
    tokenizer = TextTokenizer(word_vocabulary(args.vocabulary_size))
    preprocessor = CausalLMPreprocessor(tokenizer, sequence_length=max_length)
    task = CausalLM(ours, preprocessor, max_length=max_length, max_new_tokens=args.new_tokens)
    path = export_task(task, os.path.join(tmp, "saved_model"), name="causal_lm")
    saved_model = tf.saved_model.load(path)
    cases = {}
    for batch_size in args.batch_sizes:
        rng = np.random.default_rng([args.seed, batch_size])
        token_ids, mask = random_prompts(args, batch_size, rng)
        # `[START]` first, then the words: `--prompt-length` tokens in all.
        prompts = prompt_texts(token_ids[:, 1:], mask[:, 1:])
        cases[batch_size] = (prompts, *task.preprocess_for_device(prompts))
    result = {"saved_model": [saved_model_case(args, task, saved_model, cases[b])
                              for b in args.batch_sizes],
              "saved_model_bytes": _directory_bytes(path)}  # fmt: skip
    print(f"SavedModel: {result['saved_model_bytes'] / 1e6:.1f} MB", flush=True)
    result["tflite"] = tflite_section(args, ours, cases)
    return result


def saved_model_case(args, task, saved_model, case):
    """The exported `generate` signature (greedy) against the same tokens in memory."""
    import tensorflow as tf

    from keras_attention.generation import generate

    prompts, token_ids, mask = case
    expected = generate(
        task.backbone, token_ids, mask, task.max_length, "greedy",
        max_new_tokens=args.new_tokens, stop_token_ids=(task.preprocessor.end_id,),
        suppress_token_ids=task.never_generated_ids, jit_compile=False,
    ).numpy()  # fmt: skip
    # The task never emits [PAD]: every other id after a prompt is a generated token.
    after = np.arange(expected.shape[1])[None, :] >= mask.sum(axis=1)[:, None]
    new_tokens = int((after & (expected != 0)).sum())
    arguments = {"prompt": tf.constant(prompts), "max_new_tokens": tf.constant(args.new_tokens),
                 "temperature": tf.constant(0.0), "top_k": tf.constant(0),
                 "top_p": tf.constant(1.0), "seed": tf.constant(0)}  # fmt: skip

    def call():
        return saved_model.signatures["generate"](**arguments)["completion"].numpy()

    completions, first_seconds = first_call(call)
    served = [c.decode("utf-8") for c in completions]
    identical = served == task.postprocess_from_device(expected, mask)
    seconds = time_calls({"saved_model": call}, args.repeats)["saved_model"]
    result = {"batch_size": len(prompts), "new_tokens": new_tokens, "identical": identical,
              "first_call_seconds": first_seconds, "seconds": seconds,
              "tokens_per_second": new_tokens / seconds}  # fmt: skip
    print(f"SavedModel generate, batch {len(prompts)}: {result['tokens_per_second']:,.0f} "
          f"tokens/s ({new_tokens} new tokens); identical: "
          f"{'yes' if identical else 'no'}", flush=True)  # fmt: skip
    return result


def tflite_section(args, ours, cases):
    """The LiteRT loop in float32 and int8: tokens/s, file size, tokens against in-memory ones."""
    try:
        from keras_attention.export.litert_causal_lm import (
            TFLiteCausalLM,
            convert_causal_lm_tflite,
        )
    except ImportError as error:
        print(f"TFLite: not available ({error})", flush=True)
        return {"available": False, "reason": str(error)}
    from keras_attention.generation import generate

    max_length = max_length_of(args)
    expected = {b: generate(ours, ids, mask, max_length, "greedy", jit_compile=False).numpy()
                for b, (_, ids, mask) in cases.items()}  # fmt: skip
    rows = []
    for quantization, label in QUANTIZATIONS:
        start = time.perf_counter()
        try:
            flatbuffer = convert_causal_lm_tflite(ours, max_length=max_length,
                                                  quantization=quantization)  # fmt: skip
            runner = TFLiteCausalLM(flatbuffer)
        except ImportError as error:  # no LiteRT interpreter (`pip install ai-edge-litert`)
            print(f"TFLite: not available ({error})", flush=True)
            return {"available": False, "reason": str(error)}
        convert_seconds = time.perf_counter() - start
        for batch_size, (_, token_ids, mask) in cases.items():

            def call(runner=runner, token_ids=token_ids, mask=mask):
                return runner.generate(token_ids, mask, max_length=max_length)

            tokens, first_seconds = first_call(call)
            comparison = compare_generated(tokens, expected[batch_size], mask)
            seconds = time_calls({"tflite": call}, args.repeats)["tflite"]
            new_tokens = int(batch_size * max_length - mask.sum())
            rows.append({"quantization": label, "batch_size": batch_size, "bytes": len(flatbuffer),
                         "convert_seconds": convert_seconds, "first_call_seconds": first_seconds,
                         "seconds": seconds, "new_tokens": new_tokens,
                         "tokens_per_second": new_tokens / seconds, "comparison": comparison})  # fmt: skip
            print(f"TFLite {label}, batch {batch_size}: {new_tokens / seconds:,.0f} tokens/s, "
                  f"{len(flatbuffer) / 1e6:.1f} MB; identical: {identical_text(comparison)}",
                  flush=True)  # fmt: skip
    return {"available": True, "rows": rows}


def _directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, files in os.walk(path) for name in files)  # fmt: skip


# -- 3. perplexity ------------------------------------------------------------------------------


def perplexity_section(args):
    """One vocabulary, both models trained under the same budget, scored on test.txt."""
    from pipelines.causal_lm import count_words

    corpus = load_corpus(args)
    preprocessor, vocabulary = causal_vocabulary(args, corpus["train"])
    words = count_words(corpus["test"], progress=False)
    test_batches = [
        ({key: value.numpy() for key, value in inputs.items()}, labels.numpy(), weights.numpy())
        for inputs, labels, weights in lm_dataset(args, corpus["test"], preprocessor, False)
    ]
    result = {"vocabulary": vocabulary, "test_words": words, "models": {}}
    for kind in MODELS:
        print(f"\n--- training {kind} ---", flush=True)
        result["models"][kind] = train_and_score(kind, args, corpus, preprocessor, test_batches,
                                                 words)  # fmt: skip
    return result


def causal_vocabulary(args, documents):
    """The task's WordPiece vocabulary of the training text (`CausalLM.build_preprocessor`)."""
    from keras_attention.tasks import CausalLM
    from keras_attention.tasks.causal_lm_config import CausalLMConfig

    config = CausalLMConfig(vocabulary_size=args.vocabulary_size, lowercase=True,
                            sequence_length=args.sequence_length)  # fmt: skip
    assets_dir = os.path.join(args.output_dir, "vocabulary")
    os.makedirs(assets_dir, exist_ok=True)
    start = time.perf_counter()
    preprocessor = CausalLM.build_preprocessor(config, documents, assets_dir)
    seconds = time.perf_counter() - start
    print(f"vocabulary: {preprocessor.vocabulary_size} word pieces ({seconds:.0f} s)", flush=True)
    return preprocessor, {"size": preprocessor.vocabulary_size, "seconds": round(seconds, 1)}


def lm_dataset(args, documents, preprocessor, shuffle):
    from pipelines.causal_lm import make_dataset

    return make_dataset(documents, preprocessor, batch_size=args.batch_size, shuffle=shuffle,
                        seed=args.seed, progress=False)  # fmt: skip


def train_and_score(kind, args, corpus, preprocessor, test_batches, words):
    """Trains one model for the budget, scores it on the test windows; its numbers."""
    from keras_attention.models import gpt_causal_lm
    from keras_attention.training import LearningRateSchedule, WallClockBudget

    keras.backend.clear_session()
    keras.utils.set_random_seed(args.seed)
    dataset = lm_dataset(args, corpus["train"], preprocessor, True)
    if kind == "ours":
        model = gpt_causal_lm(preprocessor.vocabulary_size, num_layers=args.num_layers,
                              num_heads=args.num_heads, hidden_dim=args.hidden_dim,
                              intermediate_dim=args.intermediate_dim, dropout=args.dropout,
                              max_sequence_length=args.sequence_length)  # fmt: skip
    else:
        model = hub_causal_lm(argparse.Namespace(**{**vars(args), "vocabulary_size":
                                                    preprocessor.vocabulary_size}),
                              args.sequence_length, args.dropout)  # fmt: skip
    compile_model(model, args)  # masked_lm's: AdamW, masked cross-entropy, token accuracy
    budget_seconds = 60.0 * args.budget_minutes
    clock = StepClock()
    start = time.perf_counter()
    schedule = LearningRateSchedule(args.learning_rate, args.warmup_steps, "cosine",
                                    budget_seconds=budget_seconds, start=start)  # fmt: skip
    history = model.fit(dataset, epochs=1_000_000, verbose=args.verbose, shuffle=False,  # shuffled
                        callbacks=[schedule, WallClockBudget(start, budget_seconds), clock])  # fmt: skip
    train_seconds = time.perf_counter() - start
    # Every window holds `sequence_length` real input tokens but the corpus's last one.
    timed_tokens = (clock.steps - 1) * args.batch_size * args.sequence_length
    totals = np.zeros(3)
    for inputs, labels, weights in test_batches:
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
        totals += masked_token_totals(logits, labels, weights)
    test = scores_from_totals(*totals)  # per word piece
    test["word_perplexity"] = math.exp(min(totals[0] / words, 700.0))
    result = {
        "parameters": int(model.count_params()),
        "jit_compile": bool(model.jit_compile),
        "steps": clock.steps,
        "train_seconds": round(train_seconds, 1),
        "first_step_seconds": round(clock.first_step_seconds or 0.0, 1),
        "tokens_per_second": timed_tokens / clock.timed_seconds if clock.timed_seconds else 0.0,
        "final_train_loss": float(history.history["loss"][-1]),
        "test": test,
    }
    print(f"{kind}: {clock.steps} steps, {result['tokens_per_second']:,.0f} tokens/s; test "
          f"perplexity {test['perplexity']:.2f} per word piece, {test['word_perplexity']:.2f} "
          "per word", flush=True)  # fmt: skip
    return result


# -- output -------------------------------------------------------------------------------------


def results_table(results):
    """The Markdown tables of the sections that ran, peers side by side."""
    system, args = results["system"], results["args"]
    lines = [
        f"# {results['command']}",
        f"# TensorFlow {system['tensorflow']}, Keras {system['keras']}, keras_hub "
        f"{system['keras_hub']}, {system['cpu_count']} CPU cores, load "
        f"{system['load_average_at_start'][0]:.2f}; model: {args['num_layers']} layers, hidden "
        f"{args['hidden_dim']}, {args['num_heads']} heads, intermediate "
        f"{args['intermediate_dim']}, vocabulary {args['vocabulary_size']}",
    ]
    if "speed" in results:
        lines += ["", *speed_lines(results["speed"], args)]
    if "export" in results:
        lines += ["", *export_lines(results["export"])]
    if "perplexity" in results:
        lines += ["", *perplexity_lines(results["perplexity"], args)]
    return "\n".join(lines)


def speed_lines(rows, args):
    lines = [
        f"Greedy generation, both XLA-compiled, median of {args['repeats']} calls after a first "
        "(compiling) call; tokens/s counts every generated token.",
        "",
        "| batch | prompt lengths | new tokens | ours tokens/s | keras_hub tokens/s | ours / "
        "keras_hub | first call ours / keras_hub (s) | identical |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rate, first = r["tokens_per_second"], r["first_call_seconds"]
        lengths = r["prompt_lengths"]
        lines.append(
            f"| {r['batch_size']} | {min(lengths)}-{max(lengths)} | {r['new_tokens']} "
            f"| {rate['ours']:,.0f} | {rate['keras_hub']:,.0f} "
            f"| {rate['ours'] / rate['keras_hub']:.2f}x | {first['ours']:.1f} / "
            f"{first['keras_hub']:.1f} | {identical_text(r['comparison'])} |"
        )
    return lines


def export_lines(export):
    lines = [
        "| ours, exported | batch | new tokens | tokens/s | size | identical to in-memory |",
        "|---|---:|---:|---:|---:|---|",
    ]
    size = f"{export['saved_model_bytes'] / 1e6:.1f} MB"
    for r in export["saved_model"]:
        lines.append(f"| SavedModel `generate` | {r['batch_size']} | {r['new_tokens']} "
                     f"| {r['tokens_per_second']:,.0f} | {size} "
                     f"| {'yes' if r['identical'] else 'no'} |")  # fmt: skip
    tflite = export["tflite"]
    if not tflite["available"]:
        return lines + ["", "TFLite: not available"]
    for r in tflite["rows"]:
        lines.append(f"| TFLite {r['quantization']} | {r['batch_size']} | {r['new_tokens']} "
                     f"| {r['tokens_per_second']:,.0f} | {r['bytes'] / 1e6:.1f} MB "
                     f"| {identical_text(r['comparison'])} |")  # fmt: skip
    return lines + ["", "SavedModel: greedy, stops at [END], never emits [PAD] [START] [MASK] "
                    "(the size is the whole directory); TFLite: one row at a time, every row "
                    "to the full length."]  # fmt: skip


def perplexity_lines(perplexity, args):
    models = perplexity["models"]
    lines = [
        f"WikiText-2: {args['budget_minutes']:g} min of training each (batch "
        f"{args['batch_size']} x {args['sequence_length']}, AdamW {args['learning_rate']:g}, "
        f"{perplexity['vocabulary']['size']} word pieces), scored on test.txt.",
        "",
        "| model | params | steps | train tokens/s | test perplexity per word piece | per word |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, r in models.items():
        lines.append(f"| {kind} | {r['parameters'] / 1e6:.2f}M | {r['steps']} "
                     f"| {r['tokens_per_second']:,.0f} | {r['test']['perplexity']:.2f} "
                     f"| {r['test']['word_perplexity']:.2f} |")  # fmt: skip
    return lines + [
        "",
        f"Per word: exp(total NLL / {perplexity['test_words']:,} words), counted as "
        "`pipelines.causal_lm.count_words` does: whitespace-separated words of each paragraph "
        "(headings dropped, `@-@` joined, `<unk>` dropped) plus one per document for its [END].",
    ]


if __name__ == "__main__":
    main()
