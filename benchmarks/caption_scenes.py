"""Captioners side by side on generated scenes: exact match, BLEU-4, CIDEr, where the attention lands.

Writes scenes to disk (`pipelines.synthetic.write_shape_scenes`, one caption per scene), trains each
captioner with the generic `keras_attention.training.train` (the `keras-attention train captioning`
path) and scores it on held-out scenes: exact match, BLEU-4 and CIDEr-D against the reference, and
the fraction of colour and shape words whose attention peak lies on the object they name.

    python benchmarks/caption_scenes.py [--scenes 5000] [--epochs 12] [--json results.json]
"""

import argparse
import json
import os
import platform
import tempfile
import time

import keras
import tensorflow as tf

from keras_attention.demos.captioning import attention_hit_rate
from keras_attention.tasks import CaptioningConfig
from keras_attention.training import FitConfig, train
from pipelines import synthetic

_LSTM = {"units": 128, "embedding_dim": 64}
MODELS = {
    "soft, the paper's LSTM": {"attention": "soft", **_LSTM},
    "soft, zeros start, context to the output only": {
        "attention": "soft", "initial_state": "zeros", "context_input": False, **_LSTM,
    },  # fmt: skip
    "hard (Gumbel), the paper's LSTM": {"attention": "hard", **_LSTM},
    "hard (Gumbel), context to the output only": {
        "attention": "hard", "context_input": False, **_LSTM,
    },  # fmt: skip
    "Transformer decoder, 2 blocks": {
        "decoder": "transformer", "hidden_dim": 128, "num_heads": 4, "intermediate_dim": 256,
        "num_layers": 2, "dropout": 0.0,
    },  # fmt: skip
}


def run(scenes=5000, epochs=12, test=300, seed=0, directory=None):
    """Trains every model of `MODELS`; returns `{name: scores}`."""
    directory = directory or tempfile.mkdtemp(prefix="caption_scenes_")
    train_files, test_files = (
        synthetic.write_shape_scenes(os.path.join(directory, split), count, 32, seed=s,
                                     overwrite=True, captions_per_image=1)
        for split, count, s in (("train", scenes, seed), ("test", test, seed + 1))
    )  # fmt: skip
    with open(test_files["objects"], encoding="utf-8") as f:
        boxes = json.load(f)
    results = {}
    for name, options in MODELS.items():
        keras.utils.set_random_seed(seed)
        fit_config = FitConfig(epochs=epochs, batch_size=64, learning_rate=3e-3 if "decoder"
                               not in options else 1e-3, clipnorm=1.0, verbose=0)  # fmt: skip
        start = time.perf_counter()
        training = train(
            "captioning", (train_files["images"], train_files["coco"], False),
            os.path.join(directory, f"run_{len(results)}"), config=CaptioningConfig(**options),
            fit_config=fit_config, overwrite=True, resume=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        data = (test_files["images"], test_files["coco"], False)
        scores = training.task.evaluate(data)
        paths, _ = training.task.read_data(data)
        objects = [boxes[os.path.basename(p)] for p in paths]
        rate, checked, _ = attention_hit_rate(training.task, paths, objects)
        results[name] = {
            "exact_match": scores["exact_match"], "bleu_4": scores.get("bleu_4"),
            "cider": scores.get("cider"), "attention_on_object": rate, "words_checked": checked,
            "train_seconds": round(seconds, 1),
            "parameters": training.task.backbone.count_params(),
        }  # fmt: skip
        print(f"{name}: {results[name]}", flush=True)
        keras.backend.clear_session()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = run(args.scenes, args.epochs, args.test)
    print(f"\n# python benchmarks/caption_scenes.py --scenes {args.scenes} --epochs {args.epochs}")
    print(f"# TensorFlow {tf.__version__}, Keras {keras.__version__}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPU cores; {args.test} held-out scenes")  # fmt: skip
    print("| model | parameters | train s | exact match | BLEU-4 | CIDEr-D | attention peak on the named object |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['parameters']:,} | {r['train_seconds']:.0f} | {r['exact_match']:.1%} "
              f"| {r['bleu_4']:.1f} | {r['cider']:.2f} | {r['attention_on_object']:.1%} of "
              f"{r['words_checked']} words |")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
