import numpy as np
import pytest
import tensorflow as tf

from keras_attention.ops import doubly_stochastic_penalty, masked_softmax
from tests import numpy_reference as npref

RNG = np.random.default_rng(0)
# (B, Tq, H, W) softmax weights over the 12 locations of a 3 x 4 grid
LOCATION_MASK = RNG.random((3, 3, 4)) > 0.3
LOCATION_MASK[:, 0, 0] = True
QUERY_MASK = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)


def _weights(seed=1):
    scores = 3.0 * np.random.default_rng(seed).standard_normal((3, 5, 12)).astype("float32")
    mask = LOCATION_MASK.reshape(3, 1, 12) & QUERY_MASK[:, :, None]
    return np.asarray(masked_softmax(scores, mask)).reshape(3, 5, 3, 4)


@pytest.mark.parametrize("masks", ["none", "query", "location", "both"])
@pytest.mark.parametrize("layout", ["grid", "flat"])
def test_matches_numpy(masks, layout):
    weights = _weights()
    query_mask = QUERY_MASK if masks in ("query", "both") else None
    location_mask = LOCATION_MASK if masks in ("location", "both") else None
    if layout == "flat":
        weights = weights.reshape(3, 5, 12)
        location_mask = None if location_mask is None else location_mask.reshape(3, 12)
    expected = npref.doubly_stochastic_penalty(weights, query_mask, location_mask, 0.3)
    kwargs = {"query_mask": query_mask, "location_mask": location_mask, "coefficient": 0.3}
    per_example = np.asarray(doubly_stochastic_penalty(weights, reduction="none", **kwargs))
    assert per_example.shape == (3,) and per_example.dtype == np.float32
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(doubly_stochastic_penalty(weights, **kwargs)), expected.mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(doubly_stochastic_penalty(weights, reduction="sum", **kwargs)),
        expected.sum(),
        rtol=1e-5,
    )


def test_masks_change_the_value():
    """Masked locations would otherwise add (1 - 0)² each; masked steps their attention."""
    weights = np.random.default_rng(2).dirichlet(np.ones(12), size=(3, 5)).astype("float32")
    weights = weights.reshape(3, 5, 3, 4)
    full = np.asarray(doubly_stochastic_penalty(weights, reduction="none"))
    masked = np.asarray(
        doubly_stochastic_penalty(weights, location_mask=LOCATION_MASK, reduction="none")
    )
    dropped = ((1.0 - weights.sum(1)) ** 2 * ~LOCATION_MASK).sum((1, 2))
    assert np.all(dropped > 0.1)
    np.testing.assert_allclose(full - masked, dropped, rtol=1e-5)
    steps = np.asarray(doubly_stochastic_penalty(weights, query_mask=QUERY_MASK, reduction="none"))
    assert not np.allclose(steps[[0, 2]], full[[0, 2]]) and np.isclose(steps[1], full[1])


def test_a_sequence_of_padding_only_adds_no_penalty():
    # E.g. the rows a distributed or fixed-shape batch is padded with: before, each added
    # (1 - 0)² per location, a constant that inflated the logged loss.
    weights = _weights()
    query_mask = QUERY_MASK.copy()
    query_mask[1] = False
    per_example = np.asarray(
        doubly_stochastic_penalty(weights, query_mask=query_mask, reduction="none")
    )
    assert per_example[1] == 0.0 and np.all(per_example[[0, 2]] > 0)
    mean = float(doubly_stochastic_penalty(weights, query_mask=query_mask))
    np.testing.assert_allclose(mean, per_example[[0, 2]].mean(), rtol=1e-6)
    nothing = doubly_stochastic_penalty(weights, query_mask=np.zeros_like(QUERY_MASK))
    assert float(nothing) == 0.0


def test_exact_values_and_flat_location_mask():
    # Two steps on 2 x 2 cells; the coverage Σ_t α_ti is [[0.5, 1], [0, 0.5]].
    weights = np.array([[[[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.5], [0.0, 0.5]]]], "float32")
    # 0.25 + 0 + 1 + 0.25
    assert float(doubly_stochastic_penalty(weights)) == pytest.approx(1.5)
    assert float(doubly_stochastic_penalty(weights, coefficient=2.0)) == pytest.approx(3.0)
    flat_mask = np.array([[1, 1, 0, 1]], bool)  # the unvisited cell is padding
    assert float(doubly_stochastic_penalty(weights, location_mask=flat_mask)) == pytest.approx(0.5)
    # a perfect cover (each cell once over the steps) costs nothing
    cover = np.eye(4, dtype="float32").reshape(1, 4, 2, 2)
    assert float(doubly_stochastic_penalty(cover)) == 0.0


def test_gradient_matches_formula():
    """d/dα_ti of mean_b λ Σ_i (1 - Σ_t α_ti)² = -2λ (1 - c_i) / B on kept steps and locations."""
    weights = tf.constant(_weights())
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = doubly_stochastic_penalty(
            weights, query_mask=QUERY_MASK, location_mask=LOCATION_MASK, coefficient=0.7
        )
    grad = np.asarray(tape.gradient(loss, weights))
    w = np.asarray(weights, "float64") * QUERY_MASK[:, :, None, None]
    coverage = w.sum(1, keepdims=True)  # (B, 1, H, W)
    expected = -2.0 * 0.7 * (1.0 - coverage) / 3.0
    expected = expected * QUERY_MASK[:, :, None, None] * LOCATION_MASK[:, None]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # and against central finite differences on a few entries
    base = np.asarray(weights, "float64")
    for index in [(0, 0, 0, 0), (1, 3, 2, 1), (2, 1, 1, 3), (0, 4, 0, 0)]:
        delta = np.zeros_like(base)
        delta[index] = 1e-3
        plus, minus = (
            float(
                doubly_stochastic_penalty(
                    (base + sign * delta).astype("float32"),
                    query_mask=QUERY_MASK,
                    location_mask=LOCATION_MASK,
                    coefficient=0.7,
                )
            )
            for sign in (1.0, -1.0)
        )
        np.testing.assert_allclose((plus - minus) / 2e-3, grad[index], atol=2e-3)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="Received: reduction='max'"):
        doubly_stochastic_penalty(np.ones((1, 2, 3), "float32"), reduction="max")
    with pytest.raises(ValueError, match=r"Received: weights.shape=\(2, 3\)"):
        doubly_stochastic_penalty(np.ones((2, 3), "float32"))
