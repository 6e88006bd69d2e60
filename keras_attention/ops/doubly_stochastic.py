"""The doubly stochastic attention regulariser of Show, Attend and Tell (Xu et al. 2015, eq. 14)."""

from keras import ops

REDUCTIONS = ("mean", "sum", "none")


def doubly_stochastic_penalty(
    weights, query_mask=None, location_mask=None, coefficient=1.0, reduction="mean"
):
    """`λ Σ_i (1 - Σ_t α_ti)²`: pushes the attention of all steps to cover every location once.

    Softmax attention already sums to 1 over the locations `i` at every step
    `t`; the penalty asks the sum over the steps to be close to 1 at every
    location too, so that over a whole caption the model looks at every part
    of the image (eq. 14 of the paper). Padded steps (`query_mask`) add no
    attention, padded locations (`location_mask`) add no penalty, and a
    sequence with no step at all (a padding row of the batch) adds none and
    is left out of the mean.

    Args:
        weights: attention weights `(batch_size, Tq, *locations)`: `(batch_size,
            Tq, L)` over flattened locations or `(batch_size, Tq, H, W)` over a
            grid, e.g. what `SpatialAttention` returns for a query sequence.
            All the steps of a sequence must be in one tensor: the penalty is
            not a sum of per-step terms.
        query_mask: optional boolean `(batch_size, Tq)`; `False` steps are
            left out of `Σ_t`.
        location_mask: optional boolean `(batch_size, *locations)`, or the
            same flattened; `False` locations are left out of `Σ_i`.
        coefficient: `λ`, a number or scalar tensor. Defaults to `1.0`.
        reduction: `"mean"` (over the examples with at least one step),
            `"sum"` or `"none"` (one value per example, `(batch_size,)`).
            Defaults to `"mean"`.

    Returns:
        The float32 penalty: a scalar, or `(batch_size,)` for `reduction="none"`.

    Example:

    >>> import numpy as np
    >>> weights = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], "float32")  # 2 steps
    >>> float(doubly_stochastic_penalty(weights))  # location 2 was never looked at
    1.0
    >>> float(doubly_stochastic_penalty(weights, location_mask=np.array([[1, 1, 0]], bool)))
    0.0

    References:
        Xu et al., 2015, "Show, Attend and Tell: Neural Image Caption
        Generation with Visual Attention", section 4.2.1, eq. 14.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"`reduction` must be one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    rank = len(weights.shape)
    if rank < 3:
        raise ValueError(
            "`weights` must have a step axis: `(batch_size, Tq, *locations)`. "
            f"Received: weights.shape={tuple(weights.shape)}"
        )
    weights = ops.cast(weights, "float32")
    has_steps = None
    if query_mask is not None:
        step_mask = ops.cast(ops.cast(query_mask, "bool"), "float32")  # (B, Tq)
        weights = weights * ops.reshape(step_mask, ops.shape(step_mask) + (1,) * (rank - 2))
        has_steps = ops.cast(ops.max(step_mask, axis=1), "float32")  # (B,)
    coverage = ops.sum(weights, axis=1)  # (B, *locations)
    penalty = ops.square(1.0 - coverage)
    if location_mask is not None:
        location_mask = ops.cast(ops.cast(location_mask, "bool"), "float32")
        penalty = penalty * ops.reshape(location_mask, ops.shape(coverage))
    per_example = ops.sum(ops.reshape(penalty, (ops.shape(penalty)[0], -1)), axis=-1)  # (B,)
    per_example = ops.cast(coefficient, "float32") * per_example
    if has_steps is not None:  # a sequence of padding only: nothing was attended, no penalty
        per_example = per_example * has_steps
    if reduction == "mean":
        if has_steps is None:
            return ops.mean(per_example)
        return ops.sum(per_example) / ops.maximum(ops.sum(has_steps), 1.0)
    if reduction == "sum":
        return ops.sum(per_example)
    return per_example
