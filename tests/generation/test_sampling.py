import numpy as np
import pytest
import tensorflow as tf

from keras_attention.generation import greedy_search, sample
from tests.generation.tables import END, PAD, START, TableModel, numpy, random_tables


@pytest.mark.parametrize("filtering", [{"top_k": 1}, {"top_p": 1e-6}, {"top_k": 1, "top_p": 0.9}])
def test_top_1_is_greedy(filtering):
    model = TableModel(random_tables(0, 12, 6, 7), history=True, seed=0)
    state, starts = model.initial_state(), [START, 3, 4, 5] * 3
    greedy = numpy(greedy_search(model.step_fn, state, starts, END, 6))
    sampled = numpy(sample(model.step_fn, state, starts, END, 6, temperature=3.0, **filtering))
    for name in ("tokens", "lengths", "scores"):
        np.testing.assert_array_equal(sampled[name], greedy[name])


def test_seed_makes_it_deterministic():
    model = TableModel(random_tables(1, 64, 6, 8))
    state, starts = model.initial_state(), [START] * 64

    def tokens(**kwargs):
        return np.asarray(sample(model.step_fn, state, starts, END, 6, **kwargs).tokens)

    first = tokens(seed=11, top_k=5)
    np.testing.assert_array_equal(tokens(seed=11, top_k=5), first)
    assert np.mean(tokens(seed=12, top_k=5) != first) > 0.2
    assert np.mean(tokens() != tokens()) > 0.2  # seed=None: a new draw per call
    # Rows and steps get different draws: the 64 rows (same table up to the start) are not copies.
    assert len({tuple(row) for row in first}) > 10


def test_scores_are_model_log_probabilities():
    """Scores ignore the temperature and the filtering: the log-probability under the model."""
    model = TableModel(random_tables(2, 16, 5, 6), history=True, seed=2)
    starts = [START] * 16
    out = numpy(
        sample(model.step_fn, model.initial_state(), starts, END, 5, top_p=0.9, temperature=0.7)
    )
    np.testing.assert_array_equal(out["normalized_scores"], out["scores"])
    for row in range(16):
        score, length = model.sequence_score(row, START, out["tokens"][row])
        assert out["lengths"][row] == length
        np.testing.assert_allclose(out["scores"][row], score, rtol=0, atol=1e-5)
        assert np.all(out["tokens"][row, length:] == PAD)


def _filtered_distribution(logits, top_k=None, top_p=None, temperature=1.0):
    """NumPy reference: temperature, then top-k, then the nucleus, each renormalised."""
    logits = np.asarray(logits, "float64") / temperature
    order = np.argsort(-logits, kind="stable")
    probs = np.exp(logits[order] - logits.max())
    probs /= probs.sum()
    if top_k is not None:
        probs[top_k:] = 0.0
        probs /= probs.sum()
    if top_p is not None:
        mass_before = np.concatenate([[0.0], np.cumsum(probs)[:-1]])
        probs[mass_before >= top_p] = 0.0
        probs /= probs.sum()
    out = np.zeros_like(probs)
    out[order] = probs
    return out


LOGITS = np.log([0.02, 0.3, 0.05, 0.2, 0.12, 0.15, 0.08, 0.08])  # sorted: 1 3 5 4 6 7 2 0


@pytest.mark.parametrize(
    "filtering",
    [
        {},
        {"top_k": 3},
        {"top_p": 0.7},  # .3 + .2 + .15 = .65 < .7: four tokens
        {"top_k": 5, "top_p": 0.6},  # over the renormalised top 5 (mass .85): three tokens
        {"top_p": 0.9, "temperature": 0.5},
        {"top_k": 20},  # more than the vocabulary: everything
    ],
)
def test_sampled_frequencies_match_the_filtered_distribution(filtering):
    rows = 20000
    tables = np.broadcast_to(LOGITS, (1, 1, 8, 8)).astype("float32")
    model = TableModel(tables)
    state = {"row": np.zeros(rows, "int32")}
    out = sample(model.step_fn, state, [START] * rows, END, 1, seed=5, **filtering)
    frequencies = np.bincount(np.asarray(out.tokens)[:, 0], minlength=8) / rows
    expected = _filtered_distribution(LOGITS, **filtering)
    np.testing.assert_array_equal(frequencies[expected == 0], 0.0)  # filtered tokens never drawn
    sigma = np.sqrt(expected * (1 - expected) / rows)
    assert np.all(np.abs(frequencies - expected) <= 5 * sigma + 1e-9), (frequencies, expected)
    # Pearson chi-square over the kept tokens, far below its 99.99% quantile (< 30 for <= 8 dof).
    kept = expected > 0
    chi2 = np.sum((frequencies[kept] - expected[kept]) ** 2 / expected[kept]) * rows
    assert chi2 < 30.0, chi2


def test_nucleus_is_the_documented_set():
    np.testing.assert_array_equal(
        np.flatnonzero(_filtered_distribution(LOGITS, top_p=0.7)), [1, 3, 4, 5]
    )
    np.testing.assert_array_equal(
        np.flatnonzero(_filtered_distribution(LOGITS, top_k=5, top_p=0.6)), [1, 3, 5]
    )


def test_sampling_with_an_unknown_vocabulary_size():
    """Inside a `tf.function` whose logits have no static vocabulary size."""

    def step_fn(token_ids, state, step):
        logits = tf.tile(tf.constant(LOGITS, tf.float32)[None], [tf.shape(token_ids)[0], 1])
        return tf.reshape(logits, [tf.shape(token_ids)[0], -1]), state

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def decode(start_ids):
        return sample(step_fn, (), start_ids, END, 1, top_k=3, top_p=0.9, seed=1).tokens

    tokens = np.asarray(decode(tf.fill([4000], START)))
    frequencies = np.bincount(tokens[:, 0], minlength=8) / 4000
    expected = _filtered_distribution(LOGITS, top_k=3, top_p=0.9)
    np.testing.assert_array_equal(frequencies[expected == 0], 0.0)
    assert np.all(np.abs(frequencies - expected) < 0.03)
