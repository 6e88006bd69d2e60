"""Attention through the backend's fused kernel (`keras.ops.dot_product_attention`).

On PyTorch this is `torch.nn.functional.scaled_dot_product_attention`, which never keeps
the `(B, H, Tq, Tv)` weights for the backward pass: at 4096 tokens it took 2.5x less time
and 19x less memory than the einsum/softmax path (`benchmarks/attention_bench.py --backend
torch`). On TensorFlow and JAX Keras's own kernel is the same einsum/softmax computation (JAX's
ran out of memory where ours did not), so `MultiHeadAttention` takes this path on PyTorch only
(see `use_fused_attention`).

A row with no allowed key gives zero output here as on the other paths (never NaN, never the
uniform average a fused kernel gives): such rows attend to every key inside the kernel, so its
backward pass stays finite, and are zeroed afterwards.
"""

import keras
from keras import ops

from keras_attention.ops.masking import as_bool_mask, large_negative, with_bias_mask


def use_fused_attention(dtype, need_weights, dropout_active):
    """Whether `MultiHeadAttention`'s full path should call the fused kernel.

    PyTorch only, float32 only (half precision keeps the float32 softmax of `masked_softmax`),
    and only when the weights are not returned and no dropout is drawn on them.
    """
    return (
        keras.backend.backend() == "torch"
        and keras.backend.standardize_dtype(dtype) == "float32"
        and not need_weights
        and not dropout_active
    )


def fused_attention(query, key, value, mask=None, bias=None):
    """`softmax(query keyᵀ + bias) value` per head through `keras.ops.dot_product_attention`.

    Args:
        query: `(batch_size, Tq, num_heads, key_dim)`, already scaled.
        key: `(batch_size, Tv, num_heads, key_dim)`.
        value: `(batch_size, Tv, num_heads, value_dim)`.
        mask: optional boolean mask broadcastable to `(batch_size, num_heads, Tq, Tv)`;
            `True` keeps a key.
        bias: optional float tensor broadcastable to `(batch_size, num_heads, Tq, Tv)`,
            added to the scores.

    Returns:
        `(batch_size, Tq, num_heads, value_dim)`; rows whose mask allows no key are zero.

    Example:

    >>> import numpy as np
    >>> q = np.ones((1, 2, 1, 4), "float32")
    >>> v = np.arange(12, dtype="float32").reshape(1, 3, 1, 4)
    >>> mask = np.array([[[[True, False, False], [False, False, False]]]])
    >>> np.asarray(fused_attention(q, q[:, :1].repeat(3, 1), v, mask=mask))[0, :, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    """
    has_key = None
    if bias is not None:  # an allowed key with a -inf bias is masked too (it would win the softmax)
        mask = with_bias_mask(mask, bias)
    if mask is not None:
        mask = as_bool_mask(mask)
        has_key = ops.any(mask, axis=-1, keepdims=True)  # (B, 1|H, Tq, 1)
        mask = ops.logical_or(mask, ops.logical_not(has_key))
        if bias is not None:  # the kernel takes one of the two: fold the mask into the bias
            dtype = keras.backend.standardize_dtype(query.dtype)
            fill = ops.cast(large_negative(dtype), dtype)
            bias, mask = ops.where(mask, ops.cast(bias, dtype), fill), None
    elif bias is not None:
        bias = ops.cast(bias, query.dtype)
    # `flash_attention=False`: PyTorch picks its kernel itself (its CPU flash kernel where it
    # applies); Keras's own eligibility check builds an object `torch.compile` cannot trace.
    output = ops.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=1.0, flash_attention=False
    )
    if has_key is None:
        return output
    keep = ops.transpose(has_key, (0, 2, 1, 3))  # (B, Tq, 1|H, 1)
    return ops.where(keep, output, ops.zeros_like(output))
