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


def test_float16_dot_scores_saturate_instead_of_overflowing():
    from keras_attention.layers import BilinearAttention, DotAttention

    # 30 * 30 * 128 = 115,200 is past float16's 65,504: the score was inf, the softmax NaN.
    query = np.full((1, 1, 128), 30.0, "float16")
    key = np.stack([np.full(128, 30.0), np.full(128, 1.0), np.full(128, -30.0)])[None]
    scores = np.asarray(ka_ops.dot_score(query, key.astype("float16")))
    assert scores.dtype == np.float16
    np.testing.assert_array_equal(scores, [[[65504.0, 3840.0, -65504.0]]])
    for layer in (DotAttention(dtype="mixed_float16"), BilinearAttention(dtype="mixed_float16")):
        layer.build((1, 1, 128), (1, 3, 128))
        for variable in layer.trainable_variables:  # W = I: the bilinear score is the dot one
            variable.assign(np.eye(128, dtype="float32"))
        context, weights = layer(
            query.astype("float32"), key.astype("float32"), return_attention_scores=True
        )
        np.testing.assert_array_equal(np.asarray(weights, "float32"), [[[1.0, 0.0, 0.0]]])
        np.testing.assert_array_equal(np.asarray(context, "float32"), np.full((1, 1, 128), 30.0))


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
