"""The captioning demo: Show, Attend and Tell learns to describe generated scenes of shapes.

`run` writes generated scenes (`pipelines.synthetic.write_shape_scenes`: two
coloured shapes, "a red circle above a blue square") to disk as JPEG files
with a COCO captions JSON, trains a captioner on that folder through the
generic `keras_attention.training.train` (the same path as `keras-attention
train captioning --images DIR --captions FILE`), and then:

1. prints the exact-match rate and BLEU on held-out scenes, with samples;
2. checks where the model looked: for each colour and shape word, whether the
   attention peak lies on that object (`attention_hits`), and writes the
   per-word overlay grid of one scene as a PNG;
3. exports the captioner as a SavedModel, reloads it in this process from
   disk and checks that it captions the held-out JPEG files exactly as the
   in-memory captioner does.
"""

import json
import os
import time

import numpy as np

from keras_attention.demos.output import new_output_dir
from keras_attention.utils import positive_int
from pipelines import synthetic

DEFAULTS = {
    "num_examples": 5000,
    "num_test": 300,
    "epochs": 10,
    # Each word looked up where it is said (README: "where it looks"): hard attention, the context
    # reaching the output only. (Its peaks were on the named object in 92-94% of the words in
    # every run; soft attention's in 67-91%.)
    "attention": "hard",
    "context_input": False,
    "image_size": 32,
    "units": 128,
    "embedding_dim": 64,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "clipnorm": 1.0,
}
EXPORT_NAME = "scene_captioner"
PNG_NAME = "caption_attention.png"
COLOR_SHAPE_WORDS = frozenset(synthetic.SCENE_COLORS) | frozenset(synthetic.SCENE_SHAPES)


