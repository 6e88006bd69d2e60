import numpy as np
import pytest

from keras_attention.ops import (
    causal_mask,
    compute_attention_mask,
    large_negative,
    merge_padding_masks,
)


@pytest.mark.parametrize(("tq", "tv", "offset"), [(4, 4, 0), (3, 5, 0), (1, 6, 5), (2, 6, 4)])
def test_causal_mask_matches_numpy(tq, tv, offset):
    expected = np.tril(np.ones((tq, tv), bool), k=offset)
    np.testing.assert_array_equal(np.asarray(causal_mask(tq, tv, offset))[0], expected)


def test_masks_are_anded():
    query_mask = np.array([[1, 1, 0]], bool)
    value_mask = np.array([[1, 0, 1]], bool)
    attention_mask = np.array([[[1, 1, 1], [0, 1, 1], [1, 1, 1]]], bool)
    combined = compute_attention_mask(query_mask, value_mask, attention_mask, True, 3, 3)
    expected = (
        query_mask[:, :, None]
        & value_mask[:, None, :]
        & attention_mask
        & np.tril(np.ones((3, 3), bool))
    )
    np.testing.assert_array_equal(np.asarray(combined), expected)


def test_integer_masks_are_cast_to_bool():
    combined = compute_attention_mask(value_mask=np.array([[1, 0, 2]], "int32"))
    np.testing.assert_array_equal(np.asarray(combined), [[[True, False, True]]])


def test_no_mask_gives_none():
    assert compute_attention_mask() is None
    assert merge_padding_masks(None, None) is None


def test_causal_needs_lengths():
    with pytest.raises(ValueError, match="needs `query_length` and `value_length`"):
        compute_attention_mask(use_causal_mask=True)


@pytest.mark.parametrize(
    ("dtype", "expected"), [("float16", -65504.0), ("float32", -3.4028234663852886e38)]
)
def test_large_negative_is_the_finite_minimum(dtype, expected):
    assert large_negative(dtype) == expected
    assert np.isfinite(np.array(large_negative(dtype), dtype))


def test_large_negative_bfloat16_is_finite():
    import ml_dtypes

    value = large_negative("bfloat16")
    assert np.isfinite(np.array(value, ml_dtypes.bfloat16).astype("float32"))
    assert value < -1e38


@pytest.mark.parametrize("argument", ["query_mask", "value_mask", "attention_mask"])
def test_float_masks_are_refused_not_inverted(argument):
    """An additive mask (0 = keep, -1e9 = drop) cast to bool would be inverted: refused."""
    shape = (1, 3, 3) if argument == "attention_mask" else (1, 3)
    additive = np.zeros(shape, "float32")
    additive[..., -1] = -1e9
    with pytest.raises(ValueError, match=rf"`{argument}` must be a boolean mask.*`mask == 0`"):
        compute_attention_mask(**{argument: additive})
    converted = np.squeeze(np.asarray(compute_attention_mask(**{argument: additive == 0})))
    assert not converted[..., -1].any() and converted[..., 0].all()


def test_integer_masks_are_accepted_everywhere():
    from keras_attention.ops import masked_softmax

    merged = merge_padding_masks(np.array([[1, 1, 0]], "int32"), np.array([[True, False, True]]))
    assert np.asarray(merged).tolist() == [[True, False, False]]
    weights = masked_softmax(np.zeros((1, 3), "float32"), np.array([[1, 0, 1]], "int32"))
    np.testing.assert_allclose(np.asarray(weights), [[0.5, 0.0, 0.5]])
    with pytest.raises(ValueError, match=r"float masks are refused"):
        masked_softmax(np.zeros((1, 3), "float32"), np.array([[1.0, 0.0, 1.0]], "float32"))
    with pytest.raises(ValueError, match=r"float masks are refused"):
        merge_padding_masks(np.ones((1, 3), "float16"))
