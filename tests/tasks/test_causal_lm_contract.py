"""The GPT models as backbones and as the `CausalLM` task: the shared model contract."""

import keras
import numpy as np
import pytest

from keras_attention.models import gpt_backbone, gpt_causal_lm
from keras_attention.tasks import CausalLM
from pipelines.causal_lm import CausalLMPreprocessor
from pipelines.text import RESERVED_TOKENS, TextTokenizer
from tests.model_contract import ModelSpec, model_checks

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "caf", "##e", "e", ".", "##s"]
VOCABULARY = [*RESERVED_TOKENS, *WORDS]
SEQUENCE_LENGTH = 16
SIZES = {"num_layers": 2, "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32,
         "max_sequence_length": SEQUENCE_LENGTH, "dropout": 0.0}  # fmt: skip
TEXTS = ["", "the cat sat on the mat " * 6, "a café ü 日本", "the dog sat ."]

rng = np.random.default_rng(0)
PADDING = np.array([[1] * 10, [1] * 6 + [0] * 4, [1] * 3 + [0] * 7], "int32")
INPUTS = {
    "token_ids": rng.integers(5, len(VOCABULARY), (3, 10)).astype("int32") * PADDING,
    "padding_mask": PADDING,
}


def _seeded(build):
    def make():
        keras.utils.set_random_seed(0)
        return build()

    return make


def _task(backbone):
    preprocessor = CausalLMPreprocessor(TextTokenizer(VOCABULARY), SEQUENCE_LENGTH)
    return CausalLM(backbone, preprocessor, max_new_tokens=6)


SPECS = [
    ModelSpec(
        "causal_lm",
        _seeded(lambda: gpt_causal_lm(len(VOCABULARY), **SIZES)),
        INPUTS,
        causal=True,
        make_task=_task,
        texts=TEXTS,
        # Sampling with a fixed seed in the fresh process: the same tokens as in memory.
        signature_inputs={"generate": {"max_new_tokens": 5, "temperature": 0.8, "top_k": 6,
                                       "top_p": 0.9, "seed": 7}},  # fmt: skip
        empty_answer=False,  # an empty prompt is continued from [START] (status empty_input)
    ),
    ModelSpec(
        "causal_lm_rotary_gqa",
        _seeded(lambda: gpt_causal_lm(len(VOCABULARY), position_embedding="rotary",
                                      num_key_value_heads=1, **SIZES)),  # fmt: skip
        INPUTS,
        causal=True,
    ),
    ModelSpec(
        "gpt_backbone",
        _seeded(lambda: gpt_backbone(len(VOCABULARY), **SIZES)),
        INPUTS,
        causal=True,
    ),
]


@pytest.mark.parametrize(("spec", "check"), model_checks(*SPECS))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)
