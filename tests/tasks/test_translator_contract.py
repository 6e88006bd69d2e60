"""Both translators, as backbones and as `Translator` tasks, against the model contract."""

import keras
import numpy as np
import pytest

from keras_attention.models import seq2seq_translator, transformer_translator
from keras_attention.tasks import Translator
from pipelines.text import TextTokenizer
from tests.model_contract import ModelSpec, model_checks

VOCABULARY = [
    *["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", ".", "/"],
    *[str(d) for d in range(10)],
    *[f"##{d}" for d in range(10)],
    *["##st", "##nd", "##rd", "##th", "the", "of", "march", "october", "jan", "wed"],
]
SOURCE = np.array([[5, 6, 7, 8, 9, 0], [10, 11, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]], "int32")
TARGET_IN = np.array([[2, 12, 13, 14, 0], [2, 15, 16, 0, 0], [2, 17, 18, 19, 20]], "int32")
# The empty string, an input far longer than the sources kept, non-ASCII text, plain dates.
TEXTS = ["", "the 13th of october 1980, " * 6, "3. März 2021 über…", "wed 24 jan 2035", "3/11"]


def _seeded(build):
    def make():
        keras.utils.set_random_seed(0)
        return build()

    return make


def _translator(backbone):
    tokenizer = TextTokenizer(VOCABULARY, lowercase=True)
    return Translator(backbone, tokenizer, tokenizer, source_sequence_length=10, max_length=8)


SPECS = [
    ModelSpec(
        "seq2seq",
        _seeded(lambda: seq2seq_translator(len(VOCABULARY), len(VOCABULARY), 8, units=16)),
        {"source": SOURCE, "target_in": TARGET_IN},
        decoder=True,
        make_task=_translator,
        texts=TEXTS,
    ),
    ModelSpec(
        "transformer",
        _seeded(
            lambda: transformer_translator(
                len(VOCABULARY), len(VOCABULARY), sequence_length=12, num_layers=2,
                hidden_dim=16, num_heads=2, intermediate_dim=32, normalize_first=True,
            )  # fmt: skip
        ),
        {"source": SOURCE, "target_in": TARGET_IN},
        decoder=True,
        make_task=_translator,
        texts=TEXTS,
    ),
]


@pytest.mark.parametrize(("spec", "check"), model_checks(*SPECS))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
