"""Hard (single-position) attention as stateless functions on `keras.ops`.

Hard attention picks one memory position per query: the argmax of the masked
scores at inference, a sample from `softmax(scores)` in training. Sampling uses
the Gumbel-max trick: `argmax(score + g)` with `g` standard Gumbel noise is an
exact sample of the softmax, and the same noise gives the Gumbel-softmax
relaxation `softmax((score + g) / τ)` whose gradient the straight-through
estimator uses. All math is float32; masked positions are never chosen, and a
row with no unmasked position chooses nothing (zero weights, zero context).
"""

import keras
import numpy as np
from keras import ops
from keras import random as keras_random

from keras_attention.ops.loops import step_seed
from keras_attention.ops.masking import as_bool_mask, large_negative
from keras_attention.ops.softmax import masked_softmax

_TINY = float(np.finfo("float32").tiny)


def gumbel_noise(shape, seed=None):
    """Standard Gumbel noise `g = -log(-log(u))`, `u ~ U(tiny, 1)`: float32, always finite.

    Args:
        shape: the shape of the noise.
        seed: an int or a `keras.random.SeedGenerator`.

    Returns:
        float32 noise of `shape`, within about `[-4.5, 16.7]`.

    Example:

    >>> import numpy as np
    >>> g = np.asarray(gumbel_noise((20000,), seed=0))
    >>> bool(np.isfinite(g).all()), round(float(g.mean()), 1)  # mean: Euler's γ ≈ 0.577
    (True, 0.6)
    """
    uniform = keras_random.uniform(
        shape, minval=_TINY, maxval=1.0, dtype="float32", seed=step_seed(seed)
    )
    return -ops.log(-ops.log(uniform))


def masked_argmax(scores, mask=None):
    """The position of the largest unmasked score over the last axis.

    Args:
        scores: float tensor `(..., Tv)`.
        mask: optional boolean tensor broadcastable to `scores`; `True` keeps
            a position.

    Returns:
        `(index, valid)`: int32 `index` `(...)`, the chosen position (`0` on a
        row with no unmasked position), and boolean `valid` `(...)`, whether
        the row has an unmasked position.

    Example:

    >>> import numpy as np
    >>> index, valid = masked_argmax(np.array([[3., 1., 2.], [3., 1., 2.]], "float32"),
    ...                              np.array([[False, True, True], [False, False, False]]))
    >>> np.asarray(index), np.asarray(valid)
    (array([2, 0], dtype=int32), array([ True, False]))
    """
    scores = ops.cast(scores, "float32")
    if mask is None:
        valid = ops.ones(ops.shape(scores)[:-1], "bool")
    else:
        mask = ops.broadcast_to(as_bool_mask(mask), ops.shape(scores))
        scores = ops.where(mask, scores, ops.cast(large_negative("float32"), "float32"))
        valid = ops.any(mask, axis=-1)
    if scores.shape[-1] == 0:  # no position to choose
        valid = ops.zeros_like(valid)
    return _first_argmax(scores), valid


def one_hot_weights(index, valid, length):
    """float32 one-hot weights `(..., length)` at `index`, all zero where `valid` is `False`.

    Built from an `arange` comparison, so it lowers to TFLite builtin ops.
    """
    positions = ops.arange(length, dtype="int32")  # (Tv,)
    hit = ops.logical_and(
        ops.equal(ops.expand_dims(index, -1), positions), ops.expand_dims(valid, -1)
    )
    return ops.cast(hit, "float32")  # (..., Tv)


