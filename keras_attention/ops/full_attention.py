"""Attention that holds the `(B, H, Tq, Tv)` weights, with its backward pass written out by hand.

`full_attention` computes `softmax(q kᵀ + bias) v` as the einsum/softmax composition does,
with the same masking semantics as `masked_softmax`, but it is cheaper to differentiate:

- the gradient of the scores is `P ⊙ (dP - delta)` with `delta = rowsum(dO ⊙ O)`, a
  `(Tq, dv)`-sized reduction (the identity FlashAttention uses), where the softmax's own
  gradient reduces `dP ⊙ P` over the `(Tq, Tv)` block: two passes fewer over the largest
  tensor of the layer;
- inside, every product is a plain batched matmul in the heads-major `(B, H, T, d)` layout;
  only `d`-wide factors are ever transposed, never a `(Tq, Tv)` block.

With dropout on the weights (`dropout_rate`) the keep mask is drawn once, outside, and
the backward pass reads it: the identity still holds, because `rowsum(dP ⊙ P)` is
`rowsum(dD ⊙ D)` for the dropped weights `D = P ⊙ keep · scale` (`scale` the inverse of
the keep probability), and that is `rowsum(dO ⊙ O)` again.

On TensorFlow this took a `MultiHeadAttention` forward+backward pass at 512 tokens from 0.90x
to 0.82x of keras core's time (`benchmarks/attention_bench.py`). `MultiHeadAttention`
uses it on TensorFlow whenever the weights are not returned (`use_full_attention`),
training with attention dropout included.
"""

import keras
from keras import ops

from keras_attention.ops.chunked_attention import _sum_to
from keras_attention.ops.dropout import dropout_mask
from keras_attention.ops.masking import as_bool_mask, large_negative, with_bias_mask

_HALF_DTYPES = ("float16", "bfloat16")


def use_full_attention(need_weights):
    """Whether `MultiHeadAttention`'s full path should call `full_attention`.

    TensorFlow only (where it was measured; JAX was not; PyTorch has its own fused
    kernel, `ops.fused_attention`), and only when the weights are not returned.
    """
    return keras.backend.backend() == "tensorflow" and not need_weights


def full_attention(query, key, value, mask=None, bias=None, dropout_rate=0.0, dropout_seed=None):
    """`softmax(query keyᵀ + bias) value` per head, with a hand-written backward pass.

    Values and gradients (with respect to `query`, `key`, `value` and `bias`) equal those of
    `masked_softmax` between two einsums, to float rounding, with `ops.dropout` between the
    softmax and the second einsum when `dropout_rate > 0` (the same keep decisions for the
    same seed state on TensorFlow: `ops.dropout_mask`). Half-precision scores are
    normalised in float32, as `masked_softmax` does.

    Args:
        query: `(batch_size, Tq, num_heads, key_dim)`, already scaled.
        key: `(batch_size, Tv, num_heads, key_dim)`.
        value: `(batch_size, Tv, num_heads, value_dim)`.
        mask: optional boolean mask broadcastable to `(batch_size, num_heads, Tq, Tv)`;
            `True` keeps a key. A row with no allowed key gives zeros (and zero gradient).
        bias: optional float tensor broadcastable to `(batch_size, num_heads, Tq, Tv)`, added
            to the scores.
        dropout_rate: float in `[0, 1)`, dropout on the weights (inverted: kept weights are
            scaled up). Defaults to `0.0`.
        dropout_seed: a `keras.random.SeedGenerator` (a new mask at every call), an int or
            `None`, as for `ops.dropout`.

    Returns:
        `(batch_size, Tq, num_heads, value_dim)` in the dtype of `query`.

    Example:

    >>> import numpy as np
    >>> q = np.ones((1, 2, 1, 4), "float32")
    >>> v = np.arange(12, dtype="float32").reshape(1, 3, 1, 4)
    >>> mask = np.array([[[[True, True, False], [False, False, False]]]])
    >>> np.asarray(full_attention(q, q[:, :1].repeat(3, 1), v, mask=mask))[0, :, 0].tolist()
    [[2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0]]
    """
    dtype = keras.backend.standardize_dtype(query.dtype)
    tensors = [query, ops.cast(key, dtype), ops.cast(value, dtype)]
    if bias is not None:
        if len(bias.shape) != 4:
            raise ValueError(
                "full_attention: `bias` must have rank 4, broadcastable to "
                f"`(batch_size, heads, Tq, Tv)`. Received: bias.shape={tuple(bias.shape)}"
            )
        # Half precision: the bias stays in float32 (the scores' softmax dtype), so a large
        # finite bias (-1e9) is not rounded to -inf, which would mask its key on this path only.
        bias_dtype = "float32" if dtype in _HALF_DTYPES else dtype
        bias = ops.cast(ops.convert_to_tensor(bias), bias_dtype)
        if None in bias.shape:  # axes to sum its gradient over unknown: leave that to autodiff
            bias = ops.broadcast_to(bias, _scores_shape(query, key))
        tensors.append(bias)
    if mask is not None:
        tensors.append(as_bool_mask(mask))
    if not 0 <= float(dropout_rate) < 1:
        raise ValueError(
            "full_attention: `dropout_rate` must be in [0, 1). "
            f"Received: dropout_rate={dropout_rate!r}"
        )
    keep, scale = dropout_mask(_scores_shape(query, key), dropout_rate, dropout_seed)
    if keep is not None:
        tensors.append(keep)
    has_bias, has_mask, has_keep = bias is not None, mask is not None, keep is not None

    @ops.custom_gradient
    def attention(*tensors):
        # Not cut from an outer tape (no `stop_gradient`): a second derivative then flows
        # through the weights the backward pass reads (which it keeps anyway).
        q, k, v = (ops.transpose(x, (0, 2, 1, 3)) for x in tensors[:3])
        b = tensors[3] if has_bias else None
        m = tensors[3 + has_bias] if has_mask else None
        # `scale` rounded once to `dtype`, as `ops.dropout` rounds it
        drop = (tensors[-1], ops.convert_to_tensor(scale, dtype)) if has_keep else None
        weights = _weights(q, k, b, m, dtype)  # (B, H, Tq, Tv)
        dropped = weights if drop is None else _drop(weights, *drop)
        output = ops.matmul(dropped, v)  # (B, H, Tq, dv)

        def grad(*args, upstream=None):
            d_out = upstream if upstream is not None else args[0]
            d_out = ops.transpose(ops.cast(d_out, dtype), (0, 2, 1, 3))  # (B, H, Tq, dv)
            *grads, d_scores = _backward(q, k, v, (weights, dropped), output, d_out, drop, dtype)
            if has_bias:
                grads.append(_sum_to(ops.cast(d_scores, tensors[3].dtype), tuple(tensors[3].shape)))
            grads += [None] * (has_mask + has_keep)
            return tuple(grads)

        return ops.transpose(output, (0, 2, 1, 3)), grad

    return attention(*tensors)


