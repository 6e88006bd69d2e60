"""Tiny decoders with peaked weights, and the greedy decodings `test_generation.py` compares.

A GPT causal LM continues ragged prompts with `generate`; the two translators decode a ragged
batch of sources with `greedy_search` over `translator_decoding(model).step_fn`. TensorFlow's
side is one subprocess (`KERAS_BACKEND=tensorflow python -m tests.backends.decoders DIR`, see
`tensorflow_reference`): asked for a model, it rebuilds it, loads `DIR/<model>.weights.h5`
(written by the test process) and answers its decodings.
"""

import pathlib
import sys

import keras
import numpy as np

from keras_attention.generation import beam_search, generate, greedy_search
from keras_attention.models import (
    gpt_causal_lm,
    seq2seq_translator,
    transformer_translator,
    translator_decoding,
)
from tests.backends.tensorflow_reference import serve

VOCABULARY_SIZE = 24
START, END = 1, 2
# The causal LM: 6 prompts of 1..6 tokens, left-aligned, continued to 12 tokens.
MAX_LENGTH = 12
PROMPT_LENGTHS = np.array([1, 2, 3, 4, 5, 6])
PROMPT_MASK = np.arange(6)[None] < PROMPT_LENGTHS[:, None]
PROMPTS = np.where(
    PROMPT_MASK, np.random.default_rng(0).integers(3, VOCABULARY_SIZE, (6, 6)), 0
).astype("int32")
# The translators: 4 sources of 6, 4, 2 and 1 tokens, decoded for up to 7 tokens.
SOURCE = np.where(
    np.arange(6)[None] < np.array([6, 4, 2, 1])[:, None],
    np.random.default_rng(1).integers(3, 20, (4, 6)),
    0,
).astype("int32")
DECODE_LENGTH = 7
# name: (standard deviation of the random weights, seed, what the end token's bias gains)
MODELS = {
    "gpt_causal_lm": (0.3, 0, 0.0),
    "transformer_translator": (0.5, 2, 2.0),
    "seq2seq_translator": (1.0, 1, 2.0),
}


def make_model(name):
    """A model of `MODELS` with large random weights, so that its logits have clear argmaxes.

    The translators never emit padding (a teacher-forced pass would mask it), and some of their
    rows end early.
    """
    keras.utils.set_random_seed(0)
    if name == "gpt_causal_lm":
        model = gpt_causal_lm(VOCABULARY_SIZE, num_layers=2, hidden_dim=16, num_heads=4,
                              intermediate_dim=32, max_sequence_length=16, dropout=0.0)  # fmt: skip
    elif name == "transformer_translator":
        model = transformer_translator(20, VOCABULARY_SIZE, sequence_length=8, num_layers=2,
                                       hidden_dim=16, num_heads=2, intermediate_dim=32,
                                       dropout=0.0, normalize_first=True)  # fmt: skip
    else:
        model = seq2seq_translator(20, VOCABULARY_SIZE, embedding_dim=6, units=8, cell="lstm",
                                   score="general", style="luong")  # fmt: skip
    scale, seed, end_bias = MODELS[name]
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = scale * rng.standard_normal(weight.shape) + ("gamma" in weight.path)
        weight.assign(value.astype("float32"))
    if name != "gpt_causal_lm":
        bias = numpy(model.output_layer.bias).copy()
        bias[0], bias[END] = -30.0, bias[END] + end_bias
        model.output_layer.bias.assign(bias)
    return model


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def decode(name, model):
    """The decodings of a model (greedy; beam search for the LM), as lists: `{decoding: {field: values}}`."""
    if name == "gpt_causal_lm":
        # The step compiled with `jax.jit` on JAX; TensorFlow's loop without XLA (the same tokens,
        # `tests/generation` shows, and no XLA compilation to wait for).
        jit_compile = keras.backend.backend() != "tensorflow"
        tokens, scores = generate(model, PROMPTS, PROMPT_MASK, max_length=MAX_LENGTH,
                                  return_scores=True, jit_compile=jit_compile)  # fmt: skip
        with_options = generate(
            model, PROMPTS, PROMPT_MASK, max_length=MAX_LENGTH, max_new_tokens=4,
            stop_token_ids=[int(numpy(tokens)[0, 1]), int(numpy(tokens)[2, 3])],
            suppress_token_ids=[0], repetition_penalty=1.5,
            jit_compile=jit_compile,
        )  # fmt: skip
        beam = {}
        for width, kwargs in ((3, {}), (4, {"stop_token_ids": [int(numpy(tokens)[1, 3])],
                                             "repetition_penalty": 1.5, "max_new_tokens": 5})):
            beam_tokens, beam_scores = generate(
                model, PROMPTS, PROMPT_MASK, max_length=MAX_LENGTH, sampler="beam",
                beam_width=width, return_scores=True, jit_compile=jit_compile, **kwargs,
            )  # fmt: skip
            beam[f"beam_{width}"] = {"tokens": numpy(beam_tokens).tolist(),
                                     "scores": numpy(beam_scores).tolist()}  # fmt: skip
        return {
            "greedy": {"tokens": numpy(tokens).tolist(), "scores": numpy(scores).tolist()},
            "options": {"tokens": numpy(with_options).tolist()},
            **beam,
        }
    decoding = translator_decoding(model)
    output = greedy_search(decoding.step_fn, decoding.encode(SOURCE), [START] * len(SOURCE), END,
                           DECODE_LENGTH)  # fmt: skip
    beam = beam_search(decoding.step_fn, decoding.encode(SOURCE), [START] * len(SOURCE), END,
                       DECODE_LENGTH, beam_width=3)  # fmt: skip
    fields = ("tokens", "lengths", "scores")
    return {
        "greedy": {field: numpy(getattr(output, field)).tolist() for field in fields},
        "beam": {field: numpy(getattr(beam, field)).tolist()
                 for field in fields + ("normalized_scores",)},  # fmt: skip
    }


def main(directory):
    """Answers TensorFlow's decodings of the models asked for, from the weights in `directory`."""
    directory = pathlib.Path(directory)

    def compute(name):
        model = make_model(name)
        model.load_weights(directory / f"{name}.weights.h5")
        return decode(name, model)

    serve(compute)


if __name__ == "__main__":
    main(sys.argv[1])
