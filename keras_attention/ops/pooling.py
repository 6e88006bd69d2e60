"""Attention pooling with a learned context vector (HAN word and sentence attention)."""

from keras import ops

from keras_attention.ops.scores import apply_attention


def context_vector_score(inputs, kernel, context_vector, bias=None):
    """`u_tᵀ u_w` with `u_t = tanh(W h_t + b)`: one score per position.

    Args:
        inputs: the annotations `h`, `(batch_size, T, d)`.
        kernel: `W`, `(d, units)`.
        context_vector: the learned query `u_w`, `(units,)`.
        bias: optional `b`, `(units,)`.

    Returns:
        Raw scores `(batch_size, T)` (before the softmax), in the dtype of
        `inputs`.

    Example:

    >>> import numpy as np
    >>> h = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")
    >>> scores = context_vector_score(h, np.eye(2, dtype="float32"),
    ...                               np.array([2.0, 0.0], "float32"))
    >>> np.asarray(scores).round(3)
    array([[1.523, 0.   ]], dtype=float32)
    """
    hidden = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))  # (B, T, units)
    if bias is not None:
        hidden = hidden + ops.cast(bias, hidden.dtype)
    return ops.sum(ops.tanh(hidden) * ops.cast(context_vector, hidden.dtype), axis=-1)  # (B, T)


def attention_pool(weights, values):
    """The weighted sum `Σ_t a_t h_t`: `weights (B, T) x values (B, T, d) -> (B, d)`.

    Example:

    >>> import numpy as np
    >>> values = np.array([[[1.0, 2.0], [3.0, 4.0]]], "float32")
    >>> np.asarray(attention_pool(np.array([[0.25, 0.75]], "float32"), values))
    array([[2.5, 3.5]], dtype=float32)
    """
    return ops.squeeze(apply_attention(ops.expand_dims(weights, 1), values), 1)  # (B, d)
