import numpy as np
import pytest

from keras_attention import ops as ka_ops
from tests import numpy_reference as npref

RNG = np.random.default_rng(0)
S = RNG.standard_normal((2, 3, 4)).astype("float32")
H = RNG.standard_normal((2, 5, 6)).astype("float32")
H4 = RNG.standard_normal((2, 5, 4)).astype("float32")


def test_dot_and_scaled_dot():
    np.testing.assert_allclose(
        np.asarray(ka_ops.dot_score(S, H4)), npref.dot_scores(S, H4), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(ka_ops.scaled_dot_score(S, H4)), npref.scaled_dot_scores(S, H4), atol=1e-5
    )


def test_bilinear():
    W = RNG.standard_normal((6, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(ka_ops.bilinear_score(S, H, W)), npref.bilinear_scores(S, H, W), atol=1e-4
    )


@pytest.mark.parametrize("with_bias", [True, False])
def test_concat_and_additive(with_bias):
    W = RNG.standard_normal((10, 7)).astype("float32")
    v = RNG.standard_normal((7,)).astype("float32")
    b = RNG.standard_normal((7,)).astype("float32") if with_bias else None
    expected = npref.concat_scores(S, H, W, v, b)
    np.testing.assert_allclose(np.asarray(ka_ops.concat_score(S, H, W, v, b)), expected, atol=1e-4)
    additive = ka_ops.additive_score(S @ W[:4], H @ W[4:], v, b)
    np.testing.assert_allclose(
        np.asarray(additive), npref.additive_scores(S, H, W[:4], W[4:], v, b), atol=1e-4
    )


def test_location_slices_to_the_memory_length():
    W = RNG.standard_normal((4, 9)).astype("float32")
    b = RNG.standard_normal((9,)).astype("float32")
    scores = np.asarray(ka_ops.location_score(S, W, 5, b))
    assert scores.shape == (2, 3, 5)
    np.testing.assert_allclose(scores, npref.location_scores(S, W, b, 5), atol=1e-5)
