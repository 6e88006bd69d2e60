import numpy as np
import pytest
import tensorflow as tf

from keras_attention.generation import beam_search, greedy_search, length_penalty
from tests.generation.tables import (
    END,
    PAD,
    START,
    TableModel,
    gnmt_penalty,
    hypothesis_count,
    numpy,
    random_tables,
)


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_width_one_is_greedy(alpha, history):
    model = TableModel(random_tables(int(alpha * 10), 12, 6, 7), history, seed=3)
    state, starts = model.initial_state(), [START, 3, 4, 5] * 3
    greedy = numpy(greedy_search(model.step_fn, state, starts, END, 6))
    beam = numpy(beam_search(model.step_fn, state, starts, END, 6, 1, length_penalty=alpha))
    for name in ("tokens", "lengths", "scores"):
        np.testing.assert_array_equal(beam[name], greedy[name])


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_finds_the_brute_force_best(alpha, history):
    """A beam as wide as every possible hypothesis prunes nothing: it returns the exact best.

    Six rows with their own random tables (six searches) per case.
    """
    vocab, max_length, rows = 4, 4, 6
    model = TableModel(random_tables(int(alpha * 10), rows, max_length, vocab), history, seed=1)
    width = hypothesis_count(vocab, max_length)  # 121
    out = beam_search(
        model.step_fn, model.initial_state(), [START] * rows, END, max_length, width, alpha
    )
    out = numpy(out)
    for row in range(rows):
        tokens, score, length, normalized = model.brute_force(row, START, alpha)
        np.testing.assert_array_equal(out["tokens"][row], tokens)
        assert out["lengths"][row] == length
        np.testing.assert_allclose(out["scores"][row], score, rtol=0, atol=1e-5)
        np.testing.assert_allclose(out["normalized_scores"][row], normalized, rtol=0, atol=1e-5)


def test_state_is_gathered_with_the_parent_beams():
    """The logits depend on the whole token history, kept in a rank-4 state like a KV cache.

    The returned scores are recomputed in NumPy from the returned tokens alone: a state gathered
    from the wrong beam would feed another hypothesis' history and break the match.
    """
    model = TableModel(random_tables(4, 12, 6, 6), history=True, seed=4)
    starts = [START, 3, 4, 5] * 3
    out = numpy(beam_search(model.step_fn, model.initial_state(), starts, END, 6, 3, 0.6))
    for row in range(12):
        score, length = model.sequence_score(row, starts[row], out["tokens"][row])
        assert out["lengths"][row] == length
        np.testing.assert_allclose(out["scores"][row], score, rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            out["normalized_scores"][row], score / gnmt_penalty(length, 0.6), rtol=1e-6
        )
        assert np.all(out["tokens"][row, length:] == PAD)


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("width", [2, 3, 5])
def test_beam_scores_at_least_greedy(width, history):
    """Over 64 tables where plain top-k beam search can fall below greedy (mixed temperatures)."""
    rows = 64
    model = TableModel(random_tables(width, rows, 6, 6, spread=True), history, seed=width)
    state = model.initial_state()
    greedy = numpy(greedy_search(model.step_fn, state, [START] * rows, END, 6))
    beam = numpy(beam_search(model.step_fn, state, [START] * rows, END, 6, width, 0.0))
    assert np.all(beam["scores"] >= greedy["scores"] - 1e-5)
    beam = numpy(beam_search(model.step_fn, state, [START] * rows, END, 6, width, 0.6))
    greedy_normalized = greedy["scores"] / gnmt_penalty(greedy["lengths"], 0.6)
    assert np.all(beam["normalized_scores"] >= greedy_normalized - 1e-5)


def _greedy_trap():
    """Greedy: 3 (.5), 5 (.24), END (1.0) = .12. A width-2 top-k beam prefers 4 then 10 / 11
    (.25 * .5 = .125 > .12) and ends below .02, as every token after 10 / 11 has probability .1.
    """
    vocab = 12
    probs = np.full((1, 3, vocab, vocab), 1e-9)
    probs[0, 0, START, [3, 4, 6]] = [0.5, 0.25, 0.25]
    probs[0, 1, 3, 5:10] = [0.24, 0.19, 0.19, 0.19, 0.19]
    probs[0, 1, 4, [10, 11]] = 0.5
    probs[0, 2, 5:10, END] = 1.0
    probs[0, 2, 10:12, :10] = 0.1  # END among ten equally likely tokens
    return TableModel(np.log(probs))


