"""Masked softmax that is exact at padded positions and finite on fully masked rows."""

import keras
from keras import ops

from keras_attention.ops.masking import as_bool_mask, large_negative

_HALF_DTYPES = ("float16", "bfloat16")


def masked_softmax(scores, mask=None, axis=-1):
    """Softmax over `axis` where `mask == False` positions get exactly zero weight.

    The softmax runs in float32 when `scores` are float16 or bfloat16 and the
    result is cast back, so mixed precision neither overflows nor loses the
    normalisation. Masked scores are replaced by the most negative finite
    float32 value before the softmax, and the weights are zeroed afterwards:
    a row with no unmasked position therefore gives all zeros (never NaN,
    never a uniform distribution) and its gradient is zero.

    Args:
        scores: float tensor, e.g. `(batch_size, Tq, Tv)`.
        mask: optional boolean (or integer 0/1) tensor broadcastable to
            `scores`; `True` keeps a position. A float mask raises `ValueError`.
        axis: the axis to normalise over. Defaults to `-1`.

    Returns:
        Weights with the dtype and shape of `scores`.

    Example:

    >>> import numpy as np
    >>> w = masked_softmax(np.zeros((2, 3), "float32"),
    ...                    np.array([[True, True, False], [False, False, False]]))
    >>> np.asarray(w).round(3)
    array([[0.5, 0.5, 0. ],
           [0. , 0. , 0. ]], dtype=float32)
    """
    dtype = keras.backend.standardize_dtype(scores.dtype)
    x = ops.cast(scores, "float32") if dtype in _HALF_DTYPES else scores
    if mask is not None:
        mask = as_bool_mask(mask)
    if x.shape[axis] == 1:  # one position: weight 1 (Keras's softmax warns on a size-1 axis)
        weights = ops.ones_like(x)
    elif mask is None:
        weights = ops.softmax(x, axis=axis)
    else:
        fill = ops.cast(large_negative(keras.backend.standardize_dtype(x.dtype)), x.dtype)
        weights = ops.softmax(ops.where(mask, x, fill), axis=axis)
    if mask is not None:
        weights = ops.where(mask, weights, ops.zeros_like(weights))
    return ops.cast(weights, dtype) if dtype in _HALF_DTYPES else weights
