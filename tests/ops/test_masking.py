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
