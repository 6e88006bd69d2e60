"""Monotonic attention (Raffel et al. 2017): expected alignments in training, hard at inference."""

import numbers
import warnings

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import additive_score, apply_attention, bilinear_score, dot_score
from keras_attention.ops.checks import check_inputs
from keras_attention.ops.loops import step_loop, step_seed
from keras_attention.ops.monotonic import (
    expected_monotonic_alignment,
    hard_monotonic_alignment,
)
from keras_attention.utils import one_of, renamed_argument
from keras_attention.utils.validation import positive_int

_SCORE_MODES = ("additive", "general", "dot")
_MODES = ("auto", "expected", "hard")


@keras.saving.register_keras_serializable(package="keras_attention")
class MonotonicAttention(WeightOptionsMixin, BaseScoreAttention):
    """Monotonic attention: the decoder scans the memory left to right and never goes back.

    Query step `i` and memory position `j` give an energy `e_ij = score(s_i,
    h_j) + r` (`score` additive `vᵀ tanh(W s + U h)`, Luong general `hᵀ W s` or
    dot `hᵀ s`; `r` a learned scalar, initialised to `score_bias_init`) and a
    stopping probability `p_ij = sigmoid(e_ij)`. Starting from `α_0 = [1, 0,
    ...]` (or a given `previous_alignment`):

    - expected alignment (training): `α_ij = p_ij Σ_{k<=j} α_{i-1,k}
      Π_{l=k}^{j-1} (1 - p_il)`, computed exactly in log space (see
      `expected_monotonic_alignment`). It may sum to less than 1: the rest of
      the mass ran off the end of the memory. With `sigmoid_noise > 0`,
      Gaussian noise of that standard deviation is added to `e` before the
      sigmoid, in training only, which pushes `p` towards 0 or 1.
    - hard alignment (inference): from the previously attended position
      (inclusive), attend to the first `j` with `p_ij >= 0.5`; the alignment is
      one-hot, or zero (zero context) if there is none, and then stays zero.
      Alignments never move backwards.

    The context is `c_i = Σ_j α_ij h_j`. Padded memory positions get `p = 0`
    and zero weight. A query sequence `(batch_size, Tq, dq)` runs the
    recurrence over its steps; a single step `(batch_size, dq)` with
    `previous_alignment` is the streaming form, and
    `return_attention_scores=True` returns the new alignment to feed back (for
    a padded step, `query_mask` false, the previous alignment unchanged, and a
    zero context), so a step-by-step decode equals one sequence call.

    Args:
        units: positive int, hidden size of the additive score; required for
            `score="additive"`, unused otherwise. Defaults to `None`.
        score: `"additive"` (Bahdanau), `"general"` (`hᵀ W s`, `W` of shape
            `(dk, dq)`) or `"dot"` (`hᵀ s`, needs `dq == dk`). Defaults to
            `"additive"`. Kept as the attribute `score_function` (`score` is
            the score method). (`score_mode` is its deprecated name.)
        score_bias_init: float, initial value of the scalar energy bias `r`;
            the paper's `-4` makes every `p` small at first, so the expected
            attention starts spread over the memory. Defaults to `-4.0`.
        sigmoid_noise: float `>= 0`, standard deviation of the pre-sigmoid
            noise in training. Defaults to `0.0`.
        mode: `"auto"` (expected alignments when `training=True`, hard ones
            otherwise), `"expected"` (always expected) or `"hard"` (always
            hard). Defaults to `"auto"`.
        kernel_initializer, kernel_regularizer, kernel_constraint: options of
            the score kernels. Defaults to `"glorot_uniform"`, `None`, `None`.
        seed: optional int, seed of the sigmoid noise.
        **kwargs: base layer arguments. There is no `dropout`: a non-zero
            value raises `ValueError` rather than being ignored.

    Call arguments:
        query: `(batch_size, dq)` (one step) or `(batch_size, Tq, dq)`.
        value: the memory `(batch_size, Tv, dv)`.
        key: optional `(batch_size, Tv, dk)` scored instead of `value`.
        previous_alignment: optional `(batch_size, Tv)`, the alignment before
            the first query step. Defaults to `initial_alignment(...)`.
        query_mask: boolean `(batch_size, Tq)`; padded query steps give zero
            output and weights and leave the alignment unchanged.
        value_mask, key_mask: boolean `(batch_size, Tv)` padding masks.
        mask: `[query_mask, value_mask]`, as in `keras.layers.Attention`.
        return_attention_scores: bool, also return the alignments. Defaults to
            `False`.
        training: bool, selects the expected alignment and the noise.

    Returns:
        Context `(batch_size[, Tq], dv)`, and with `return_attention_scores=True`
        the alignments `(batch_size[, Tq], Tv)`.

    Example:

    >>> import numpy as np
    >>> layer = MonotonicAttention(units=8)
    >>> query = np.random.rand(2, 3, 6).astype("float32")
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> context, alignments = layer(query, value, return_attention_scores=True)
    >>> tuple(context.shape), tuple(alignments.shape)
    ((2, 3, 4), (2, 3, 5))
    >>> step = layer.initial_alignment(2, 5)
    >>> context, step = layer(query[:, 0], value, previous_alignment=step,
    ...                       return_attention_scores=True)
    >>> tuple(context.shape), tuple(step.shape)
    ((2, 4), (2, 5))

    References:
        Raffel et al., 2017, "Online and Linear-Time Attention by Enforcing
        Monotonic Alignments".
    """

    def __init__(
        self,
        units=None,
        score="additive",
        score_bias_init=-4.0,
        sigmoid_noise=0.0,
        mode="auto",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        seed=None,
        **kwargs,
    ):
        name = type(self).__name__
        score = renamed_argument(name, kwargs, "score_mode", "score", score, "additive")
        dropout = kwargs.pop("dropout", 0.0)
        if dropout:
            # Dropping alignment mass would break the monotone recurrence (each step's alignment
            # is built from the previous one), so there is no dropout to turn on.
            raise ValueError(
                f"{name}: has no dropout (the alignments feed the next step's recurrence). "
                f"Received: dropout={dropout!r}"
            )
        super().__init__(seed=seed, **kwargs)
        score = one_of(name, "score", score, _SCORE_MODES)
        if mode not in _MODES:
            raise ValueError(f"{name}: `mode` must be one of {_MODES}. Received: mode={mode!r}")
        if score == "additive" or units is not None:
            units = positive_int(name, "units", units)
        if isinstance(score_bias_init, bool) or not isinstance(score_bias_init, numbers.Real):
            raise ValueError(
                f"{name}: `score_bias_init` must be a number. "
                f"Received: score_bias_init={score_bias_init!r}"
            )
        if (
            isinstance(sigmoid_noise, bool)
            or not isinstance(sigmoid_noise, numbers.Real)
            or not sigmoid_noise >= 0
        ):
            raise ValueError(
                f"{name}: `sigmoid_noise` must be a number >= 0. "
                f"Received: sigmoid_noise={sigmoid_noise!r}"
            )
        self.units = units
        self.score_function = score
        self.score_bias_init = float(score_bias_init)
        self.sigmoid_noise = float(sigmoid_noise)
        self.mode = mode
        self._set_weight_options(
            kernel_initializer, "zeros", kernel_regularizer, None, kernel_constraint, None
        )
        self.seed_generator = keras.random.SeedGenerator(seed) if self.sigmoid_noise else None

    @property
    def score_mode(self):
        """Deprecated: the old name of the `score` argument (`score_function`)."""
        warnings.warn(
            "MonotonicAttention.score_mode is deprecated; use score_function.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.score_function

    # -- score ----------------------------------------------------------------------------------

    def validate_dims(self, query_dim, key_dim, value_dim):
        if self.score_function == "dot" and query_dim != key_dim:
            raise ValueError(
                f"{type(self).__name__}: `score='dot'` needs query and key of the same "
                f"depth. Received: query dim={query_dim}, key dim={key_dim}"
            )

    def build_score(self, query_dim, key_dim):
        if self.score_function == "additive":
            self.query_kernel = self._add_kernel("query_kernel", (query_dim, self.units))
            self.key_kernel = self._add_kernel("key_kernel", (key_dim, self.units))
            self.attention_v = self._add_kernel("attention_v", (self.units,))
        elif self.score_function == "general":
            self.kernel = self._add_kernel("kernel", (key_dim, query_dim))
        self.score_bias = self.add_weight(
            name="score_bias",
            shape=(),
            initializer=keras.initializers.Constant(self.score_bias_init),
        )

    def score(self, query, key, value_length):
        if self.score_function == "additive":
            projected_query = ops.matmul(query, ops.cast(self.query_kernel, query.dtype))
            projected_key = ops.matmul(key, ops.cast(self.key_kernel, key.dtype))
            scores = additive_score(projected_query, projected_key, self.attention_v)
        elif self.score_function == "general":
            scores = bilinear_score(query, key, self.kernel)
        else:
            scores = dot_score(query, key)
        return scores + ops.cast(self.score_bias, scores.dtype)  # (B, Tq, Tv)

    # -- Keras API ------------------------------------------------------------------------------

    def initial_alignment(self, batch_size, value_length):
        """`α_0 = [1, 0, ..., 0]` for every batch entry: float32 `(batch_size, value_length)`."""
        first = ops.cast(ops.equal(ops.arange(value_length, dtype="int32"), 0), "float32")
        return ops.broadcast_to(ops.expand_dims(first, 0), (batch_size, value_length))

    def call(
        self,
        query,
        value,
        key=None,
        previous_alignment=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
        return_attention_scores=False,
        training=None,
    ):
        inputs = self._prepare_inputs(
            query, value, key, mask, query_mask, value_mask, key_mask, None, False
        )
        query, key, query_mask = inputs.query, inputs.key, inputs.query_mask
        memory_mask = inputs.padding_mask  # (B, Tv)
        batch_size = ops.shape(query)[0]
        query_length, value_length = inputs.query_length, inputs.value_length

        energies = ops.cast(self.score(query, key, value_length), "float32")  # (B, Tq, Tv)
        if training and self.sigmoid_noise:
            noise = keras.random.normal(ops.shape(energies), seed=step_seed(self.seed_generator))
            energies = energies + self.sigmoid_noise * noise
        hard = self.mode == "hard" or (self.mode == "auto" and not training)
        step_fn = hard_monotonic_alignment if hard else expected_monotonic_alignment

        if previous_alignment is None:
            previous_alignment = self.initial_alignment(batch_size, value_length)
        else:  # checked against this call's memory at every call
            _, previous_alignment = check_inputs(
                type(self).__name__,
                [("value", value, ("batch_size", "Tv", None)),
                 ("previous_alignment", previous_alignment, ("batch_size", "Tv"))],
            )  # fmt: skip
            dtype = keras.backend.standardize_dtype(previous_alignment.dtype)
            if not dtype.startswith(("float", "bfloat")):
                raise ValueError(
                    f"{type(self).__name__}: `previous_alignment` must be a float tensor (weights "
                    f"over the memory). Received: previous_alignment.dtype={dtype}"
                )
        previous_alignment = ops.cast(previous_alignment, "float32")
        if query_mask is None:
            step_mask = ops.ones((batch_size, query_length), "float32")
        else:
            step_mask = ops.cast(query_mask, "float32")  # (B, Tq)
        steps = ops.arange(query_length, dtype="int32")

        def body(i, state):
            alignment, alignments = state
            new = step_fn(ops.take(energies, i, axis=1), alignment, memory_mask)  # (B, Tv)
            valid = ops.expand_dims(ops.take(step_mask, i, axis=1), -1)  # (B, 1)
            # A padded query step gives zero weights and leaves the alignment as it was.
            alignment = valid * new + (1.0 - valid) * alignment
            here = ops.cast(ops.equal(steps, i), "float32")[None, :, None]  # (1, Tq, 1)
            alignments = alignments + here * ops.expand_dims(valid * new, 1)
            return alignment, alignments

        alignments = ops.zeros((batch_size, query_length, value_length), "float32")
        # `maximum_iterations` bounds the loop, which XLA needs to differentiate it (`fori_loop`
        # alone gives "XLA compilation requires a fixed tensor list size" in the gradient).
        carried, alignments = step_loop(
            query_length,
            lambda i, *state: body(i, state),
            (previous_alignment, alignments),
            maximum_iterations=query_length,
        )
        weights = ops.cast(alignments, self.compute_dtype)  # (B, Tq, Tv)
        context = apply_attention(weights, value)  # (B, Tq, dv)
        if inputs.single_step and return_attention_scores:
            # The streaming form returns the alignment to feed back: a padded step's is the
            # previous one, unchanged (its context is zero), not its zero weights.
            weights = ops.expand_dims(ops.cast(carried, self.compute_dtype), 1)

        outputs = (context, weights) if return_attention_scores else (context,)
        return self._finish_outputs(inputs, outputs)

    def get_config(self):
        config = super().get_config()
        config.pop("dropout", None)
        options = self._weight_options_config()
        config.update(
            {
                "units": self.units,
                "score": self.score_function,
                "score_bias_init": self.score_bias_init,
                "sigmoid_noise": self.sigmoid_noise,
                "mode": self.mode,
                **{
                    k: options[k]
                    for k in ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
                },
            }
        )
        return config
