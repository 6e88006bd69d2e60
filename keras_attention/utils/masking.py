"""Keras mask helpers shared by the layers and models.

Keras carries the implicit mask of a tensor (from `Embedding(mask_zero=True)`,
`Masking`, or a layer's `compute_mask`) as its `_keras_mask` attribute; these
helpers read, set and drop it in one place.
"""

import contextlib

from keras import ops

try:
    # Keras keeps a tensor's mask as its `_keras_mask` attribute, or, for a tensor that takes
    # no attributes (a JAX tracer inside `jax.jit`, as in `fit`/`predict`), in a table by the
    # tensor's id; only these functions read both. Keras has no public name for them (keras_hub
    # imports them the same way).
    from keras.src.backend import get_keras_mask as _get_keras_mask
    from keras.src.backend import set_keras_mask as _set_keras_mask
except ImportError:  # pragma: no cover (a Keras that moved them: the attribute alone)

    def _get_keras_mask(x):
        return getattr(x, "_keras_mask", None)

    def _set_keras_mask(x, mask):
        with contextlib.suppress(AttributeError):
            x._keras_mask = mask


def keras_mask(x):
    """The implicit Keras mask of `x` (e.g. from `Embedding(mask_zero=True)`), or `None`."""
    return _get_keras_mask(x)


def attach_keras_mask(tensor, mask):
    """Sets the Keras mask of an output tensor (what Keras itself does for implicit masks)."""
    _set_keras_mask(tensor, mask)


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
