"""Monotonic alignments (Raffel et al. 2017) as stateless functions on `keras.ops`.

Both functions take the selection energies `e` of one decoder step (the
probability of stopping at memory position `j` is `p_j = sigmoid(e_j)`) and the
alignment of the previous step, and return the alignment of this step. Padded
memory positions (`mask=False`) get `p = 0`: they are passed over and get zero
weight. All math is float32.
"""

from keras import ops

from keras_attention.ops.masking import as_bool_mask


def expected_monotonic_alignment(energies, previous_alignment, mask=None):
    """The expected (soft) monotonic alignment of one step.

    `α_j = p_j Σ_{k<=j} α'_k Π_{l=k}^{j-1} (1 - p_l)` with `α'` the previous
    alignment. The products are taken in log space, `log(1 - p) =
    -softplus(e)`, as `exp(S_j - S_k)` with `S` the exclusive cumulative sum of
    `log(1 - p)`: every exponent is `<= 0`, so nothing overflows or divides by
    a vanishing cumulative product (the closed form of the paper needs
    clipping there). Cost: `O(Tv²)` per step, all parallel.

    Args:
        energies: `(batch_size, Tv)` pre-sigmoid energies.
        previous_alignment: `(batch_size, Tv)`.
        mask: optional boolean `(batch_size, Tv)`.

    Returns:
        float32 `(batch_size, Tv)`; sums to `<= 1` (the rest ran off the end).

    Example:

    >>> import numpy as np
    >>> a = expected_monotonic_alignment(np.zeros((1, 3), "float32"),
    ...                                  np.array([[1., 0., 0.]], "float32"))
    >>> np.round(np.asarray(a), 4)
    array([[0.5  , 0.25 , 0.125]], dtype=float32)
    """
    energies = ops.cast(energies, "float32")
    previous_alignment = ops.cast(previous_alignment, "float32")
    p = ops.sigmoid(energies)  # (B, Tv)
    log_not_p = -ops.softplus(energies)  # log(1 - p), exact for large energies
    if mask is not None:
        mask = as_bool_mask(mask)
        p = ops.where(mask, p, 0.0)
        log_not_p = ops.where(mask, log_not_p, 0.0)
    exclusive = ops.cumsum(log_not_p, axis=-1) - log_not_p  # S_j = Σ_{l<j} log(1 - p_l)
    # (B, k, j): exp(S_j - S_k) for k <= j, zero above the diagonal.
    diff = ops.expand_dims(exclusive, 1) - ops.expand_dims(exclusive, 2)
    positions = ops.arange(ops.shape(energies)[-1], dtype="int32")
    upper = ops.expand_dims(positions, 0) >= ops.expand_dims(positions, 1)  # (k, j): k <= j
    transfer = ops.where(upper, ops.exp(ops.minimum(diff, 0.0)), 0.0)  # (B, Tv, Tv)
    reached = ops.squeeze(ops.matmul(ops.expand_dims(previous_alignment, 1), transfer), 1)
    return p * reached  # (B, Tv)


def hard_monotonic_alignment(energies, previous_alignment, mask=None):
    """The hard monotonic alignment of one step (the paper's test-time rule).

    From the previously attended position (inclusive), attend to the first
    position with `p >= 0.5` (`e >= 0`). The result is one-hot, or all zero
    when no such position exists; an all-zero previous alignment (attention ran
    off the end) stays all zero. Alignments never move backwards.

    Args:
        energies: `(batch_size, Tv)` pre-sigmoid energies.
        previous_alignment: `(batch_size, Tv)`, one-hot or zero.
        mask: optional boolean `(batch_size, Tv)`.

    Returns:
        float32 `(batch_size, Tv)`, one-hot or zero.

    Example:

    >>> import numpy as np
    >>> a = hard_monotonic_alignment(np.array([[3., -1., 2., 5.]], "float32"),
    ...                              np.array([[0., 1., 0., 0.]], "float32"))
    >>> np.asarray(a)
    array([[0., 0., 1., 0.]], dtype=float32)
    """
    choose = ops.greater_equal(ops.cast(energies, "float32"), 0.0)
    if mask is not None:
        choose = ops.logical_and(choose, as_bool_mask(mask))
    # Only positions at or after the previous one: cumsum of a one-hot is a step.
    started = ops.cumsum(ops.cast(previous_alignment, "float32"), axis=-1) > 0.5
    candidates = ops.cast(ops.logical_and(choose, started), "float32")  # (B, Tv)
    # The first candidate: no candidate strictly before it (an exclusive cumsum, no cumprod).
    before = ops.cumsum(candidates, axis=-1) - candidates
    return candidates * ops.cast(before < 0.5, "float32")