def gather_positions(value, index, valid=None):
    """The value vector at one position per query, exactly: `value[b, index[b, q]]`.

    A gather, not a one-hot matmul, so the result is bit-exact on every device
    (matmuls may run in reduced precision, e.g. TF32 on GPUs).

    Args:
        value: `(batch_size, Tv, dv)`.
        index: int `(batch_size, Tq)`, positions in `[0, Tv)`.
        valid: optional boolean `(batch_size, Tq)`; `False` rows give zeros.

    Returns:
        `(batch_size, Tq, dv)` in the dtype of `value`.

    Example:

    >>> import numpy as np
    >>> value = np.arange(12, dtype="float32").reshape(2, 3, 2)
    >>> np.asarray(gather_positions(value, np.array([[2, 0], [1, 1]]),
    ...                             np.array([[True, True], [True, False]])))
    array([[[4., 5.],
            [0., 1.]],
    <BLANKLINE>
           [[8., 9.],
            [0., 0.]]], dtype=float32)
    """
    batch_size, value_length = ops.shape(value)[0], ops.shape(value)[1]
    query_length, value_dim = ops.shape(index)[1], value.shape[-1]
    if value.shape[1] == 0:  # an empty memory: nothing to gather
        return ops.zeros((batch_size, query_length, value_dim), value.dtype)
    offsets = ops.expand_dims(ops.arange(batch_size, dtype="int32") * value_length, 1)  # (B, 1)
    flat_index = ops.cast(index, "int32") + offsets
    table = ops.reshape(value, (-1, value_dim))
    if valid is not None or value.shape[1] is None:
        # Invalid rows, and every row of a memory empty at run time (a traced `None` length),
        # read one zero row appended to the table: never out of range.
        keep = ops.greater(value_length, 0)
        if valid is not None:
            keep = ops.logical_and(valid, keep)
        flat_index = ops.where(keep, flat_index, batch_size * value_length)
        table = ops.concatenate([table, ops.zeros((1, value_dim), value.dtype)], axis=0)
    rows = ops.take(table, ops.reshape(flat_index, (-1,)), axis=0)  # (B * Tq, dv)
    return ops.reshape(rows, (batch_size, query_length, value_dim))


def position_selector(positions, length):
    """Bool `(batch_size, P, length)`: row `p` is true at `positions[b, p]` only.

    The one-hot form of positions, for gathering rows as a product
    (`einsum("bpt,btd->bpd", selector, x)`): exact for one-hot weights, it
    works for an empty or traced-empty sequence and gives a zero row for a
    position outside `[0, length)`, where `gather_positions` needs positions
    inside a non-empty memory.

    Example:

    >>> import numpy as np
    >>> np.asarray(position_selector(np.array([[2, 5]]), 3)).astype(int).tolist()
    [[[0, 0, 1], [0, 0, 0]]]
    """
    return ops.equal(
        ops.expand_dims(ops.cast(positions, "int32"), -1), ops.arange(length, dtype="int32")
    )


def gumbel_softmax(scores, noise, temperature, mask=None):
    """The Gumbel-softmax relaxation `softmax((score + g) / τ)`, masked, float32.

    Masked positions get exactly zero weight; a fully masked row is all zero.
    """
    logits = (ops.cast(scores, "float32") + ops.cast(noise, "float32")) / temperature
    return masked_softmax(logits, mask)


def sample_log_prob(scores, weights, mask=None):
    """`log softmax(scores)` at the chosen position: float32 `(...)`.

    Args:
        scores: `(..., Tv)` raw scores (the policy is their masked softmax).
        weights: one-hot `(..., Tv)` marking the chosen position; a zero row
            (nothing chosen) gives `0`.
        mask: optional boolean mask broadcastable to `scores`.

    Example:

    >>> import numpy as np
    >>> log_prob = sample_log_prob(np.zeros((1, 4), "float32"),
    ...                            np.array([[0., 1., 0., 0.]], "float32"),
    ...                            np.array([[True, True, False, False]]))
    >>> np.round(np.asarray(log_prob), 4)  # log(1/2): two unmasked positions
    array([-0.6931], dtype=float32)
    """
    scores = ops.cast(scores, "float32")
    if mask is not None:
        mask = ops.broadcast_to(as_bool_mask(mask), ops.shape(scores))
        scores = ops.where(mask, scores, ops.cast(large_negative("float32"), "float32"))
    log_probs = ops.log_softmax(scores, axis=-1)
    chosen = ops.greater(ops.cast(weights, "float32"), 0.0)
    return ops.sum(ops.where(chosen, log_probs, ops.zeros_like(log_probs)), axis=-1)


