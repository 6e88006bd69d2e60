"""The BERT models as backbones and as `MaskedLM`, `TextClassifier`, `TokenClassifier` tasks."""

import keras
import numpy as np
import pytest

from keras_attention.models import bert_classifier, bert_masked_lm, bert_token_classifier
from keras_attention.tasks import ClassifierPreprocessor, MaskedLM, TextClassifier, TokenClassifier
from pipelines.masked_lm import MaskedLMPreprocessor
from pipelines.synthetic import GRAMMAR_TAGS
from pipelines.text import TextTokenizer
from tests.model_contract import ModelSpec, model_checks

RESERVED = ("[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]")
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "caf", "##e", "e", ".", "##s"]
VOCABULARY = [*RESERVED, *WORDS]
SEQUENCE_LENGTH = 16
SIZES = {"num_layers": 2, "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32,
         "max_sequence_length": SEQUENCE_LENGTH}  # fmt: skip
TEXTS = [
    "",
    "the [MASK] sat on the mat " * 6 + "[MASK]",  # over-long: the last [MASK] is cut off
    "a café [MASK] ü 日本",
    "the [MASK] sat on the [MASK] .",
]
LABELS = ("negative", "positive")

rng = np.random.default_rng(0)
TOKEN_IDS = rng.integers(7, len(VOCABULARY), (3, 10)).astype("int32")
PADDING = np.array([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7], "int32")
INPUTS = {
    "token_ids": TOKEN_IDS * PADDING,
    "padding_mask": PADDING,
    "segment_ids": np.array([[0] * 5 + [1] * 5, [0] * 10, [0] * 10], "int32"),
}


def tokenizer():
    return TextTokenizer(VOCABULARY, lowercase=True, reserved_tokens=RESERVED)


def _seeded(build):
    def make():
        keras.utils.set_random_seed(0)
        return build()

    return make


SPECS = [
    ModelSpec(
        "masked_lm",
        _seeded(lambda: bert_masked_lm(len(VOCABULARY), **SIZES)),
        {**INPUTS, "mask_positions": np.array([[1, 2], [3, 0], [1, 1]], "int32")},
        make_task=lambda backbone: MaskedLM(
            backbone, MaskedLMPreprocessor(tokenizer(), SEQUENCE_LENGTH), top_k=3
        ),
        texts=TEXTS,
        tflite=False,
    ),
    ModelSpec(
        "classifier",
        _seeded(lambda: bert_classifier(2, vocabulary_size=len(VOCABULARY), **SIZES)),
        INPUTS,
        make_task=lambda backbone: TextClassifier(
            backbone, ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, LABELS)
        ),
        texts=[t.replace("[MASK]", "dog") for t in TEXTS],
    ),
    ModelSpec(
        "token_classifier",
        _seeded(lambda: bert_token_classifier(len(GRAMMAR_TAGS), vocabulary_size=len(VOCABULARY),
                                              **SIZES)),  # fmt: skip
        INPUTS,
        make_task=lambda backbone: TokenClassifier(
            backbone, ClassifierPreprocessor(tokenizer(), SEQUENCE_LENGTH, GRAMMAR_TAGS)
        ),
        texts=[t.replace("[MASK]", "dog") for t in TEXTS],
        tflite=False,
    ),
]


@pytest.mark.parametrize(("spec", "check"), model_checks(*SPECS))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