def test_keep_greedy_rescues_the_greedy_hypothesis():
    model = _greedy_trap()
    state = model.initial_state()
    greedy = numpy(greedy_search(model.step_fn, state, [START], END, 3))
    np.testing.assert_array_equal(greedy["tokens"], [[3, 5, END]])
    np.testing.assert_allclose(np.exp(greedy["scores"]), [0.12], rtol=1e-4)
    plain = numpy(beam_search(model.step_fn, state, [START], END, 3, 2, 0.0, keep_greedy=False))
    assert plain["tokens"][0, 0] == 4 and np.exp(plain["scores"][0]) < 0.02  # below greedy
    kept = numpy(beam_search(model.step_fn, state, [START], END, 3, 2, 0.0))
    np.testing.assert_array_equal(kept["tokens"], greedy["tokens"])
    np.testing.assert_allclose(kept["scores"], greedy["scores"], rtol=0, atol=1e-6)


def test_beam_wider_than_the_vocabulary():
    """At step 0 only `vocab` candidates exist: the extra beams hold -inf and never win or NaN."""
    model = TableModel(random_tables(5, 2, 3, 3))
    out = numpy(beam_search(model.step_fn, model.initial_state(), [START] * 2, END, 3, 20, 0.6))
    assert np.all(np.isfinite(out["scores"])) and np.all(np.isfinite(out["normalized_scores"]))
    for row in range(2):
        tokens, score, _, _ = model.brute_force(row, START, 0.6)
        np.testing.assert_array_equal(out["tokens"][row], tokens)
        np.testing.assert_allclose(out["scores"][row], score, rtol=0, atol=1e-5)


def test_length_penalty_changes_the_winner():
    """A short sequence wins without penalty, a longer one with a strong penalty (GNMT's alpha)."""
    probs = np.full((1, 3, 5, 5), 1e-9)
    probs[0, 0, START, [END, 3]] = [0.55, 0.45]  # END alone: log .55 = -.598
    probs[0, 1, 3, 4] = 1.0
    probs[0, 2, 4, END] = 1.0  # 3 4 END: log .45 = -.799, / ((5 + 3) / 6) ** 2 = -.449
    model = TableModel(np.log(probs))
    short = numpy(beam_search(model.step_fn, model.initial_state(), [START], END, 3, 2, 0.0))
    np.testing.assert_array_equal(short["tokens"], [[END, PAD, PAD]])
    long = numpy(beam_search(model.step_fn, model.initial_state(), [START], END, 3, 2, 2.0))
    np.testing.assert_array_equal(long["tokens"], [[3, 4, END]])
    expected = np.log(0.45) / ((5 + 3) / 6) ** 2
    np.testing.assert_allclose(long["normalized_scores"], [expected], rtol=1e-5)


def test_length_penalty_is_gnmt():
    lengths = np.array([1, 2, 5, 10])
    np.testing.assert_allclose(
        np.asarray(length_penalty(lengths, 0.6)), ((5 + lengths) / 6) ** 0.6, rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(length_penalty(lengths, 0.0)), np.ones(4))


def test_batch_rows_are_independent():
    """Each example decoded alone gives the same result as inside a batch."""
    model = TableModel(random_tables(7, 4, 5, 5), history=True, seed=7)
    starts = np.array([START, 3, 4, START])
    batch = numpy(beam_search(model.step_fn, model.initial_state(), starts, END, 5, 3))
    for row in range(4):
        alone = beam_search(
            model.step_fn, model.initial_state([row]), starts[row : row + 1], END, 5, 3
        )
        alone = numpy(alone)
        np.testing.assert_array_equal(alone["tokens"][0], batch["tokens"][row])
        np.testing.assert_allclose(alone["scores"][0], batch["scores"][row], rtol=0, atol=1e-6)


