"""Boolean attention masks: the one helper every layer uses to combine masks.

Masks here are boolean: `True` marks a position that may be attended to (or a
query position that is real), `False` a padded or forbidden one. Integer
`0`/`1` masks are accepted too (keras_hub padding masks). Float masks are
refused with a `ValueError`: casting an additive mask (`0` = keep, `-1e9` =
drop) to bool would silently invert it; convert it with `mask == 0` first.
Padding, explicit and causal masks are combined with logical AND in
`compute_attention_mask`, so every layer treats masks the same way.
"""

import keras
import ml_dtypes
import numpy as np
from keras import ops

from keras_attention.ops.checks import check_mask_dtype


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
    # The offset as int32 (an int64 or uint8 scalar tensor would not add to int32 positions).
    rows = ops.expand_dims(ops.arange(query_length, dtype="int32") + ops.cast(offset, "int32"), 1)
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

    Raises:
        ValueError: if a mask is a float tensor (see the module docstring).

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
        masks.append(ops.expand_dims(as_bool_mask(query_mask, "query_mask"), -1))  # (B, Tq, 1)
    if value_mask is not None:
        masks.append(ops.expand_dims(as_bool_mask(value_mask, "value_mask"), -2))  # (B, 1, Tv)
    if attention_mask is not None:
        masks.append(as_bool_mask(attention_mask, "attention_mask"))  # (B, Tq, Tv)
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
    """ANDs the given padding masks, skipping `None`; returns `None` if all are `None`.

    Raises `ValueError` for a float mask (see the module docstring).
    """
    present = [as_bool_mask(m, "padding mask") for m in masks if m is not None]
    if not present:
        return None
    merged = present[0]
    for m in present[1:]:
        merged = ops.logical_and(merged, m)
    return merged


def as_bool_mask(mask, name="mask"):
    """A boolean or integer 0/1 `mask` as bool; raises `ValueError` for a float mask.

    Example:

    >>> import numpy as np
    >>> np.asarray(as_bool_mask(np.array([1, 0]))).tolist()
    [True, False]
    """
    if not hasattr(mask, "dtype"):
        mask = ops.convert_to_tensor(mask)
    check_mask_dtype(None, name, mask)
    return ops.cast(mask, "bool")


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


def with_bias_mask(mask, bias):
    """`mask` with the positions where `bias` is `-inf` masked too (`None`: no mask, no bias).

    An additive `-inf` bias means "never attend here" (e.g. a mask folded into a
    bias): treated as a masked position, a row whose allowed keys all carry `-inf`
    gives zeros with a zero gradient, as a fully masked row does, on every path
    (full, chunked, fused) and backend, instead of the softmax of clamped scores.

    Example:

    >>> import numpy as np
    >>> bias = np.array([[0.0, -np.inf, 1.0]], "float32")
    >>> np.asarray(with_bias_mask(np.array([[True, True, False]]), bias)).tolist()
    [[True, False, False]]
    """
    if bias is None:
        return mask
    allowed = ops.not_equal(bias, float("-inf"))
    return allowed if mask is None else ops.logical_and(as_bool_mask(mask), allowed)
