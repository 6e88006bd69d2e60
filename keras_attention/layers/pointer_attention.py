"""Pointer attention (Vinyals et al. 2015): the attention distribution over the inputs is the output."""

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import additive_score, compute_attention_mask, masked_softmax
from keras_attention.ops.pointer import masked_logits
from keras_attention.utils.validation import positive_int

OUTPUT_MODES = ("probabilities", "logits")


@keras.saving.register_keras_serializable(package="keras_attention")
class PointerAttention(WeightOptionsMixin, BaseScoreAttention):
    """Points at input positions: `p(C_i = j) = softmax_j(u_ij)`, `u_ij = vᵀ tanh(W1 e_j + W2 d_i)`.

    A pointer network's output at decoder step `i` is a distribution over the
    positions `j` of its input, not a context vector: `e_j` are the encoder
    states (the `value`, or `key` when given), `d_i` the decoder states (the
    `query`), `W1` `(dk, units)`, `W2` `(dq, units)` and `v` `(units,)`. The
    distribution is the output (no weighted sum of the values is taken).

    Masks decide where it may point: padded inputs (`value_mask`) and the
    positions already chosen at earlier steps, passed as `attention_mask`
    (`False` where chosen; `keras_attention.ops.pointer_availability_mask`
    builds it from teacher-forced pointers, a decoder passes
    `logical_not(chosen)` one step at a time). Masked positions get exactly
    zero probability; a row with nothing left to point at (a padded query, a
    fully masked input) is all zeros, never NaN. The softmax runs in float32.

    Args:
        units: positive int, the size of the hidden layer of the score.
        output_mode: `"probabilities"` (the distribution itself) or
            `"logits"` (the scores `u_ij`, with masked positions set to the
            dtype's most negative finite value and fully masked rows zero,
            for a stable cross-entropy `from_logits=True`; their softmax is
            the distribution). Defaults to `"probabilities"`.
        use_bias: bool, add a bias inside the `tanh` (the paper has none).
            Defaults to `False`.
        kernel_initializer: initializer of `W1`, `W2` and `v`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: optional, applied to the kernels / the bias.
        **kwargs: base layer arguments (`name`, `dtype`, ...). There is no
            dropout: dropping entries of the output distribution would make
            it point nowhere.

    Call arguments:
        query: the decoder state(s) `d`: one step `(batch_size, dq)` or a
            sequence `(batch_size, Tq, dq)`.
        value: the encoder states `e` `(batch_size, Tv, dv)` pointed at.
        key: optional `(batch_size, Tv, dk)` scored instead of `value`.
        query_mask: boolean `(batch_size, Tq)`; padded decoder steps give a
            zero row. Filled from the query's Keras mask when not given.
        value_mask: boolean `(batch_size, Tv)`; `False` marks padded inputs.
            Filled from the value's Keras mask when not given.
        key_mask: boolean `(batch_size, Tv)`, ANDed with `value_mask`.
        mask: `[query_mask, value_mask]`, as taken by `keras.layers.Attention`.
        attention_mask: boolean `(batch_size, Tq, Tv)` (`(batch_size, Tv)` for
            one step), `False` at positions that may not be chosen, e.g. those
            already pointed to.
        use_causal_mask: bool, step `i` only points at positions `<= i`.
            Defaults to `False`.
        return_attention_scores: bool, also return the probabilities (the
            same as the output with `output_mode="probabilities"`). Defaults
            to `False`.
        training: unused (no dropout); accepted for the call contract.

    Returns:
        The probabilities (or logits) `(batch_size[, Tq], Tv)`, and with
        `return_attention_scores=True` also the probabilities. The output
        carries the query's mask.

    Example:

    >>> import numpy as np
    >>> layer = PointerAttention(units=16)
    >>> decoder_state = np.random.rand(2, 8).astype("float32")  # one step
    >>> encoder_states = np.random.rand(2, 4, 8).astype("float32")
    >>> chosen = np.array([[True, False, False, False], [False, False, True, True]])
    >>> p = np.asarray(layer(decoder_state, encoder_states, attention_mask=~chosen))
    >>> p.shape, bool(np.all(p[chosen] == 0.0)), np.allclose(p.sum(-1), 1.0)
    ((2, 4), True, True)

    References:
        Vinyals et al., 2015, "Pointer Networks".
    """

    def __init__(
        self,
        units,
        output_mode="probabilities",
        use_bias=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        name = type(self).__name__
        units = positive_int(name, "units", units)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(
                f"{name}: `output_mode` must be one of {OUTPUT_MODES}. "
                f"Received: output_mode={output_mode!r}"
            )
        for arg, default in (("dropout", 0.0), ("seed", None)):
            value = kwargs.pop(arg, default)
            if value != default:
                raise ValueError(
                    f"{name}: has no dropout (the output is the distribution itself), so "
                    f"`{arg}` must be left at {default!r}. Received: {arg}={value!r}"
                )
        super().__init__(**kwargs)
        self.units = units
        self.output_mode = output_mode
        self.use_bias = bool(use_bias)
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    # -- score hooks ----------------------------------------------------------------------------

    def build_score(self, query_dim, key_dim):
        self.key_kernel = self._add_kernel("key_kernel", (key_dim, self.units))  # W1
        self.query_kernel = self._add_kernel("query_kernel", (query_dim, self.units))  # W2
        self.attention_v = self._add_kernel("attention_v", (self.units,))
        self.bias = self._add_bias("bias", (self.units,)) if self.use_bias else None

    def score(self, query, key, value_length):
        projected_query = ops.matmul(query, ops.cast(self.query_kernel, query.dtype))
        projected_key = ops.matmul(key, ops.cast(self.key_kernel, key.dtype))
        return additive_score(projected_query, projected_key, self.attention_v, self.bias)

    # -- Keras API ------------------------------------------------------------------------------

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
    ):
        inputs = self._prepare_inputs(
            query,
            value,
            key,
            mask,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask,
        )
        scores = self.score(inputs.query, inputs.key, inputs.value_length)  # (B, Tq, Tv)
        combined_mask = compute_attention_mask(
            query_mask=inputs.query_mask,
            value_mask=inputs.padding_mask,
            attention_mask=inputs.attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=inputs.query_length,
            value_length=inputs.value_length,
        )
        probabilities = masked_softmax(scores, combined_mask)  # (B, Tq, Tv)
        if self.output_mode == "logits":
            output = masked_logits(scores, combined_mask)  # (B, Tq, Tv)
        else:
            output = probabilities
        outputs = (output, probabilities) if return_attention_scores else (output,)
        return self._finish_outputs(inputs, outputs)

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._validate_shapes(query_shape, value_shape, key_shape)
        return tuple(query_shape[:-1]) + (value_shape[1],)

    def get_config(self):
        config = super().get_config()
        for arg in ("dropout", "seed"):
            config.pop(arg, None)
        return {
            **config,
            "units": self.units,
            "output_mode": self.output_mode,
            "use_bias": self.use_bias,
            **self._weight_options_config(),
        }
