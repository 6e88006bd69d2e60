"""Inverted dropout with half the random numbers on TensorFlow.

TensorFlow's `stateless_dropout` (what `keras.random.dropout` calls) draws one 32-bit
number per element, and on a CPU drawing them is most of its cost: on a
`(32, 4, 128, 128)` bfloat16 attention block the draw alone took 7.7 ms of the 9.5-ms
dropout. A keep decision needs far fewer bits: `dropout` cuts every 32-bit draw into
two 16-bit halves, one per element, so it draws half as many (5.3 ms for that block) and
honours `rate` to 1/65,536 (the kept values are scaled by the inverse of that keep
probability, rounded to the input's dtype as TensorFlow's own dropout does). On JAX and
PyTorch, and without a seed, it is `keras.random.dropout`.
"""

import keras
from keras import ops

from keras_attention.ops.loops import step_seed

_LEVELS = 1 << 16  # the values of one 16-bit half


def dropout(inputs, rate, seed=None):
    """`inputs` with each element zeroed with probability `rate`, the rest scaled up.

    Args:
        inputs: a floating-point tensor.
        rate: float in `[0, 1)`, the probability to drop an element (on TensorFlow,
            rounded to a multiple of 1/65,536).
        seed: a `keras.random.SeedGenerator` (a new mask at every call), an int (the same
            mask for the same shape) or `None` (Keras's global generator, through
            `keras.random.dropout`).

    Returns:
        A tensor of the shape and dtype of `inputs`: every element either 0 or the input
        divided by the keep probability.

    Example:

    >>> import numpy as np
    >>> out = np.asarray(dropout(np.ones((1000,), "float32"), 0.25, seed=1))
    >>> [round(float(v), 4) for v in np.unique(out)], bool(0.2 < np.mean(out == 0) < 0.3)
    ([0.0, 1.3333], True)
    """
    rate = _check_rate("dropout", rate)
    if rate == 0:
        return inputs
    if keras.backend.backend() != "tensorflow" or seed is None:
        return keras.random.dropout(inputs, rate, seed=step_seed(seed))
    import tensorflow as tf

    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise ValueError(
            f"dropout: `inputs` must be a floating-point tensor. Received: dtype={inputs.dtype.name}"
        )
    keep, scale = dropout_mask(tf.shape(inputs), rate, seed)
    if keep is None:  # rate < 2**-17: nothing drops
        return inputs
    return tf.where(keep, inputs * tf.constant(scale, inputs.dtype), tf.zeros_like(inputs))


def dropout_mask(shape, rate, seed=None):
    """`(keep, scale)`: the keep decisions of `dropout` for a tensor of `shape`, and the factor.

    For code that applies the mask itself (`full_attention` keeps it for its backward
    pass): `dropout(x, rate, seed)` is `where(keep, x * scale, 0)`. On TensorFlow with a
    seed these are exactly the decisions `dropout` draws from the same seed state (16
    random bits per element; `scale` is the inverse of the keep probability
    `1 - round(rate * 65536) / 65536`), and `keep` is `None` when nothing drops (`rate`
    below 2**-17). On JAX and PyTorch, or without a seed, `keep` marks what
    `keras.random.dropout` keeps of a tensor of ones from the same seed state, and `scale`
    is `1 / (1 - rate)`.

    Args:
        shape: the shape of the tensor to drop from (ints, or a 1-D int tensor).
        rate: float in `[0, 1)`.
        seed: a `keras.random.SeedGenerator`, an int or `None` (as for `dropout`).

    Returns:
        A boolean tensor of `shape` (`True` keeps an element) or `None`, and a Python float.

    Example:

    >>> import numpy as np
    >>> keep, scale = dropout_mask((1000,), 0.25, seed=1)
    >>> x = np.ones((1000,), "float32")
    >>> bool(np.array_equal(np.where(keep, x * scale, 0), dropout(x, 0.25, seed=1)))
    True
    """
    rate = _check_rate("dropout_mask", rate)
    if rate == 0:
        return None, 1.0
    if keras.backend.backend() != "tensorflow" or seed is None:
        keep = ops.not_equal(keras.random.dropout(ops.ones(shape), rate, seed=step_seed(seed)), 0)
        return keep, 1.0 / (1.0 - rate)
    dropped = min(round(rate * _LEVELS), _LEVELS - 1)  # values of a half that drop
    if dropped == 0:
        return None, 1.0
    return _keep_mask(shape, dropped, _seed_pair(seed)), _LEVELS / (_LEVELS - dropped)


def _check_rate(name, rate):
    rate = float(rate)
    if not 0 <= rate < 1:
        raise ValueError(f"{name}: `rate` must be in [0, 1). Received: rate={rate!r}")
    return rate


def _keep_mask(shape, dropped, seed):
    """TensorFlow: `shape` booleans, each `False` with probability `dropped / 65536`.

    One full-range 32-bit Philox draw (`seed`, a `(2,)` int32 tensor) per two
    elements, bitcast to its two int16 halves (element `2i` and `2i + 1` in
    the flat order, the halves in the machine's byte order); an element is
    kept when its half, read as a signed int16, is at least `dropped - 32768`
    (`65536 - dropped` of the 65,536 values).
    """
    import tensorflow as tf

    size = tf.reduce_prod(tf.cast(shape, tf.int64))  # an int32 count would overflow at 2**31
    draws = tf.random.stateless_uniform(
        [size // 2 + size % 2], seed, dtype=tf.int32, minval=None, maxval=None
    )
    halves = tf.reshape(tf.bitcast(draws, tf.int16), [-1])[:size]  # uniform over int16
    return tf.reshape(halves >= dropped - _LEVELS // 2, shape)


def _seed_pair(seed):
    """The `(2,)` int32 seed of TensorFlow's stateless generators (int32, as Keras casts it)."""
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    elif isinstance(seed, int) and not isinstance(seed, bool):
        seed = ops.convert_to_tensor([seed, 0], "int64")
    else:
        raise ValueError(
            "dropout: `seed` must be a keras.random.SeedGenerator, an int or None. "
            f"Received: seed={seed!r}"
        )
    # Keras's own reduction (`floormod` to the int32 range), so XLA, which reads 32 bits, and
    # TensorFlow's kernels see the same seed.
    return ops.cast(ops.mod(ops.cast(seed, "int64"), 2**31 - 2), "int32")
