"""Boolean attention masks: the one helper every layer uses to combine masks.

Masks here are boolean: `True` marks a position that may be attended to (or a
query position that is real), `False` a padded or forbidden one. Padding,
explicit and causal masks are combined with logical AND in
`compute_attention_mask`, so every layer treats masks the same way.
"""

import keras
import ml_dtypes
import numpy as np
from keras import ops


def causal_mask(query_length, value_length, offset=0):
    """Lower-triangular boolean mask: query `i` may see value positions `<= i + offset`.

    Built from `arange` comparisons (no `tril`/`MatrixBandPart`), so it lowers
    to TFLite builtin ops.

    Args:
        query_length: int or scalar tensor, the number of query positions `Tq`.
        value_length: int or scalar tensor, the number of value positions `Tv`.
        offset: int or scalar tensor, the absolute position of the first query;
            `0` aligns query `0` with value `0` (self-attention). When decoding
            with a cache, the offset is the number of positions already cached.
            Defaults to `0`.

    Returns:
        Boolean tensor of shape `(1, Tq, Tv)`.

    Example:

    >>> import numpy as np
    >>> np.asarray(causal_mask(3, 3)).astype(int)[0]
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 1]])
    """
    rows = ops.expand_dims(ops.arange(query_length, dtype="int32") + offset, 1)
    cols = ops.expand_dims(ops.arange(value_length, dtype="int32"), 0)
    return ops.expand_dims(ops.greater_equal(rows, cols), 0)  # (1, Tq, Tv)


def compute_attention_mask(
    query_mask=None,
    value_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    query_length=None,
    value_length=None,
    causal_offset=0,
):
    """Combines padding, explicit and causal masks with logical AND.

    Args:
        query_mask: boolean `(batch_size, Tq)`; `False` marks padded queries,
            whose attention rows become fully masked (zero weights).
        value_mask: boolean `(batch_size, Tv)`; `False` marks padded values.
        attention_mask: boolean `(batch_size, Tq, Tv)` explicit mask.
        use_causal_mask: whether to add the causal mask (needs `query_length`
            and `value_length`).
        query_length: `Tq`, int or scalar tensor (for the causal mask).
        value_length: `Tv`, int or scalar tensor (for the causal mask).
        causal_offset: absolute position of the first query. Defaults to `0`.

    Returns:
        `None` if no mask applies, otherwise a boolean tensor broadcastable to
        `(batch_size, Tq, Tv)`.

    Example:

    >>> import numpy as np
    >>> m = compute_attention_mask(value_mask=np.array([[True, True, False]]),
    ...                            use_causal_mask=True, query_length=3, value_length=3)
    >>> np.asarray(m).astype(int)[0]
    array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 0]])
    """
    masks = []
    if query_mask is not None:
        masks.append(ops.expand_dims(ops.cast(query_mask, "bool"), -1))  # (B, Tq, 1)
    if value_mask is not None:
        masks.append(ops.expand_dims(ops.cast(value_mask, "bool"), -2))  # (B, 1, Tv)
    if attention_mask is not None:
        masks.append(ops.cast(attention_mask, "bool"))  # (B, Tq, Tv)
    if use_causal_mask:
        if query_length is None or value_length is None:
            raise ValueError(
                "`use_causal_mask=True` needs `query_length` and `value_length`. "
                f"Received: query_length={query_length}, value_length={value_length}"
            )
        masks.append(causal_mask(query_length, value_length, causal_offset))  # (1, Tq, Tv)
    if not masks:
        return None
    combined = masks[0]
    for m in masks[1:]:
        combined = ops.logical_and(combined, m)
    return combined


def merge_padding_masks(*masks):
    """ANDs the given padding masks, skipping `None`; returns `None` if all are `None`."""
    present = [ops.cast(m, "bool") for m in masks if m is not None]
    if not present:
        return None
    merged = present[0]
    for m in present[1:]:
        merged = ops.logical_and(merged, m)
    return merged


def large_negative(dtype):
    """The most negative finite value of a float dtype (float16, bfloat16, float32, ...).

    Used as the masked value before a softmax: it is finite, so a fully masked
    row never turns into `-inf - (-inf) = NaN`, and it is representable in the
    dtype, unlike the `-1e9` that overflows float16.

    Example:

    >>> large_negative("float16")
    -65504.0
    """
    name = keras.backend.standardize_dtype(dtype)
    if name == "bfloat16":
        return float(ml_dtypes.finfo(ml_dtypes.bfloat16).min)
    return float(np.finfo(np.dtype(name)).min)
