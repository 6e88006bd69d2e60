"""The score functions of soft attention, as stateless functions on `keras.ops`.

Notation of the source table: `s` is the query (decoder state, `(B, Tq, dq)`),
`h` a key (encoder state, `(B, Tk, dk)`); every function returns raw scores of
shape `(B, Tq, Tk)` (before the softmax). Layers own the weights and pass them in.

| name         | score(s, h)                     |
|--------------|---------------------------------|
| concat       | vᵀ tanh(W [s; h])               |
| additive     | vᵀ tanh(W s + U h)              |
| bilinear     | hᵀ W s                          |
| dot          | hᵀ s                            |
| scaled dot   | hᵀ s / √n                       |
| location     | softmax(W s) over positions     |
"""

import math

import keras
from keras import ops

_FLOAT16_MAX = 65504.0


def dot_score(query, key):
    """`hᵀ s` for every query/key pair: `(B, Tq, d) x (B, Tk, d) -> (B, Tq, Tk)`.

    Example:

    >>> import numpy as np
    >>> q = np.ones((1, 1, 2), "float32"); k = np.array([[[1., 2.], [3., 4.]]], "float32")
    >>> np.asarray(dot_score(q, k))
    array([[[3., 7.]]], dtype=float32)

    Under float16 the product is taken in float32 and clipped to float16's finite range: a
    score past 65504 would otherwise be `inf`, and the softmax of a row holding it NaN.
    """
    if keras.backend.standardize_dtype(query.dtype) == "float16":
        scores = ops.matmul(
            ops.cast(query, "float32"), ops.swapaxes(ops.cast(key, "float32"), -1, -2)
        )
        return ops.cast(ops.clip(scores, -_FLOAT16_MAX, _FLOAT16_MAX), "float16")
    return ops.matmul(query, ops.swapaxes(key, -1, -2))  # (B, Tq, Tk)


def scaled_dot_score(query, key, scale=None):
    """`hᵀ s / √n` with `n` the key depth, or `hᵀ s * scale` when `scale` is given."""
    if scale is None:
        scale = 1.0 / math.sqrt(key.shape[-1])
    return dot_score(ops.multiply(query, ops.cast(scale, query.dtype)), key)


def bilinear_score(query, key, kernel):
    """`hᵀ W s` (Luong "general"): `kernel` has shape `(dk, dq)`."""
    projected = ops.matmul(query, ops.transpose(ops.cast(kernel, query.dtype)))  # (B, Tq, dk)
    return dot_score(projected, key)


def additive_score(projected_query, projected_key, attention_v, bias=None):
    """`vᵀ tanh(Ws + Uh [+ b])` from the projected query `Ws` and key `Uh`.

    Args:
        projected_query: `(B, Tq, units)`, the query times `W`.
        projected_key: `(B, Tk, units)`, the key times `U`.
        attention_v: `(units,)`, the vector `v`.
        bias: optional `(units,)` added inside the `tanh`.

    Returns:
        Scores `(B, Tq, Tk)`.
    """
    hidden = ops.expand_dims(projected_query, -2) + ops.expand_dims(projected_key, -3)
    if bias is not None:
        hidden = hidden + ops.cast(bias, hidden.dtype)  # (B, Tq, Tk, units)
    return ops.sum(ops.tanh(hidden) * ops.cast(attention_v, hidden.dtype), axis=-1)


def concat_score(query, key, kernel, attention_v, bias=None):
    """`vᵀ tanh(W [s; h] [+ b])` with `kernel` `W` of shape `(dq + dk, units)`.

    `W [s; h]` equals `W[:dq] s + W[dq:] h`, so the concatenation of every
    query/key pair is never materialised.
    """
    query_dim = query.shape[-1]
    kernel = ops.cast(kernel, query.dtype)
    projected_query = ops.matmul(query, kernel[:query_dim])  # (B, Tq, units)
    projected_key = ops.matmul(key, kernel[query_dim:])  # (B, Tk, units)
    return additive_score(projected_query, projected_key, attention_v, bias)


def location_score(query, kernel, value_length, bias=None):
    """`W s [+ b]` (Luong location-based): one score per source position.

    Args:
        query: `(B, Tq, dq)`.
        kernel: `(dq, max_length)`.
        value_length: `Tv <= max_length`, int or scalar tensor: the scores of
            positions `>= Tv` are dropped.
        bias: optional `(max_length,)`.

    Returns:
        Scores `(B, Tq, Tv)`.
    """
    scores = ops.matmul(query, ops.cast(kernel, query.dtype))  # (B, Tq, max_length)
    if bias is not None:
        scores = scores + ops.cast(bias, scores.dtype)
    return scores[:, :, :value_length]


def apply_attention(weights, value):
    """The context vectors: `weights (B, Tq, Tv) x value (B, Tv, dv) -> (B, Tq, dv)`."""
    return ops.matmul(ops.cast(weights, value.dtype), value)
