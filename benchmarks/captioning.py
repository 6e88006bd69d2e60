"""The image captioner with a frozen encoder: training on images vs on cached features, and serving.

For a `ShowAttendTellCaptioner` (soft attention, `encoder_trainable=False`) on generated
scenes (`pipelines.synthetic.write_shape_scenes`: JPEG files and a COCO `captions.json`, two
captions per image), in one process:

1. Training throughput, the two ways of training with a frozen image encoder side by side:
   - uncached: `pipelines.captioning.make_dataset(paths, captions, preprocessor, cache=True)`
     yields the decoded images (kept in memory after the first epoch) and the whole backbone is
     trained: the frozen encoder runs forward on every (image, caption) pair of every epoch;
   - cached: `make_dataset(..., feature_extractor=backbone.image_encoder,
     feature_cache=<tmp>/features.npy, cache=True)` runs the encoder once per image (the one-off
     "cache build" time: the whole `make_dataset` call) and `backbone.feature_model` (the same
     layers, taking `{"features", "target_in"}`) is trained on the stored grids.
   Both are compiled as `keras_attention.training.fit` compiles (Adam at 1e-3, the masked
   cross-entropy `keras_attention.tasks.losses.masked_loss()`, Keras's `jit_compile="auto"`) and
   trained with `Model.fit`, without `fit`'s checkpoints and logs. Both datasets are shuffled
   alike (buffer = all pairs). One warm-up epoch each (tracing, the first pass through the
   pipeline), then `--repeats` single epochs, alternating uncached and cached so that a change of
   load on a shared machine hits both alike. An epoch is timed from `on_epoch_begin` to
   `on_epoch_end` (`time.perf_counter`); images/s are the (image, caption) pairs of an epoch over
   the median epoch time. "break-even" is the cache build time over the time caching saves per
   epoch.
2. Caption latency of the task: `keras_attention.tasks.Captioner(backbone, preprocessor)`
   (greedy; and `beam_width=--beam-width` unless it is 1) is exported with
   `keras_attention.export.export_task`, reloaded with `tf.saved_model.load`, and its
   `serving_default` signature (`image`: a `tf.string` batch of JPEG bytes) is called on batches
   of 1 and 32 distinct images, alternating with the in-memory `task.caption(list_of_bytes)` on
   the same batch; p50 and p90 of `--latency-runs` calls after a warm-up call each. How long a
   call takes depends on how many words are generated: the mean is reported (the model has only
   been trained for a few epochs).

    python benchmarks/captioning.py                                # mobilenet_v2 (random), 96 px
    python benchmarks/captioning.py --encoder small_cnn --image-size 64 --images 1024
    python benchmarks/captioning.py --quick --json /tmp/captioning.json   # about a minute

`--quick` shrinks every setting not given explicitly (64 images, `small_cnn` at 32 px, a small
decoder, 2 timed epochs, 5 latency runs). Encoders of `keras.applications` are built with
`weights=None` (random: nothing is downloaded; throughput does not depend on the weights).

Prints a Markdown table and writes every number to `--json` when given.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

# Full settings; `--quick` replaces those not given on the command line.
DEFAULTS = {
    "encoder": "mobilenet_v2",
    "images": 512,
    "batch_size": 32,
    "repeats": 3,
    "latency_runs": 20,
    "units": 256,
    "embedding_dim": 128,
    "beam_width": 3,
}
QUICK = {
    "encoder": "small_cnn",
    "image_size": 32,
    "images": 64,
    "batch_size": 32,
    "repeats": 2,
    "latency_runs": 5,
    "units": 64,
    "embedding_dim": 32,
    "beam_width": 3,
}
SMALL_CNN_IMAGE_SIZE = 32
APPLICATION_IMAGE_SIZE = 96
LATENCY_BATCH_SIZES = (1, 32)
SEQUENCE_LENGTH = 16  # word pieces: the scenes' captions have 7 or 8 words
VOCABULARY_SIZE = 200
LEARNING_RATE = 1e-3  # FitConfig's default


def parse_args(argv=None):
    from keras_attention.models.image_encoder import ENCODERS

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small settings: about a minute")
    parser.add_argument(
        "--encoder", choices=ENCODERS, help=f"the frozen image encoder ({DEFAULTS['encoder']})"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help=f"image side in pixels ({APPLICATION_IMAGE_SIZE} for keras.applications encoders, "
        f"{SMALL_CNN_IMAGE_SIZE} for small_cnn)",
    )
    parser.add_argument("--images", type=int, help=f"generated scenes ({DEFAULTS['images']})")
    parser.add_argument(
        "--batch-size", type=int, help=f"pairs per batch ({DEFAULTS['batch_size']})"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"timed epochs per variant ({DEFAULTS['repeats']})"
    )
    parser.add_argument(
        "--latency-runs", type=int, help=f"timed calls per batch size ({DEFAULTS['latency_runs']})"
    )
    parser.add_argument("--units", type=int, help=f"LSTM units ({DEFAULTS['units']})")
    parser.add_argument(
        "--embedding-dim", type=int, help=f"word embeddings ({DEFAULTS['embedding_dim']})"
    )
    parser.add_argument(
        "--beam-width",
        type=int,
        help=f"beam search peer; 1: greedy only ({DEFAULTS['beam_width']})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.image_size is None:
        small = args.encoder == "small_cnn"
        args.image_size = SMALL_CNN_IMAGE_SIZE if small else APPLICATION_IMAGE_SIZE
    for flag in ("images", "batch_size", "repeats", "latency_runs", "units", "embedding_dim",
                 "beam_width"):  # fmt: skip
        if getattr(args, flag) < 1:
            parser.error(
                f"--{flag.replace('_', '-')} must be >= 1. Received: {getattr(args, flag)}"
            )
    if args.image_size < 16:
        parser.error(
            f"--image-size must be >= 16 (write_shape_scenes' least). Received: {args.image_size}"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    # The dataset knows its batches; Keras still warns when an epoch's iterator ends.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    results = {
        "command": " ".join(
            ["python benchmarks/captioning.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "system": _system(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    with tempfile.TemporaryDirectory(prefix="captioning_bench_") as tmp:
        data = _prepare(args, tmp)
        backbone = _backbone(args, data["preprocessor"])
        results["model"] = {
            "parameters": int(backbone.count_params()),
            "encoder_parameters": int(backbone.image_encoder.count_params()),
            "trainable_parameters": _count(backbone.trainable_weights),
            "feature_shape": list(backbone.encoder_output_shape),
        }
        results["training"] = train_throughput(args, backbone, data, tmp)
        results["latency"] = caption_latency(args, backbone, data, tmp)
    results["system"]["load_average_end"] = _load_average()
    table = results_table(results)
    print(table, flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    results["table"] = table
    return results


# -- data and model -------------------------------------------------------------------------------


def _prepare(args, tmp):
    """Writes the scenes, learns the vocabulary; the preprocessor, the image paths and captions."""
    from pipelines.captioning import CaptioningPreprocessor, read_captions
    from pipelines.synthetic import write_shape_scenes
    from pipelines.text import build_wordpiece_vocab, load_tokenizer

    paths = write_shape_scenes(os.path.join(tmp, "scenes"), args.images, args.image_size, args.seed)
    image_paths, captions = read_captions(paths["coco"], paths["images"], progress=False)
    vocab_path = os.path.join(tmp, "vocab.txt")
    build_wordpiece_vocab(
        [c for group in captions for c in group], vocab_path, VOCABULARY_SIZE, lowercase=True,
        progress=False,
    )  # fmt: skip
    preprocessor = CaptioningPreprocessor(
        load_tokenizer(vocab_path), image_size=args.image_size, sequence_length=SEQUENCE_LENGTH
    )
    return {"paths": image_paths, "captions": captions, "preprocessor": preprocessor}


def _backbone(args, preprocessor):
    from keras_attention.models import ShowAttendTellCaptioner

    return ShowAttendTellCaptioner(
        preprocessor.tokenizer.vocabulary_size,
        image_size=args.image_size,
        encoder=args.encoder,
        encoder_weights=None,
        encoder_trainable=False,
        embedding_dim=args.embedding_dim,
        units=args.units,
    )


# -- training -------------------------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Seconds of each epoch, `on_epoch_begin` to `on_epoch_end` (the batches and the pipeline)."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._begin = None

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._begin)


def train_throughput(args, backbone, data, tmp):
    """Uncached vs cached training of the captioner with its frozen encoder (see the docstring)."""
    from keras_attention.tasks.losses import masked_loss
    from pipelines.captioning import make_dataset

    paths, captions, preprocessor = data["paths"], data["captions"], data["preprocessor"]
    pairs = sum(len(group) for group in captions)
    common = {
        "batch_size": args.batch_size,
        "shuffle": pairs,
        "seed": args.seed,
        "cache": True,
        "progress": False,
    }
    uncached_data = make_dataset(paths, captions, preprocessor, **common)
    begin = time.perf_counter()
    cached_data = make_dataset(
        paths,
        captions,
        preprocessor,
        feature_extractor=backbone.image_encoder,
        feature_cache=os.path.join(tmp, "features.npy"),
        **common,
    )
    cache_seconds = time.perf_counter() - begin
    cache_bytes = os.path.getsize(os.path.join(tmp, "features.npy"))
    examples = sum(int(target_out.shape[0]) for _, target_out in cached_data)

    runs = {"uncached": (backbone, uncached_data), "cached": (backbone.feature_model, cached_data)}
    timers, warm_up = {}, {}
    for name, (network, dataset) in runs.items():
        network.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=masked_loss(), jit_compile="auto"
        )
        begin = time.perf_counter()
        # Warm-up: tracing, and the first pass through the pipeline (filling its cache).
        network.fit(dataset, epochs=1, verbose=0, shuffle=False)
        warm_up[name] = time.perf_counter() - begin
        timers[name] = EpochTimer()
    for _ in range(args.repeats):  # alternating: a change of load hits both alike
        for name, (network, dataset) in runs.items():
            network.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[timers[name]])
    result = {"examples_per_epoch": examples, "batches_per_epoch": int(cached_data.cardinality())}
    for name, timer in timers.items():
        median = statistics.median(timer.seconds)
        result[name] = {
            "epoch_seconds": [round(s, 4) for s in timer.seconds],
            "median_epoch_seconds": round(median, 4),
            "p90_epoch_seconds": round(_percentile(timer.seconds, 90), 4),
            "images_per_second": round(examples / median, 1),
            "ms_per_image": round(1000 * median / examples, 3),
            "warm_up_seconds": round(warm_up[name], 2),
        }
    uncached, cached = result["uncached"], result["cached"]
    saved = uncached["median_epoch_seconds"] - cached["median_epoch_seconds"]
    result["cached_over_uncached"] = round(
        cached["images_per_second"] / uncached["images_per_second"], 2
    )
    result["cache"] = {
        "seconds": round(cache_seconds, 2),  # the whole make_dataset call
        "images": len(paths),
        "images_per_second": round(len(paths) / cache_seconds, 1),
        "bytes": cache_bytes,
        # Epochs after which computing the cache has paid for itself.
        "break_even_epochs": round(cache_seconds / saved, 2) if saved > 0 else None,
    }
    print(
        f"training: uncached {uncached['images_per_second']} images/s, cached "
        f"{cached['images_per_second']} images/s ({result['cached_over_uncached']}x); cache "
        f"built in {cache_seconds:.1f} s",
        flush=True,
    )
    return result


# -- serving --------------------------------------------------------------------------------------


def caption_latency(args, backbone, data, tmp):
    """The exported SavedModel's `serving_default` vs the in-memory `task.caption`, per decoding."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops for the reload)

    from keras_attention.export import export_task
    from keras_attention.tasks import Captioner

    jpegs = []
    for path in data["paths"][: max(LATENCY_BATCH_SIZES)]:
        with open(path, "rb") as f:
            jpegs.append(f.read())
    decodings = {"greedy": 1}
    if args.beam_width > 1:
        decodings[f"beam_{args.beam_width}"] = args.beam_width
    result = {}
    for decoding, beam_width in decodings.items():
        task = Captioner(backbone, data["preprocessor"], beam_width=beam_width)
        begin = time.perf_counter()
        path = export_task(task, os.path.join(tmp, "saved_models"), name=f"captioner_{decoding}",
                           version=1)  # fmt: skip
        export_seconds = time.perf_counter() - begin
        begin = time.perf_counter()
        serve = tf.saved_model.load(path).signatures["serving_default"]
        load_seconds = time.perf_counter() - begin

        def saved_model(batch, serve=serve):
            output = serve(image=tf.constant(batch, tf.string))["caption"].numpy()
            return [c.decode("utf-8") for c in output]

        peers = {"saved_model": saved_model, "in_memory": task.caption}
        entry = {
            "beam_width": beam_width,
            "export_seconds": round(export_seconds, 2),
            "load_seconds": round(load_seconds, 2),
            "saved_model_bytes": _size(path),
        }
        for batch_size in LATENCY_BATCH_SIZES:
            batches = [
                [jpegs[(run * batch_size + i) % len(jpegs)] for i in range(batch_size)]
                for run in range(args.latency_runs)
            ]
            captions = {name: predict(batches[0]) for name, predict in peers.items()}  # warm-up
            times = {name: [] for name in peers}
            for batch in batches:  # alternating, as the training epochs
                for name, predict in peers.items():
                    begin = time.perf_counter()
                    predict(batch)
                    times[name].append(1000 * (time.perf_counter() - begin))
            for name, values in times.items():
                p50 = statistics.median(values)
                entry.setdefault(name, {})[str(batch_size)] = {
                    "p50_ms": round(p50, 2),
                    "p90_ms": round(_percentile(values, 90), 2),
                    "ms_per_image": round(p50 / batch_size, 3),
                    "images_per_second": round(1000 * batch_size / p50, 1),
                    "runs": len(values),
                }
            entry[str(batch_size)] = {
                "same_captions": captions["saved_model"] == captions["in_memory"],
                "mean_words": round(
                    float(np.mean([len(c.split()) for c in captions["saved_model"]])), 2
                ),
                "example": captions["saved_model"][0],
                "saved_model_over_in_memory": round(
                    entry["saved_model"][str(batch_size)]["p50_ms"]
                    / entry["in_memory"][str(batch_size)]["p50_ms"],
                    2,
                ),
            }
        result[decoding] = entry
        print(
            f"{decoding}: SavedModel "
            + ", ".join(
                f"batch {b}: {entry['saved_model'][str(b)]['p50_ms']} ms"
                for b in LATENCY_BATCH_SIZES
            )
            + f" (p50); e.g. {entry['1']['example']!r}",
            flush=True,
        )
    return result


