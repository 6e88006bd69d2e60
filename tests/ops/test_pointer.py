import numpy as np
import pytest

from keras_attention.ops import (
    large_negative,
    masked_logits,
    masked_softmax,
    pointer_availability_mask,
)


def _loop_availability(pointers, num_positions):
    batch, steps = pointers.shape
    available = np.ones((batch, steps, num_positions), bool)
    for b in range(batch):
        for i in range(steps):
            for k in range(i):
                if 0 <= pointers[b, k] < num_positions:
                    available[b, i, pointers[b, k]] = False
    return available


@pytest.mark.parametrize("num_positions", [5, 8])
def test_availability_mask_matches_loops(num_positions):
    rng = np.random.default_rng(0)
    pointers = rng.integers(-1, num_positions + 1, size=(6, 7)).astype("int32")  # repeats too
    actual = np.asarray(pointer_availability_mask(pointers, num_positions))
    assert actual.dtype == bool and actual.shape == (6, 7, num_positions)
    np.testing.assert_array_equal(actual, _loop_availability(pointers, num_positions))
    # A permutation: step i has exactly T - i positions left and the pointer is one of them.
    perm = np.stack([rng.permutation(num_positions) for _ in range(4)])
    available = np.asarray(pointer_availability_mask(perm, num_positions))
    np.testing.assert_array_equal(
        available.sum(-1), np.arange(num_positions, 0, -1)[None].repeat(4, 0)
    )
    rows, steps = np.meshgrid(np.arange(4), np.arange(num_positions), indexing="ij")
    assert np.all(available[rows, steps, perm])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_masked_logits_softmax_is_the_masked_softmax(dtype):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((3, 4, 6)).astype(dtype)
    mask = rng.random((3, 4, 6)) < 0.6
    mask[0, 0] = False
    logits = np.asarray(masked_logits(scores, mask)).astype("float32")
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits[0, 0], 0.0)
    blocked = ~mask & mask.any(-1, keepdims=True)
    np.testing.assert_array_equal(logits[blocked], large_negative(dtype))
    np.testing.assert_array_equal(logits[mask], scores.astype("float32")[mask])
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits.astype("float64") - top)
    softmax = e / e.sum(-1, keepdims=True)
    expected = np.asarray(masked_softmax(scores.astype("float32"), mask))
    rows = mask.any(-1)
    np.testing.assert_allclose(softmax[rows], expected[rows], rtol=0, atol=1e-6)
    assert np.all(softmax[blocked] == 0.0)
    np.testing.assert_array_equal(np.asarray(masked_logits(scores, None)), scores)
