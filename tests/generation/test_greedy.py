import numpy as np
import pytest
import tensorflow as tf

from keras_attention.generation import beam_search, greedy_search, sample
from tests.generation.tables import END, PAD, START, TableModel, numpy, random_tables


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_numpy(seed, history):
    model = TableModel(random_tables(seed, batch=4, max_length=5, vocab=6), history, seed)
    out = numpy(greedy_search(model.step_fn, model.initial_state(), [START] * 4, END, 5))
    for row in range(4):
        tokens, score, length = model.greedy(row, START)
        np.testing.assert_array_equal(out["tokens"][row], tokens)
        assert out["lengths"][row] == length
        np.testing.assert_allclose(out["scores"][row], score, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out["normalized_scores"], out["scores"])


def _scripted_tables(script, max_length, vocab=6):
    """Tables whose row `b` emits `script[b][t]` at step `t` (probability ~1)."""
    tables = np.zeros((len(script), max_length, vocab, vocab), "float32")
    for row, tokens in enumerate(script):
        for step, token in enumerate(tokens):
            tables[row, step, :, token] = 30.0
    return tables


@pytest.mark.parametrize("decoder", ["greedy", "beam", "sample"])
def test_end_token_pads_and_stops_early(decoder):
    # Row 0 ends at step 2, row 1 at step 0, row 2 at step 3; the table would go on without END.
    script = [[3, 4, END, 5, 5, 5, 5], [END, 3, 3, 3, 3, 3, 3], [5, 5, 4, END, 3, 3, 3]]
    model = TableModel(_scripted_tables(script, max_length=7))
    decode = {
        "greedy": lambda *a: greedy_search(*a, pad_id=PAD),
        "beam": lambda *a: beam_search(*a, beam_width=3, pad_id=PAD),
        "sample": lambda *a: sample(*a, top_k=2, seed=3, pad_id=PAD),
    }[decoder]
    out = numpy(decode(model.step_fn, model.initial_state(), [START] * 3, END, 7))
    np.testing.assert_array_equal(
        out["tokens"], [[3, 4, END, 0, 0, 0, 0], [END, 0, 0, 0, 0, 0, 0], [5, 5, 4, END, 0, 0, 0]]
    )
    np.testing.assert_array_equal(out["lengths"], [3, 1, 4])
    np.testing.assert_allclose(out["scores"], 0.0, atol=1e-6)  # every token has probability ~1
    assert model.calls == 4  # the loop stopped when the last row ended, not after 7 steps


@pytest.mark.parametrize("decoder", ["greedy", "beam", "sample"])
def test_no_end_token_gives_max_length(decoder):
    model = TableModel(_scripted_tables([[3, 4, 5, 3], [4, 4, 4, 4]], max_length=4))
    decode = {"greedy": greedy_search, "beam": beam_search, "sample": sample}[decoder]
    out = numpy(decode(model.step_fn, model.initial_state(), [START, START], END, 4))
    np.testing.assert_array_equal(out["tokens"], [[3, 4, 5, 3], [4, 4, 4, 4]])
    np.testing.assert_array_equal(out["lengths"], [4, 4])


def test_pad_id_is_written_after_the_end():
    model = TableModel(_scripted_tables([[3, END, 4, 4]], max_length=4))
    out = greedy_search(model.step_fn, model.initial_state(), [START], END, 4, pad_id=5)
    np.testing.assert_array_equal(out.tokens, [[3, END, 5, 5]])


def _table_step(token_ids, state, step):
    return tf.one_hot(token_ids, 5), state


def _bad_structure(token_ids, state, step):
    return tf.one_hot(token_ids, 5), (state, state)


def _bad_dtype(token_ids, state, step):
    return tf.one_hot(token_ids, 5), tf.cast(state, tf.int32)


def _bad_logits(token_ids, state, step):
    return tf.one_hot(token_ids, 5)[:, None], state


def _bad_return(token_ids, state, step):
    return tf.one_hot(token_ids, 5)


STATE = tf.zeros([2, 3])
BAD_CALLS = [
    (greedy_search, {"max_length": 0}, "max_length"),
    (greedy_search, {"max_length": 2.0}, "max_length"),
    (greedy_search, {"end_id": -1}, "end_id"),
    (greedy_search, {"end_id": 7}, "end_id"),  # not in the vocabulary of 5
    (greedy_search, {"pad_id": True}, "pad_id"),
    (greedy_search, {"start_ids": [[2, 2]]}, "start_ids"),
    (greedy_search, {"start_ids": [2.0, 2.0]}, "start_ids"),
    (greedy_search, {"state": tf.zeros([])}, "state"),
    (greedy_search, {"step_fn": _bad_structure}, "structure"),
    (greedy_search, {"step_fn": _bad_dtype}, "dtypes"),
    (greedy_search, {"step_fn": _bad_logits}, "logits"),
    (greedy_search, {"step_fn": _bad_return}, r"\(logits, new_state\)"),
    (beam_search, {"beam_width": 0}, "beam_width"),
    (beam_search, {"max_length": -3}, "max_length"),
    (beam_search, {"length_penalty": -0.5}, "length_penalty"),
    (beam_search, {"length_penalty": float("nan")}, "length_penalty"),
    (beam_search, {"keep_greedy": 1}, "keep_greedy"),
    (beam_search, {"start_ids": 2}, "start_ids"),
    (sample, {"top_k": 0}, "top_k"),
    (sample, {"top_p": 0.0}, "top_p"),
    (sample, {"top_p": 1.5}, "top_p"),
    (sample, {"temperature": 0.0}, "temperature"),
    (sample, {"temperature": -1.0}, "temperature"),
    (sample, {"seed": 1.5}, "seed"),
    (sample, {"max_length": 0}, "max_length"),
]


@pytest.mark.parametrize(("decoder", "bad", "match"), BAD_CALLS)
def test_invalid_arguments_raise(decoder, bad, match):
    arguments = {
        "step_fn": _table_step,
        "state": STATE,
        "start_ids": [2, 2],
        "end_id": 1,
        "max_length": 3,
        **bad,
    }
    with pytest.raises(ValueError, match=match):
        decoder(**arguments)
