"""Pointer-network math: masked logits and the mask of positions not yet pointed to."""

import keras
from keras import ops

from keras_attention.ops.masking import as_bool_mask, large_negative


def masked_logits(scores, mask=None):
    """Scores where `mask == False` positions hold the dtype's most negative finite value.

    The softmax of the result is `masked_softmax(scores, mask)`, so the logits
    feed a cross-entropy `from_logits=True` without ever putting weight on a
    masked position, and without `-inf` (whose differences give NaN). A row
    with no unmasked position is all zeros, like the rows of `masked_softmax`.

    Args:
        scores: float tensor, e.g. `(batch_size, Tq, Tv)`.
        mask: optional boolean tensor broadcastable to `scores`; `True` keeps
            a position.

    Returns:
        Logits with the dtype and shape of `scores`.

    Example:

    >>> import numpy as np
    >>> logits = masked_logits(np.array([[1., 2., 3.], [1., 2., 3.]], "float32"),
    ...                        np.array([[True, False, True], [False, False, False]]))
    >>> np.asarray(logits)
    array([[ 1.0000000e+00, -3.4028235e+38,  3.0000000e+00],
           [ 0.0000000e+00,  0.0000000e+00,  0.0000000e+00]], dtype=float32)
    """
    if mask is None:
        return scores
    mask = ops.logical_and(as_bool_mask(mask), ops.ones_like(scores, dtype="bool"))
    fill = ops.full_like(scores, large_negative(keras.backend.standardize_dtype(scores.dtype)))
    logits = ops.where(mask, scores, fill)
    any_valid = ops.any(mask, axis=-1, keepdims=True)
    return ops.where(any_valid, logits, ops.zeros_like(scores))


def pointer_availability_mask(pointers, num_positions):
    """Which positions are still free at each decoding step, given the pointers chosen so far.

    `available[b, i, j]` is `True` unless `pointers[b, k] == j` for some step
    `k < i`: passed as `attention_mask` to `PointerAttention` with the
    teacher-forced pointers of a whole output sequence, it keeps step `i`
    from pointing at a position chosen at an earlier step (the masking a
    greedy decoder applies one step at a time). Pointers outside
    `[0, num_positions)` choose nothing. Built from comparisons and a
    cumulative sum, so it lowers to TFLite builtin ops.

    Args:
        pointers: int tensor `(batch_size, T)`, the position chosen at each
            step.
        num_positions: int or scalar tensor, the number of input positions
            `Tv`.

    Returns:
        Boolean tensor `(batch_size, T, num_positions)`.

    Example:

    >>> import numpy as np
    >>> available = pointer_availability_mask(np.array([[2, 0, 1]]), 3)
    >>> np.asarray(available).astype(int)[0]
    array([[1, 1, 1],
           [1, 1, 0],
           [0, 1, 0]])
    """
    pointers = ops.cast(pointers, "int32")
    positions = ops.arange(num_positions, dtype="int32")
    chosen = ops.cast(ops.equal(ops.expand_dims(pointers, -1), positions), "int32")  # (B, T, Tv)
    chosen_before = ops.cumsum(chosen, axis=1) - chosen  # exclusive: steps k < i
    return ops.equal(chosen_before, 0)
