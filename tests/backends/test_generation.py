"""Generation on the current backend: the tokens of TensorFlow and of the uncached model.

A GPT causal LM continues ragged prompts with `generate`; a Transformer and an RNN translator
decode with `greedy_search` over `translator_decoding(model).step_fn` (see
`tests/backends/decoders.py`). Off TensorFlow the tokens equal TensorFlow's for the same
weights (one TensorFlow subprocess for the module); on every backend each generated token is
the argmax of the full, uncached model run on the tokens before it; `generate(sampler="beam")`
keeps TensorFlow's hypotheses and scores. `generate(sampler="sample")`
(every backend; its draws differ from TensorFlow's off TensorFlow): seeded, within top-k / top-p,
with the softmax's frequencies.
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
from tests.backends.tensorflow_reference import reference_fixture

BACKEND = keras.backend.backend()
off_tensorflow = pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is the reference")


tensorflow = reference_fixture("tests.backends.decoders", "decode")  # the TensorFlow subprocess (None on TF)


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
        for beam in ("beam_3", "beam_4"):  # beam search keeps TensorFlow's hypotheses
            np.testing.assert_array_equal(decodings[beam]["tokens"], expected[beam]["tokens"])
            np.testing.assert_allclose(
                decodings[beam]["scores"], expected[beam]["scores"], rtol=1e-4, atol=1e-5
            )


def test_beam_search_of_width_one_is_greedy_and_wider_beams_score_no_lower():
    model = make_model("gpt_causal_lm")
    arguments = {"token_ids": PROMPTS, "padding_mask": PROMPT_MASK, "max_length": MAX_LENGTH,
                 "return_scores": True}  # fmt: skip
    greedy, greedy_scores = (numpy(x) for x in generate(model, **arguments))
    one, one_scores = (numpy(x) for x in generate(model, **arguments, sampler="beam",
                                                  beam_width=1))  # fmt: skip
    np.testing.assert_array_equal(one, greedy)
    np.testing.assert_allclose(one_scores, greedy_scores, rtol=1e-5, atol=1e-6)
    # No stop tokens: every hypothesis has the same length, so the penalty ranks as the scores.
    wide, wide_scores = (numpy(x) for x in generate(model, **arguments, sampler="beam",
                                                    beam_width=4))  # fmt: skip
    np.testing.assert_array_equal(wide[:, :6][PROMPT_MASK], PROMPTS[PROMPT_MASK])
    assert (wide_scores >= greedy_scores - 1e-5).all(), (wide_scores, greedy_scores)
    logits = _uncached_logits(model, wide)  # the scores are the uncached model's
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    chosen = np.take_along_axis(log_probs, wide[:, 1:, None], -1)[..., 0]
    generated = (np.arange(MAX_LENGTH)[None] >= PROMPT_LENGTHS[:, None])[:, 1:]
    np.testing.assert_allclose(wide_scores, (chosen * generated).sum(1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["transformer_translator", "seq2seq_translator"])
def test_translator_greedy_and_beam_search_match_tensorflow_and_the_uncached_model(
    name, tensorflow
):
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
    beam = {field: np.array(values) for field, values in decodings["beam"].items()}
    # The beam keeps greedy search's hypothesis, so it ranks at least as high.
    greedy_normalized = np.array(decodings["greedy"]["scores"]) / ((5 + lengths) / 6) ** 0.6
    assert (beam["normalized_scores"] >= greedy_normalized - 1e-5).all()
    if expected is not None:
        for decoder in ("greedy", "beam"):  # beam search keeps TensorFlow's hypotheses too
            for field in ("tokens", "lengths"):
                np.testing.assert_array_equal(decodings[decoder][field], expected[decoder][field])
            np.testing.assert_allclose(
                decodings[decoder]["scores"], expected[decoder]["scores"], rtol=1e-4, atol=1e-5
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


def _uncached_logits(model, tokens):
    """`(B, T - 1, V)`: the logits of position `t` given the tokens before it, in one pass."""
    return numpy(model({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))[:, :-1]


def test_sampling_reproduces_with_a_seed_and_keeps_to_top_k_and_top_p():
    model = make_model("gpt_causal_lm")
    arguments = {"token_ids": PROMPTS, "padding_mask": PROMPT_MASK, "max_length": MAX_LENGTH}
    greedy = numpy(generate(model, **arguments))

    def sample(**kwargs):
        return numpy(generate(model, **arguments, sampler="sample", **kwargs))

    for degenerate in ({"top_k": 1, "seed": 3}, {"temperature": 0.0}, {"top_p": 1e-6, "seed": 4}):
        np.testing.assert_array_equal(sample(**degenerate), greedy, err_msg=str(degenerate))
    hot = {"temperature": 5.0}
    first = sample(**hot, seed=11)
    np.testing.assert_array_equal(sample(**hot, seed=11), first)  # the seed reproduces
    assert not np.array_equal(sample(**hot, seed=12), first)  # another seed draws otherwise
    generated = (np.arange(MAX_LENGTH)[None] >= PROMPT_LENGTHS[:, None])[:, 1:]
    np.testing.assert_array_equal(first[:, :6][PROMPT_MASK], PROMPTS[PROMPT_MASK])
    for kwargs, allowed in (({"top_k": 2}, 2), ({"top_k": 3, "top_p": 0.5}, 3)):
        tokens = sample(**hot, seed=5, **kwargs)
        logits = _uncached_logits(model, tokens)
        ranks = (logits > np.take_along_axis(logits, tokens[:, 1:, None], -1)).sum(-1)
        assert ranks[generated].max() < allowed, (kwargs, ranks)
        if "top_p" in kwargs:  # every drawn token: the kept tokens above it hold < top_p
            scaled = logits / 5.0
            probs = np.exp(scaled - scaled.max(-1, keepdims=True))
            top3 = np.sort(probs, -1)[..., ::-1][..., :3]
            top3 /= top3.sum(-1, keepdims=True)
            before = np.cumsum(top3, -1) - top3
            rank = np.minimum(ranks, 2)[..., None]  # (prompt positions may rank anywhere)
            assert (np.take_along_axis(before, rank, -1)[..., 0][generated] < 0.5).all()


def test_sample_over_a_step_fn_keeps_to_the_nucleus_and_reproduces_with_a_seed():
    """`sample(step_fn, ...)`, the translators' sampler, on a table of next-token probabilities."""
    from keras_attention.generation import greedy_search, sample

    with np.errstate(divide="ignore"):
        table = np.log(np.array([[.2, .2, .2, .2, .2], [.2, .2, .2, .2, .2],
                                 [.0, .1, .0, .5, .4], [.0, .4, .0, .3, .3],
                                 [.0, .9, .0, .1, .0]], "float32"))  # fmt: skip

    def step_fn(token_ids, state, step):
        return keras.ops.convert_to_tensor(table[numpy(token_ids)]), state

    starts = [2] * 2000
    out = sample(step_fn, (), starts, 1, 6, top_p=0.8, seed=7)
    tokens, lengths, scores = (numpy(x) for x in (out.tokens, out.lengths, out.scores))
    firsts, counts = np.unique(tokens[:, 0], return_counts=True)
    assert firsts.tolist() == [3, 4]  # the nucleus of .5, .4, .1 at p = 0.8
    np.testing.assert_allclose(counts / len(starts), [5 / 9, 4 / 9], atol=0.04)
    np.testing.assert_array_equal(numpy(sample(step_fn, (), starts, 1, 6, top_p=0.8, seed=7).tokens),
                                  tokens)  # fmt: skip
    # Each row: the end token once, then padding; the score is the table's log-probabilities.
    ended = np.arange(6)[None] >= lengths[:, None]
    assert (tokens[ended] == 0).all() and (tokens[~ended] > 0).all()
    previous = np.concatenate([np.full((len(starts), 1), 2), tokens[:, :-1]], axis=1)
    expected = np.where(ended, 0.0, table[previous, tokens]).sum(1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    greedy = greedy_search(step_fn, (), starts[:3], 1, 6)
    np.testing.assert_array_equal(numpy(sample(step_fn, (), starts[:3], 1, 6, top_k=1).tokens),
                                  numpy(greedy.tokens))  # fmt: skip


def test_sampling_draws_with_the_softmax_probabilities():
    """400 rows of one prompt: first-token frequencies against softmax(logits / T) over top-k."""
    model = make_model("gpt_causal_lm")
    rows, temperature, top_k = 400, 4.0, 4
    prompts = np.repeat(PROMPTS[5:6], rows, axis=0)
    tokens = numpy(generate(model, prompts, np.ones_like(prompts, bool), max_length=7,
                            sampler="sample", temperature=temperature, top_k=top_k, seed=0))  # fmt: skip
    full = numpy(model({"token_ids": prompts[:1], "padding_mask": np.ones_like(prompts[:1])}))
    logits = full[0, -1] / temperature  # the position after the prompt
    kept = np.argsort(-logits, kind="stable")[:top_k]
    probs = np.exp(logits[kept] - logits[kept].max())
    probs /= probs.sum()
    counts = np.array([(tokens[:, 6] == token).sum() for token in kept])
    assert counts.sum() == rows  # nothing outside the top k
    sigma = np.sqrt(rows * probs * (1 - probs))
    assert (np.abs(counts - rows * probs) < 4 * sigma + 1).all(), (counts, rows * probs)


@off_tensorflow
def test_beam_search_takes_no_rows_of_entries_returned_unchanged(monkeypatch):
    """Off TensorFlow too (`_beam_search_loop`): an entry the step returns as it came in is never
    reordered, and the search equals that of a step returning a new tensor (reordered)."""
    from keras_attention.generation import beam_search

    rng = np.random.default_rng(3)
    table = keras.ops.convert_to_tensor(rng.normal(size=(6, 6)).astype("float32"))
    # Per example and token: it changes the decisions, and is the same in all beams of a row.
    offsets = rng.normal(size=(4, 6)).astype("float32")
    starts = [2, 3, 4, 5]

    def step_fn(copy):
        def step(token_ids, state, step):
            offset = state["offset"] + 0.0 if copy else state["offset"]
            history = state["history"] + keras.ops.cast(token_ids, "float32")
            logits = keras.ops.take(table, token_ids, axis=0) + offset + 0.1 * history[:, None]
            return logits, {"offset": offset, "history": history}

        return step

    original, taken = keras.ops.take, []

    def counting_take(x, indices, axis=None):
        if tuple(x.shape) == (12, 6):  # the offsets, 3 beams of 4 examples
            taken.append(x)
        return original(x, indices, axis=axis)

    monkeypatch.setattr(keras.ops, "take", counting_take)
    results = {}
    for copy in (False, True):
        taken.clear()
        state = {"offset": offsets, "history": np.zeros(4, "float32")}
        results[copy] = [numpy(x) for x in beam_search(step_fn(copy), state, starts, 1, 6, 3)]
        assert bool(taken) == copy
    for unchanged, reordered in zip(results[False], results[True], strict=True):
        np.testing.assert_array_equal(unchanged, reordered)
    no_offsets = {"offset": np.zeros((4, 6), "float32"), "history": np.zeros(4, "float32")}
    reference = numpy(beam_search(step_fn(False), no_offsets, starts, 1, 6, 3).tokens)
    assert not np.array_equal(results[False][0], reference)  # the offsets count


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch tensors alone change in place")
def test_beam_search_reorders_a_state_tensor_written_in_place():
    """A step that writes its history into the state tensor in place and returns the same
    object: reordered like a step that returns a new tensor (the same search)."""
    import torch

    from keras_attention.generation import beam_search

    rng = np.random.default_rng(0)
    table = torch.tensor(rng.normal(size=(6, 6)).astype("float32"))
    weights = torch.tensor(rng.normal(size=(8, 6)).astype("float32"))

    def step_fn(in_place):
        def step(token_ids, state, step):
            history = state["history"] if in_place else state["history"].clone()
            history[:, int(step)] = token_ids.float()
            # Every earlier token counts: a beam that kept another beam's history goes astray.
            logits = table[token_ids.long()] + 2.0 * torch.sin(history @ weights)
            logits[:, 1] -= 4.0  # the end token late, so that the beams live long
            return logits, {"history": history}

        return step

    results = []
    for in_place in (True, False):
        state = {"history": np.zeros((3, 8), "float32")}
        results.append([numpy(x) for x in beam_search(step_fn(in_place), state, [2, 3, 4], 1,
                                                       8, 3)])  # fmt: skip
    for in_place, copied in zip(*results, strict=True):
        np.testing.assert_array_equal(in_place, copied)


@off_tensorflow
def test_tensorflow_only_decoders_name_the_backend():
    from keras_attention.generation import sample_next

    with pytest.raises(NotImplementedError, match=rf"the Keras backend is '{BACKEND}'"):
        sample_next(np.zeros((1, 3), "float32"), np.zeros(2, "int32"))


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
