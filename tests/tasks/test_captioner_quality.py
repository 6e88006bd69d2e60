"""Captioners trained on generated scenes written to disk (the path users' data takes) learn."""

import json
import os

import numpy as np
import pytest

from keras_attention.demos.captioning import attention_hit_rate
from keras_attention.tasks import CaptioningConfig
from keras_attention.training import FitConfig, train
from pipelines import synthetic

# One caption per scene, so the object named first is fixed by the picture (see `shape_scenes`),
# and the context reaches the output only (`context_input=False`), so each colour and shape word
# has to be looked up when it is said (README, "where it looks"). Per case: options, training
# scenes, epochs, the exact-match floor and the floor of the fraction of colour/shape words whose
# attention peak lies on their object. Hard attention put 92-99% of its peaks on the object in every run, soft
# attention 67-91% from run to run (its peak is often the neighbouring cell, whose features see
# the object too), so soft gets the lower floor there. Soft captions were right for 99.7-100% of
# the scenes; hard ones for 90-98% from 5,000 scenes (cells are sampled while training) and 100%
# from 8,000, which the hard case trains on. Batches of 128 (64 before stop 31) halve the time of
# each case (about 110 s instead of 220 s on 2 cores): with them soft reached 99.5% exact and 77%
# of the peaks, hard 99.0% and 100%. Hard trains 7 epochs since stop 39 (10 before stop 32, 8
# until stop 39; after 7: 100% and 100%, and 96.5% and 100% on stop 39; 93% from 6,000 scenes in
# 9); soft after 8 epochs still named 5% of the scenes right.
CASES = {
    "soft": ({"initial_state": "zeros", "context_input": False}, 5000, 12, 0.9, 0.6),
    "hard": ({"context_input": False}, 8000, 7, 0.9, 0.8),
}


@pytest.mark.slow
@pytest.mark.parametrize("attention", list(CASES))
def test_captioner_learns_generated_scenes(attention, tmp_path):
    options, scenes, epochs, exact_floor, hit_floor = CASES[attention]
    train_files, test_files = (
        synthetic.write_shape_scenes(tmp_path / split, count, 32, seed=seed, captions_per_image=1)
        for split, count, seed in (("train", scenes, 1), ("test", 200, 99))
    )
    config = CaptioningConfig(attention=attention, units=128, embedding_dim=64, **options)
    run = train(
        "captioning",
        (train_files["images"], train_files["coco"], False),
        tmp_path / "run",
        config=config,
        fit_config=FitConfig(
            epochs=epochs, batch_size=128, learning_rate=3e-3, clipnorm=1.0, verbose=0
        ),
    )
    captioner = run.task
    data = (test_files["images"], test_files["coco"], False)
    scores = captioner.evaluate(data)
    assert scores["exact_match"] >= exact_floor, scores
    paths, _ = captioner.read_data(data)
    with open(test_files["objects"], encoding="utf-8") as f:
        boxes = json.load(f)
    rate, checked, _ = attention_hit_rate(
        captioner, paths, [boxes[os.path.basename(p)] for p in paths]
    )
    # Each colour and shape word: the attention peak lies on the object it names.
    assert checked >= 700 and rate >= hit_floor, (rate, checked)
    assert np.isfinite(run.history["loss"]).all()
