"""Greedy generation on the current backend: the tokens of TensorFlow and of the uncached model.

A GPT causal LM continues ragged prompts with `generate`; a Transformer and an RNN translator
decode with `greedy_search` over `translator_decoding(model).step_fn` (see
`tests/backends/decoders.py`). Off TensorFlow the tokens equal TensorFlow's for the same
weights (one TensorFlow subprocess for the module); on every backend each generated token is
the argmax of the full, uncached model run on the tokens before it.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_attention.generation import generate
from tests.backends.decoders import (
    DECODE_LENGTH,
    END,
    MAX_LENGTH,
    PROMPT_LENGTHS,
    PROMPT_MASK,
    PROMPTS,
    SOURCE,
    START,
    decode,
    make_model,
    numpy,
)
from tests.backends.tensorflow_reference import TensorFlowReference

BACKEND = keras.backend.backend()
off_tensorflow = pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the reference")


@pytest.fixture(scope="module")
def tensorflow(tmp_path_factory):
    """The TensorFlow subprocess (`None` on TensorFlow itself, the reference)."""
    if BACKEND == "tensorflow":
        yield None
        return
    reference = TensorFlowReference("tests.backends.decoders", tmp_path_factory.mktemp("decode"))
    yield reference
    reference.close()


def _decode(name, tensorflow):
    """The model, its decodings here and TensorFlow's (`None` on TensorFlow)."""
    model = make_model(name)
    if tensorflow is not None:
        model.save_weights(tensorflow.directory / f"{name}.weights.h5")
        tensorflow.ask(name)
    decodings = decode(name, model)
    return model, decodings, None if tensorflow is None else tensorflow.answer(name)


def test_generate_matches_tensorflow_and_the_uncached_model(tensorflow):
    model, decodings, expected = _decode("gpt_causal_lm", tensorflow)
    tokens = np.array(decodings["greedy"]["tokens"])
    assert tokens.shape == (len(PROMPTS), MAX_LENGTH)
    np.testing.assert_array_equal(tokens[:, :6][PROMPT_MASK], PROMPTS[PROMPT_MASK])
    # Uncached: position `t - 1` of one causal pass over the output sees the tokens before `t`.
    logits = numpy(model({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))
    generated = np.arange(MAX_LENGTH)[None] >= PROMPT_LENGTHS[:, None]  # (B, MAX_LENGTH)
    np.testing.assert_array_equal(
        tokens[:, 1:][generated[:, 1:]], logits[:, :-1].argmax(-1)[generated[:, 1:]]
    )
    shifted = logits[:, :-1] - logits[:, :-1].max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    chosen = np.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(
        decodings["greedy"]["scores"], (chosen * generated[:, 1:]).sum(1), rtol=1e-4, atol=1e-4
    )
    # With stop tokens, `max_new_tokens`, a suppressed token and a repetition penalty.
    options = np.array(decodings["options"]["tokens"])
    ended = options[:, 6:] == 0  # (every row stops or runs out of new tokens by then)
    assert ended[:, -1].all() and not ended[:, 0].all(), options
    if expected is not None:
        np.testing.assert_array_equal(tokens, expected["greedy"]["tokens"])
        np.testing.assert_allclose(
            decodings["greedy"]["scores"], expected["greedy"]["scores"], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_array_equal(options, expected["options"]["tokens"])


@pytest.mark.parametrize("name", ["transformer_translator", "seq2seq_translator"])
def test_translator_greedy_search_matches_tensorflow_and_the_uncached_model(name, tensorflow):
    model, decodings, expected = _decode(name, tensorflow)
    tokens, lengths = (np.array(decodings["greedy"][field]) for field in ("tokens", "lengths"))
    assert tokens.shape == (len(SOURCE), DECODE_LENGTH)
    assert 1 <= lengths.min() < lengths.max() == DECODE_LENGTH, lengths  # some rows end early
    ended = np.arange(DECODE_LENGTH)[None] >= lengths[:, None]
    assert (tokens[ended] == 0).all() and (tokens[~ended] > 0).all()
    # Uncached: the teacher-forced model on the start token and the decoded tokens.
    target_in = np.concatenate([np.full((len(SOURCE), 1), START), tokens[:, :-1]], 1)
    logits = numpy(model({"source": SOURCE, "target_in": target_in.astype("int32")}))
    np.testing.assert_array_equal(tokens[~ended], logits.argmax(-1)[~ended])
    assert all((tokens[row, : lengths[row]] == END).sum() <= 1 for row in range(len(SOURCE)))
    if expected is not None:
        for field in ("tokens", "lengths"):
            np.testing.assert_array_equal(decodings["greedy"][field], expected["greedy"][field])
        np.testing.assert_allclose(
            decodings["greedy"]["scores"], expected["greedy"]["scores"], rtol=1e-4, atol=1e-5
        )


def test_bad_arguments_are_named():
    from keras_attention.generation import greedy_search

    model = make_model("gpt_causal_lm")
    empty_row, right_aligned = PROMPT_MASK.copy(), PROMPT_MASK.copy()
    empty_row[2] = False
    right_aligned[1] = [False, True, True, False, False, False]
    for kwargs, message in (
        ({"temperature": -1.0}, r"Received: temperature=-1.0"),
        ({"max_new_tokens": 0}, r"Received: max_new_tokens=0"),
        ({"padding_mask": empty_row}, r"every prompt needs at least one token.*row 2"),
        ({"padding_mask": right_aligned}, r"prompts must be left-aligned"),
        ({"token_ids": PROMPTS.astype("float32")}, r"`token_ids` must be integer ids"),
        ({"max_length": 4}, r"the prompts are longer than `max_length`"),
    ):
        arguments = {"token_ids": PROMPTS, "padding_mask": PROMPT_MASK, "max_length": MAX_LENGTH}
        with pytest.raises(ValueError, match=message):
            generate(model, **{**arguments, **kwargs})

    def step_fn(token_ids, state, step):
        return keras.ops.ones((len(SOURCE), 5)), state

    with pytest.raises(ValueError, match=r"`start_ids` must be integer token ids"):
        greedy_search(step_fn, (), np.ones(len(SOURCE), "float32"), END, 3)
    with pytest.raises(ValueError, match=r"`step_fn` must return `\(logits, new_state\)`"):
        greedy_search(lambda *args: None, (), [START] * len(SOURCE), END, 3)
    with pytest.raises(ValueError, match=r"`end_id` must be a token of the vocabulary of size 5"):
        greedy_search(step_fn, (), [START] * len(SOURCE), 7, 3)


@off_tensorflow
def test_tensorflow_only_decoders_name_the_backend():
    from keras_attention.generation import beam_search, sample

    model = make_model("gpt_causal_lm")
    for sampler in ("beam", "sample"):
        with pytest.raises(ValueError, match=rf"sampler='{sampler}' runs on the TensorFlow "
                           rf"backend only; on the Keras backend '{BACKEND}'"):  # fmt: skip
            generate(model, PROMPTS, PROMPT_MASK, max_length=MAX_LENGTH, sampler=sampler)
    for decoder in (beam_search, sample):
        with pytest.raises(NotImplementedError, match=rf"the Keras backend is '{BACKEND}'"):
            decoder(lambda *args: None, (), [START], END, 3)


@off_tensorflow
def test_generation_imports_without_tensorflow():
    program = (
        "import sys\n"
        "from keras_attention.generation import GenerationOutput, SAMPLERS, generate, "
        "greedy_search\n"
        "import keras_attention.generation.generate as module\n"
        "assert callable(generate) and module is generate, module\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'tensorflow']\n"
        "assert not loaded, loaded[:5]\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
