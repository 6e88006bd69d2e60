"""The window of local attention (Luong et al. 2015, sec. 3.2): a hard mask and a Gaussian."""

from keras import ops


def local_window(positions, value_length, window):
    """The window `[p - D, p + D]` and the Gaussian `exp(-(s - p)² / (2σ²))`, `σ = D / 2`.

    Args:
        positions: float32 `(..., Tq)`, the aligned source position `p` of every query.
        value_length: int or scalar tensor, the number of source positions `Tv`.
        window: positive int, the half-width `D`.

    Returns:
        `(mask, gaussian)`, both `(..., Tq, Tv)`: the boolean mask that is `True`
        where `|s - p| <= D`, and the float32 Gaussian weights.

    Example:

    >>> import numpy as np
    >>> mask, gauss = local_window(np.array([[1.0]], "float32"), 4, 2)
    >>> np.asarray(mask).astype(int)
    array([[[1, 1, 1, 1]]])
    >>> np.asarray(gauss).round(3)
    array([[[0.607, 1.   , 0.607, 0.135]]], dtype=float32)
    """
    source = ops.cast(ops.arange(value_length, dtype="int32"), "float32")  # (Tv,)
    distance = source - ops.expand_dims(ops.cast(positions, "float32"), -1)  # (..., Tq, Tv)
    mask = ops.less_equal(ops.abs(distance), float(window))
    sigma = window / 2.0
    gaussian = ops.exp(ops.square(distance) * (-1.0 / (2.0 * sigma * sigma)))
    return mask, gaussian