def attention_hits(tokens, maps, objects, image_size):
    """For each colour or shape word of a caption, whether its attention peak lies on its object.

    The caption names two objects, `a <colour> <shape> <relation> a
    <colour> <shape>`; a word belongs to the object it describes (the first
    or the second, whichever order the caption uses). A peak cell "lies on"
    an object when the cell's pixel box overlaps the object's box.

    Args:
        tokens: the generated words of one caption (`"[END]"` may follow).
        maps: `(T, H, W)`, the attention of each token over the grid.
        objects: the scene's two objects (`shape_scenes(...)["objects"][i]`).
        image_size: the side of the image the boxes are in.

    Returns:
        A list of bools, one per colour/shape word found (empty when the
        caption does not name the two objects).

    Example:

    >>> objects = [{"color": "red", "shape": "circle", "box": (0, 0, 8, 8)},
    ...            {"color": "blue", "shape": "square", "box": (24, 24, 32, 32)}]
    >>> maps = np.zeros((7, 4, 4)); maps[1, 0, 0] = maps[2, 0, 0] = 1; maps[5, 3, 3] = 1
    >>> maps[6, 0, 0] = 1  # "square" looks at the circle
    >>> attention_hits("a red circle above a blue square".split(), maps, objects, 32)
    [True, True, True, False]
    """
    from keras_attention.visualize import cell_box

    words = [t for t in tokens if t != "[END]"]
    named = [i for i, word in enumerate(words) if word in COLOR_SHAPE_WORDS]
    if len(named) != 4:
        return []
    first = (words[named[0]], words[named[1]])
    order = objects if first == (objects[0]["color"], objects[0]["shape"]) else objects[::-1]
    hits = []
    for k, position in enumerate(named):
        box = order[k // 2]["box"]
        grid = np.asarray(maps[position])
        row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
        y0, x0, y1, x1 = cell_box(row, col, grid.shape, (image_size, image_size))
        hits.append(bool(y0 < box[2] and box[0] < y1 and x0 < box[3] and box[1] < x1))
    return hits


def attention_hit_rate(captioner, images, objects):
    """The fraction of colour/shape words whose attention peak lies on their object."""
    result = captioner.caption_with_attention(images)
    hits = [
        hit
        for tokens, maps, scene in zip(result["tokens"], result["attention"], objects, strict=True)
        for hit in attention_hits(tokens, maps, scene, captioner.preprocessor.image_size)
    ]
    return (float(np.mean(hits)) if hits else 0.0), len(hits), result


def run(output_dir="outputs/demo", base_dir="saved_models", num_examples=None, num_test=None,
        epochs=None, seed=0, verbose=1, overwrite=False, **options):  # fmt: skip
    """Writes scenes to disk, trains a captioner on them, reports, plots, exports and reloads.

    Args:
        output_dir: where the data (`scenes/`), the run (`captioning_run/`)
            and `caption_attention.png` go; when it holds an earlier run, a
            new numbered directory beside it (`outputs/demo-2`, ...).
            Defaults to `"outputs/demo"`.
        base_dir: the TF Serving base directory of the export (a new version
            of `scene_captioner` each run). Defaults to `"saved_models"`.
        num_examples, num_test, epochs: the training scenes, held-out
            scenes and epochs. Default to `DEFAULTS`.
        seed: int. Defaults to `0`.
        verbose: Keras progress output. Defaults to `1`.
        overwrite: bool, write into `output_dir` even when it holds an
            earlier run. Defaults to `False`.
        **options: more `CaptioningConfig` or `FitConfig` fields (`units`,
            `attention`, `decoder`, `batch_size`, `learning_rate`, ...).

    Returns:
        A dict: `"exact_match"`, `"bleu_4"`, `"attention_hit_rate"`,
        `"num_words_checked"`, `"samples"`, `"reloaded_match"`, `"png"`,
        `"export_path"`, `"run_dir"`, `"output_dir"`, `"train_seconds"`,
        `"total_seconds"`.
    """
    from keras_attention.export import export_task
    from keras_attention.tasks import CaptioningConfig, ServedTask
    from keras_attention.training import FitConfig, train

    settings = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    counts = {
        name: positive_int("captioning demo", name, given or settings[name])
        for name, given in (("num_examples", num_examples), ("num_test", num_test),
                            ("epochs", epochs))
    }  # fmt: skip
    num_examples, num_test, epochs = counts.values()
    settings = {name: value for name, value in settings.items() if name not in counts}
    output_dir = new_output_dir(output_dir, overwrite, "captioning demo")
    start = time.perf_counter()
    scenes = os.path.join(output_dir, "scenes")
    # One caption per scene (the upper or left object first): with both orders allowed, the
    # first words are right whichever object the attention picks, and it spreads over both.
    train_files, test_files = (
        synthetic.write_shape_scenes(
            os.path.join(scenes, split), count, settings["image_size"], seed=seed + offset,
            overwrite=True, captions_per_image=1,
        )  # fmt: skip
        for split, count, offset in (("train", num_examples, 0), ("test", num_test, 1))
    )
    fit_fields = {"batch_size", "learning_rate", "clipnorm", "schedule", "warmup_steps"}
    fit_options = {k: settings.pop(k) for k in list(settings) if k in fit_fields}
    config = CaptioningConfig(**settings)
    print(
        f"captioning demo: {num_examples:,} generated scenes written to {scenes} (JPEG + COCO "
        f"JSON + Flickr8k tokens + TSV); training a {config.decoder} captioner with "
        f"{config.attention} attention for {epochs} epoch(s)",
        flush=True,
    )
    run_dir = os.path.join(output_dir, "captioning_run")
    training = train(
        "captioning",
        (train_files["images"], train_files["coco"], False),
        run_dir,
        config=config,
        fit_config=FitConfig(epochs=epochs, seed=seed, verbose=verbose, **fit_options),
        resume=False,
        overwrite=True,
    )
    captioner = training.task
    test_data = (test_files["images"], test_files["coco"], False)
    scores = captioner.evaluate(test_data)
    for line in captioner.summarize(scores, split="held-out scenes"):
        print(line)
    paths, _ = captioner.read_data(test_data)
    with open(test_files["objects"], encoding="utf-8") as f:
        boxes = json.load(f)
    objects = [boxes[os.path.basename(path)] for path in paths]
    rate, checked, result = attention_hit_rate(captioner, paths, objects)
    print(f"attention peak on the named object: {rate:.2%} of {checked} colour/shape words")
    png = os.path.join(output_dir, PNG_NAME)
    if captioner.write_attention_png(result, 0, os.path.basename(paths[0]), png):
        print(f"per-word attention overlay of {os.path.basename(paths[0])} written to {png}")
    export_path = export_task(captioner, base_dir, name=EXPORT_NAME)
    served = ServedTask(export_path).predict(paths[:32])
    reloaded_match = served == captioner.caption(paths[:32])
    print(f"SavedModel written to {export_path}; reloaded, it captions the held-out files "
          f"{'identically' if reloaded_match else 'DIFFERENTLY'}")  # fmt: skip
    total = time.perf_counter() - start
    print(f"demo finished in {total:.0f} s")
    return {
        "exact_match": scores["exact_match"],
        "bleu_4": scores.get("bleu_4"),
        "attention_hit_rate": rate,
        "num_words_checked": checked,
        "samples": scores["samples"],
        "reloaded_match": reloaded_match,
        "png": png,
        "export_path": export_path,
        "run_dir": run_dir,
        "output_dir": output_dir,
        "train_seconds": training.train_seconds,
        "total_seconds": total,
    }