def reinforce_loss(log_prob, reward, baseline=0.0):
    """The REINFORCE surrogate loss `-mean_b[(r_b - b) Σ_t log π(a_bt)]`.

    Its gradient is the REINFORCE (score-function) estimate of the gradient of
    `-E[r]`: `-(r - b) ∇ log π(a)`, with the reward and the baseline held
    constant (`stop_gradient`). The log-probabilities of a query sequence are
    summed, so a per-example reward credits the joint choice of all steps.

    Args:
        log_prob: `(batch_size,)` or `(batch_size, Tq)` log-probabilities of
            the sampled positions (`HardAttention(..., return_log_prob=True)`).
        reward: `(batch_size,)` or the shape of `log_prob`, e.g. the log
            likelihood of the target given the sample (Xu et al. 2015).
        baseline: scalar or broadcastable to `reward`, subtracted from it.
            Defaults to `0.0`.

    Returns:
        float32 scalar loss.

    Example:

    >>> import numpy as np
    >>> loss = reinforce_loss(np.log(np.array([0.5, 0.25], "float32")),
    ...                       reward=np.array([1.0, 3.0], "float32"), baseline=1.0)
    >>> round(float(loss), 4)  # -((1 - 1) log 0.5 + (3 - 1) log 0.25) / 2
    1.3863
    """
    log_prob = ops.cast(log_prob, "float32")
    advantage = ops.stop_gradient(ops.cast(reward, "float32") - ops.cast(baseline, "float32"))
    while len(advantage.shape) < len(log_prob.shape):
        advantage = ops.expand_dims(advantage, -1)  # a per-example reward for every step
    surrogate = advantage * log_prob
    if len(surrogate.shape) > 1:
        surrogate = ops.sum(surrogate, axis=tuple(range(1, len(surrogate.shape))))
    return -ops.mean(surrogate)


def _first_argmax(x):
    """int32 argmax over the last axis (the first maximum on ties), from builtin TFLite ops.

    `ops.argmax` on floats adds a sign-bit test (a `BitwiseAnd`) that TFLite
    has no builtin kernel for; a max, a comparison and a min do the same.
    """
    length = ops.shape(x)[-1]
    positions = ops.arange(length, dtype="int32")  # (Tv,)
    # `initial`: an empty batch or an empty `Tv` has no maximum (position 0 is then returned).
    top = _last_axis_reduce("max", x, float("-inf"), keepdims=True)
    is_max = ops.equal(x, top)
    first = _last_axis_reduce("min", ops.where(is_max, positions, ops.cast(length, "int32")),
                              ops.cast(length, "int32"))  # fmt: skip
    # In range even for NaN rows; 0 for an empty `Tv`.
    return ops.maximum(ops.minimum(first, ops.cast(length - 1, "int32")), 0)


def _last_axis_reduce(kind, x, initial, keepdims=False):
    """`ops.max` or `ops.min` (`kind`) of `x` over its last axis with `initial`.

    `initial` only matters for an empty `x`, and no value of `x` lies beyond it here. On
    JAX and PyTorch shapes are static: an empty `x` gives `initial` directly (Keras'
    PyTorch `max`/`min` return a `(1, ..., 1)` tensor for an empty input whatever the axis)
    and a non-empty one is reduced by `ops.amax`/`ops.amin` (Keras' PyTorch `max`/`min`
    break a `torch.compile` graph).
    """
    if keras.backend.backend() == "tensorflow":
        reduce = ops.max if kind == "max" else ops.min
        return reduce(x, axis=-1, keepdims=keepdims, initial=initial)
    shape = tuple(x.shape)
    if 0 in shape:
        return ops.full(shape[:-1] + ((1,) if keepdims else ()), initial, dtype=x.dtype)
    reduce = ops.amax if kind == "max" else ops.amin
    return reduce(x, axis=-1, keepdims=keepdims)
