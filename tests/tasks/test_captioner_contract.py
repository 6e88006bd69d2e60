"""The captioners, as backbones and as `Captioner` tasks, against the model contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.models import ShowAttendTellCaptioner, TransformerCaptioner
from keras_attention.tasks import Captioner
from pipelines import synthetic
from pipelines.captioning import CaptioningPreprocessor
from pipelines.text import TextTokenizer
from tests.model_contract import ModelSpec, model_checks

WORDS = sorted(
    {*synthetic.SCENE_COLORS, *synthetic.SCENE_SHAPES, "a", "above", "below", "left",
     "right", "of"}
)  # fmt: skip
VOCABULARY = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", *WORDS]
SCENES = synthetic.shape_scenes(3, image_size=32, seed=3)["images"]
IMAGES = SCENES.astype("float32")
TARGET_IN = np.array([[2, 5, 6, 7, 0], [2, 8, 0, 0, 0], [2, 9, 10, 11, 12]], "int32")
# A JPEG, a PNG, a grayscale PNG of another size, and bytes that are not an image.
INPUTS = [
    tf.io.encode_jpeg(SCENES[0]).numpy(),
    tf.io.encode_png(SCENES[1]).numpy(),
    tf.io.encode_png(np.full((20, 48, 1), 128, "uint8")).numpy(),
    b"not an image",
]


def _seeded(build):
    def make():
        keras.utils.set_random_seed(0)
        return build()

    return make


def _captioner(backbone):
    preprocessor = CaptioningPreprocessor(TextTokenizer(VOCABULARY), image_size=32,
                                          sequence_length=8)  # fmt: skip
    return Captioner(backbone, preprocessor)


def _spec(name, build):
    return ModelSpec(
        name,
        _seeded(build),
        {"images": IMAGES, "target_in": TARGET_IN},
        decoder=True,
        make_task=_captioner,
        texts=INPUTS,
    )


SPECS = [
    _spec("soft", lambda: ShowAttendTellCaptioner(len(VOCABULARY), 32, units=16,
                                                  embedding_dim=8)),  # fmt: skip
    _spec(
        "hard",
        lambda: ShowAttendTellCaptioner(
            len(VOCABULARY), 32, units=16, embedding_dim=8, attention="hard", feature_dim=12
        ),
    ),
    _spec(
        "transformer",
        lambda: TransformerCaptioner(
            len(VOCABULARY), 32, sequence_length=8, num_layers=2, num_encoder_layers=1,
            hidden_dim=16, num_heads=2, intermediate_dim=16, normalize_first=True,
        ),  # fmt: skip
    ),
]


@pytest.mark.parametrize(("spec", "check"), model_checks(*SPECS))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