def _weights(q, k, bias, mask, dtype):
    """The masked softmax of `q kᵀ + bias`, `(B, H, Tq, Tv)` in `dtype`."""
    if dtype == "float16":  # scores past 65,504 would be inf, and the softmax NaN
        q, k = ops.cast(q, "float32"), ops.cast(k, "float32")
    mask = with_bias_mask(mask, bias)
    scores = ops.matmul(q, ops.swapaxes(k, -1, -2))  # only the d-wide factor is transposed
    if bias is not None:
        scores = scores + ops.cast(bias, scores.dtype)
    if dtype in _HALF_DTYPES:
        scores = ops.cast(scores, "float32")
    if bias is not None:  # a bias of -inf (or one that overflowed in half precision): finite
        scores = ops.maximum(scores, ops.cast(large_negative(scores.dtype), scores.dtype))
    if mask is not None:
        scores = ops.where(mask, scores, ops.cast(large_negative(scores.dtype), scores.dtype))
    # One key: weight 1 (Keras's softmax warns on a size-1 axis).
    weights = ops.ones_like(scores) if scores.shape[-1] == 1 else ops.softmax(scores, axis=-1)
    if mask is not None:
        weights = ops.where(mask, weights, ops.zeros_like(weights))
    return ops.cast(weights, dtype)


def _drop(x, keep, scale):
    """`ops.dropout`'s output from its keep mask: `x * scale` where kept, else 0."""
    return ops.where(keep, x * scale, ops.zeros_like(x))


def _backward(q, k, v, weights, output, d_out, drop, dtype):
    """`[d_query, d_key, d_value, d_scores]`, the first three in the `(B, T, H, d)` layout.

    `weights` is `(P, D)`: the softmax and the weights after dropout (the same tensor
    without dropout); `drop` is `(keep, scale)` or `None`.
    """
    weights, dropped = weights
    work = "float32" if dtype in _HALF_DTYPES else dtype
    # rowsum(dP ⊙ P) = rowsum(dD ⊙ D) = rowsum(dO ⊙ O): the softmax gradient's reduction,
    # taken on (Tq, dv).
    delta = ops.sum(ops.cast(d_out, work) * ops.cast(output, work), axis=-1, keepdims=True)
    d_weights = ops.matmul(d_out, ops.swapaxes(v, -1, -2))  # (B, H, Tq, Tv): dD
    if drop is not None:
        d_weights = _drop(d_weights, *drop)  # dP
    d_scores = ops.cast(weights, work) * (ops.cast(d_weights, work) - delta)
    d_scores = ops.cast(d_scores, dtype)
    d_query = ops.matmul(d_scores, k)  # (B, H, Tq, d)
    # Transposed products, (B, H, d, Tv): the d-wide factor is transposed, the block is not.
    d_key_t = ops.matmul(ops.swapaxes(q, -1, -2), d_scores)
    d_value_t = ops.matmul(ops.swapaxes(d_out, -1, -2), dropped)
    return [
        ops.transpose(d_query, (0, 2, 1, 3)),
        ops.transpose(d_key_t, (0, 3, 1, 2)),
        ops.transpose(d_value_t, (0, 3, 1, 2)),
        d_scores,
    ]


def _scores_shape(query, key):
    """`(B, H, Tq, Tv)`, static where known."""
    q, k = ops.shape(query), ops.shape(key)
    return (q[0], q[2], q[1], k[1])