# -- output ---------------------------------------------------------------------------------------


def results_table(results):
    """The Markdown table: training (uncached vs cached), then latency (SavedModel vs in memory)."""
    settings, model, system = results["settings"], results["model"], results["system"]
    training = results["training"]
    lines = [
        f"# {results['command']}",
        f"# TensorFlow {system['tensorflow']}, Keras {system['keras']}, Python {system['python']}, "
        f"{system['cpu_count']} CPU cores, load average {system['load_average_start']} at the "
        f"start, {system.get('load_average_end', '-')} at the end",
        f"# ShowAttendTellCaptioner: {settings['encoder']} encoder (random weights, frozen) at "
        f"{settings['image_size']} px, grid {'x'.join(map(str, model['feature_shape']))}, "
        f"{model['parameters'] / 1e6:.2f}M parameters ({model['encoder_parameters'] / 1e6:.2f}M "
        f"in the encoder, {model['trainable_parameters'] / 1e6:.2f}M trained); "
        f"{training['cache']['images']} images, {training['examples_per_epoch']} "
        f"(image, caption) pairs per epoch",
        "",
        "| measurement | batch | p50 | p90 | ms per image | images/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    batch = settings["batch_size"]
    for name, label in (
        ("uncached", "train, uncached: images through the frozen encoder"),
        ("cached", "train, cached encoder features (`feature_model`)"),
    ):
        r = training[name]
        ratio = (
            "1 (baseline)"
            if name == "uncached"
            else f"**{training['cached_over_uncached']}x** uncached"
        )
        lines.append(
            f"| {label} | {batch} | {r['median_epoch_seconds']:.2f} s/epoch "
            f"| {r['p90_epoch_seconds']:.2f} s/epoch | {r['ms_per_image']:.2f} "
            f"| {r['images_per_second']:.1f} | {ratio} |"
        )
    cache = training["cache"]
    even = cache["break_even_epochs"]
    lines.append(
        f"| feature cache, one-off (`make_dataset(feature_extractor=...)`) | {batch} "
        f"| {cache['seconds']:.2f} s | - | {1000 / cache['images_per_second']:.2f} "
        f"| {cache['images_per_second']:.1f} "
        f"| {'pays off after ' + format(even, 'g') + ' epochs' if even else 'never pays off'} |"
    )
    for decoding, entry in results["latency"].items():
        for batch_size in LATENCY_BATCH_SIZES:
            key = str(batch_size)
            for peer, label in (
                ("saved_model", "SavedModel `serving_default`"),
                ("in_memory", "in-memory `task.caption`"),
            ):
                r = entry[peer][key]
                ratio = (
                    f"{entry[key]['saved_model_over_in_memory']}x in-memory"
                    if peer == "saved_model"
                    else "1 (baseline)"
                )
                lines.append(
                    f"| {label}, {decoding.replace('_', ' ')} | {batch_size} "
                    f"| {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | {r['ms_per_image']:.2f} "
                    f"| {r['images_per_second']:.1f} | {ratio} |"
                )
    same = all(entry[str(b)]["same_captions"] for entry in results["latency"].values()
               for b in LATENCY_BATCH_SIZES)  # fmt: skip
    words = ", ".join(
        f"{decoding.replace('_', ' ')} {entry['1']['mean_words']} / {entry['32']['mean_words']}"
        for decoding, entry in results["latency"].items()
    )
    lines += [
        "",
        f"Training: median (p50) and p90 of {settings['repeats']} epochs per variant after one "
        "warm-up epoch each, alternating; images/s = (image, caption) pairs per second. Latency: "
        f"{settings['latency_runs']} calls per batch size after a warm-up call, SavedModel and "
        f"in-memory alternating, JPEG bytes in. SavedModel and in-memory captions identical: "
        f"{'yes' if same else 'NO'}. Mean words per caption (batch 1 / 32): {words}.",
    ]
    return "\n".join(lines)


def _system():
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_start": _load_average(),
    }


def _load_average():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _percentile(values, q):
    return float(np.percentile(np.asarray(values, float), q))


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def _size(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, files in os.walk(path)
        for name in files
    )


if __name__ == "__main__":
    main()