def test_nested_state_and_the_step_fn_interface():
    """Any nesting of dicts, tuples and lists; lists may come back as tuples; every leaf is
    gathered; the step function sees int32 `(rows,)` tokens and an int32 scalar step."""
    model = TableModel(random_tables(8, 2, 4, 5))
    seen = []

    def step_fn(token_ids, state, step):
        seen.append((token_ids.dtype, tuple(token_ids.shape), step.dtype, tuple(step.shape)))
        row, (offset, [counter]) = state["row"], state["extra"]
        logits, _ = model.step_fn(token_ids, {"row": row}, step)
        new_state = {"row": row, "extra": (offset, (counter + 1,))}  # a list came in
        return logits + offset, new_state

    state = {
        "row": np.array([0, 1], "int32"),
        "extra": (np.zeros((2, 5), "float32"), [np.zeros((2, 1, 1, 1), "int32")]),
    }
    out = beam_search(step_fn, state, [START, START], END, 4, beam_width=3)
    reference = beam_search(model.step_fn, model.initial_state(), [START, START], END, 4, 3)
    np.testing.assert_array_equal(out.tokens, reference.tokens)
    assert set(seen) == {(tf.int32, (6,), tf.int32, ())}


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf_function"])
def test_entries_returned_unchanged_are_not_gathered_and_give_the_same_search(traced):
    """Entries the step returns as they came in skip the gather; the search is the one of a step
    that returns a copy of them (a new tensor, gathered as every entry used to be)."""
    model = TableModel(random_tables(5, 6, 6, 6), history=True, seed=5)
    starts = [START, 3, 4, 5, START, 3]
    # Per example and token: it changes the decisions, and is the same in all beams of a row.
    offsets = np.random.default_rng(5).normal(size=(6, 6)).astype("float32")

    def step_fn(copy):
        def step(token_ids, state, step):
            logits, new_state = model.step_fn(token_ids, state["model"], step)
            offset = tf.identity(state["offset"]) if copy else state["offset"]
            return logits + offset, {"model": new_state, "offset": offset}

        return step

    search = tf.function(beam_search, autograph=False) if traced else beam_search
    original, gathered = tf.gather, []

    def counting_gather(params, *args, **kwargs):
        shape = tuple(tf.convert_to_tensor(params).shape)
        if len(shape) == 2 and shape[-1] == 6 and params.dtype == tf.float32:  # the offsets
            gathered.append(params)
        return original(params, *args, **kwargs)

    results = {}
    for copy in (False, True):
        gathered.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tf, "gather", counting_gather)
            state = {"model": model.initial_state(), "offset": offsets}
            results[copy] = numpy(search(step_fn(copy), state, starts, END, 6, 3, 0.6))
        assert bool(gathered) == copy
    for name in ("tokens", "lengths", "scores", "normalized_scores"):
        np.testing.assert_array_equal(results[False][name], results[True][name])
    reference = numpy(beam_search(model.step_fn, model.initial_state(), starts, END, 6, 3, 0.6))
    assert not np.array_equal(results[False]["tokens"], reference["tokens"])  # offsets count


def test_an_entry_changed_once_in_the_eager_loop_is_gathered_from_then_on():
    from keras_attention.generation import _common

    rows = tf.constant([1, 1, 0, 3])
    changed = set()
    before = {"a": tf.constant([[0.0], [1.0], [2.0], [3.0]]), "b": tf.constant([5, 6, 7, 8])}
    after = _common.reorder_beams(before, {"a": before["a"], "b": before["b"] + 1}, rows, changed)
    assert after["a"] is before["a"] and changed == {1}  # flat order: "a", "b"
    np.testing.assert_array_equal(after["b"], [7, 7, 6, 9])
    # The next step returns "b" unchanged: it may differ between beams now, so it is gathered.
    again = _common.reorder_beams(after, dict(after), rows, changed)
    np.testing.assert_array_equal(again["b"], [7, 7, 7, 9])
    assert again["a"] is after["a"]
