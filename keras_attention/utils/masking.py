"""Keras mask helpers shared by the layers and models.

Keras carries the implicit mask of a tensor (from `Embedding(mask_zero=True)`,
`Masking`, or a layer's `compute_mask`) as its `_keras_mask` attribute; these
helpers read, set and drop it in one place.
"""

import contextlib

from keras import ops


def keras_mask(x):
    """The implicit Keras mask of `x` (e.g. from `Embedding(mask_zero=True)`), or `None`."""
    return getattr(x, "_keras_mask", None)


def attach_keras_mask(tensor, mask):
    """Sets the Keras mask of an output tensor (what Keras itself does for implicit masks)."""
    # Backends whose arrays take no attributes (JAX) carry no masks.
    with contextlib.suppress(AttributeError):
        tensor._keras_mask = mask


def without_keras_mask(x):
    """`x`, or a copy of it without its Keras mask for a sublayer that takes the mask as an argument.

    (Keras warns when a layer that does not support masking gets a masked input; the caller's
    tensor keeps its mask.)
    """
    return ops.copy(x) if keras_mask(x) is not None else x


def padding_mask(token_ids, pad_id=0):
    """The boolean mask `token_ids != pad_id` (True = a real token).

    Example:

    >>> import numpy as np
    >>> np.asarray(padding_mask(np.array([[5, 3, 0]]))).tolist()
    [[True, True, False]]
    """
    return ops.not_equal(token_ids, pad_id)
