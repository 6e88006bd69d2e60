"""A trained translator on device: its `.tflite` decoding against its SavedModel, side by side.

For a saved translator (a `keras-attention train translation` run directory, or the
`<output-dir>/<model>/translator/` that `benchmarks/multi30k.py` writes), in one process:

1. the string-in/string-out SavedModel (`export_task`, greedy) is written and reloaded with
   `tf.saved_model.load`;
2. the encoder and decode step are converted to one builtins-only `.tflite` file
   (`convert_task_tflite`: `encode`, `prefill`, `decode`) and run by `TFLiteGenerator` in the
   LiteRT interpreter, with the tokenizers on the host;
3. both translate the same sentences (one at a time, and in batches of 32): the share of identical
   translations, the file sizes, and the median latency per call (after a warm-up call).

    python benchmarks/on_device.py --run runs/multi30k/transformer/translator \\
        --sources ../shared/data/multi30k/raw/test_2016_flickr.en.gz --limit 200
    python benchmarks/on_device.py --run runs/dates --tsv held_out.tsv

Prints a Markdown table and writes the numbers to `--output` (JSON) when given.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a saved translator (run directory)")
    parser.add_argument("--sources", help="source sentences, one per line (plain or .gz)")
    parser.add_argument("--tsv", help="or: source<TAB>target pairs (the sources are used)")
    parser.add_argument("--limit", type=int, default=200, help="sentences (default %(default)s)")
    parser.add_argument("--runs", type=int, default=20, help="timed single-sentence calls")
    parser.add_argument("--output", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if (args.sources is None) == (args.tsv is None):
        parser.error("give --sources or --tsv")
    if args.limit < 1 or args.runs < 1:
        parser.error("--limit and --runs must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops for the reload)

    from keras_attention.export import convert_task_tflite, export_task, tflite_predictor
    from keras_attention.tasks import Task
    from pipelines.text import read_lines
    from pipelines.translation import read_pairs

    task = Task.load(args.run)
    if getattr(task, "beam_width", 1) != 1:
        task.beam_width = 1  # the on-device loop is greedy: compare greedy with greedy
    sources = read_lines(args.sources, False) if args.sources else read_pairs(args.tsv)[0]
    sources = sources[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_task(task, tmp, name="model", version=1)
        serve = tf.saved_model.load(path).signatures["serving_default"]
        saved_bytes = _size(path)
        tflite_path = os.path.join(tmp, "model.tflite")
        begin = time.perf_counter()
        convert_task_tflite(task, output_path=tflite_path)
        convert_seconds = time.perf_counter() - begin
        tflite_bytes = os.path.getsize(tflite_path)
        on_device = tflite_predictor(task, tflite_path)

        def saved_model(texts):
            outputs = serve(text=tf.constant(texts, tf.string))["translation"].numpy()
            return [t.decode("utf-8") for t in outputs]

        results = {}
        for name, predict in (("SavedModel", saved_model), ("TFLite (LiteRT)", on_device)):
            results[name] = _measure(predict, sources, args.runs)
    same = sum(
        a == b
        for a, b in zip(
            results["SavedModel"]["translations"],
            results["TFLite (LiteRT)"]["translations"],
            strict=True,
        )
    )
    summary = {
        "run": args.run,
        "sentences": len(sources),
        "identical_translations": same,
        "saved_model_bytes": saved_bytes,
        "tflite_bytes": tflite_bytes,
        "tflite_convert_seconds": round(convert_seconds, 1),
        **{
            name: {k: v for k, v in r.items() if k != "translations"}
            for name, r in results.items()
        },
    }
    print(_table(summary))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return summary


def _measure(predict, sources, runs):
    """All sentences in batches of 32, then median latencies of single and batched calls."""
    translations = []
    for start in range(0, len(sources), 32):
        translations += predict(sources[start : start + 32])
    predict(sources[:1])  # warm-up

    def timed(texts):
        begin = time.perf_counter()
        predict(texts)
        return 1000 * (time.perf_counter() - begin)

    single = [timed([sources[i % len(sources)]]) for i in range(runs)]
    batched = [timed(sources[:32]) for _ in range(max(1, runs // 4))]
    return {
        "translations": translations,
        "ms_per_sentence": round(statistics.median(single), 1),
        "ms_per_batch_of_32": round(statistics.median(batched), 1),
    }


def _size(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(path)
        for name in files
    )


def _table(summary):
    lines = [
        f"# {' '.join([os.path.basename(sys.executable), *sys.argv])}",
        f"# {summary['sentences']} sentences; identical translations (TFLite vs SavedModel, "
        f"greedy): {summary['identical_translations']} of {summary['sentences']}",
        "",
        "| runtime | size MB | ms, 1 sentence (median) | ms, batch of 32 (median) |",
        "|---|---:|---:|---:|",
    ]
    for name, key in (("SavedModel", "saved_model_bytes"), ("TFLite (LiteRT)", "tflite_bytes")):
        lines.append(
            f"| {name} | {summary[key] / 1e6:.1f} | {summary[name]['ms_per_sentence']} "
            f"| {summary[name]['ms_per_batch_of_32']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
