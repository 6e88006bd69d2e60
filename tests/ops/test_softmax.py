import numpy as np
import pytest
import tensorflow as tf

from keras_attention.ops import masked_softmax
from tests import numpy_reference as npref


def test_matches_numpy_with_mask():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4, 6)).astype("float32") * 5
    mask = rng.random((3, 4, 6)) > 0.3
    mask[0, 0] = False  # one fully masked row
    weights = np.asarray(masked_softmax(scores, mask))
    np.testing.assert_allclose(weights, npref.softmax(scores, mask), atol=1e-6)
    np.testing.assert_array_equal(weights[~mask], 0.0)
    np.testing.assert_array_equal(weights[0, 0], 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_large_scores_no_overflow(dtype):
    scores = tf.constant([[60000.0, -60000.0, 100.0], [1.0, 2.0, 3.0]], dtype)
    mask = np.array([[True, True, False], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert weights.dtype == dtype
    weights = np.asarray(tf.cast(weights, "float32"))
    np.testing.assert_array_equal(weights, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_fully_masked_row_has_zero_finite_gradient():
    scores = tf.constant(np.random.default_rng(1).standard_normal((2, 4)).astype("float32"))
    mask = np.array([[True, False, True, True], [False] * 4])
    with tf.GradientTape() as tape:
        tape.watch(scores)
        loss = tf.reduce_sum(masked_softmax(scores, mask) * tf.constant([[1.0, 2.0, 3.0, 4.0]] * 2))
    grad = np.asarray(tape.gradient(loss, scores))
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[1], 0.0)
    np.testing.assert_array_equal(grad[0, 1], 0.0)


def test_no_mask_is_plain_softmax():
    scores = np.random.default_rng(2).standard_normal((2, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(masked_softmax(scores)), npref.softmax(scores), atol=1e-6)
