"""Luong local attention: local-m (monotonic) and local-p (predictive, with a Gaussian window)."""

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin, position_offset
from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import (
    apply_attention,
    bilinear_score,
    compute_attention_mask,
    concat_score,
    dot_score,
    masked_softmax,
    merge_padding_masks,
)
from keras_attention.ops.local_window import local_window
from keras_attention.utils.validation import positive_int

MODES = ("monotonic", "predictive")
SCORES = ("dot", "general", "concat")


@keras.saving.register_keras_serializable(package="keras_attention")
class LocalAttention(WeightOptionsMixin, BaseScoreAttention):
    """Local attention over a window `[p - D, p + D]` around an aligned source position `p`.

    `align(h_t, h̄_s)` is the softmax of the scores restricted to the window
    (positions outside it, padded or otherwise masked get exactly zero
    weight).

    - `mode="monotonic"` (local-m): `p_t = t + query_offset`, the decoder
      step, and the weights are `align` itself (the paper's eq. 7 over the
      window: they sum to 1).
    - `mode="predictive"` (local-p): `p_t = S · sigmoid(v_pᵀ tanh(W_p h_t))`
      with `W_p` of shape `(dq, units)`, and the weights are
      `a(s) = align(h_t, h̄_s) · exp(-(s - p_t)² / (2σ²))` with `σ = D / 2`
      (eq. 10), favouring positions near the real-valued `p_t`. As in the
      paper they are NOT renormalised after the Gaussian: they sum to at
      most 1. `S` is the source length: the number of unmasked value
      positions of each example when a value (or key) mask is given (the
      mask is assumed to pad on the right), else `Tv`. So `p_t ∈ [0, S]`;
      `query_offset` is ignored.

    Args:
        window: positive int, the half-width `D` of the window. Defaults to `4`.
        mode: `"monotonic"` (local-m) or `"predictive"` (local-p). Defaults to
            `"monotonic"`.
        score: the score function inside the window: `"dot"` (`hᵀ s`),
            `"general"` (`hᵀ W s`) or `"concat"` (`vᵀ tanh(W [s; h])`).
            Defaults to `"general"`.
        units: optional positive int, the hidden size of the position network
            (local-p) and of the `"concat"` score. Defaults to `None`: the
            query depth.
        gaussian: bool, multiply the weights by the Gaussian around `p_t`.
            Defaults to `None`: as in the paper, `True` for local-p and
            `False` for local-m. (Before stop 39 local-m applied it too; a
            layer saved with its config, without this option, keeps doing so.
            An `AttentionDecoder` or `Seq2SeqTranslator` that named it
            `score="local_monotonic"` saved the bare name, which now builds the
            paper's local-m: one saved before stop 39 answers differently. From
            stop 40 they save local scores as layers, the choice included.)
        kernel_initializer: initializer of every weight. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of every weight.
        kernel_constraint: optional constraint of every weight.
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        query, value, key, query_mask, value_mask, key_mask, mask,
        attention_mask, use_causal_mask, training: see `BaseScoreAttention`.
            With a one-step query `use_causal_mask` is allowed and uses
            `query_offset` as the query's position.
        query_offset: non-negative int or scalar int tensor, the decoder step
            of the first query (local-m, step-wise decoding). Defaults to `0`.
        return_attention_scores: bool, also return the weights. Defaults to
            `False`.
        return_positions: bool, also return the aligned positions `p_t`
            (float32, `(batch_size[, Tq])`). Defaults to `False`.

    Returns:
        The context `(batch_size[, Tq], dv)`, then the weights
        `(batch_size[, Tq], Tv)` if `return_attention_scores`, then the
        positions if `return_positions`. The output carries the query's mask.

    Example:

    >>> import numpy as np
    >>> layer = LocalAttention(window=1, mode="monotonic", score="dot")
    >>> query = np.random.rand(1, 3, 4).astype("float32")
    >>> value = np.random.rand(1, 6, 4).astype("float32")
    >>> context, weights = layer(query, value, return_attention_scores=True)
    >>> (np.asarray(weights)[0] > 0).astype(int)
    array([[1, 1, 0, 0, 0, 0],
           [1, 1, 1, 0, 0, 0],
           [0, 1, 1, 1, 0, 0]])

    References:
        Luong et al., 2015, "Effective Approaches to Attention-based Neural
        Machine Translation", section 3.2.
    """

    def __init__(
        self,
        window=4,
        mode="monotonic",
        score="general",
        units=None,
        gaussian=None,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        name = type(self).__name__
        if gaussian is not None and not isinstance(gaussian, bool):
            raise ValueError(
                f"{name}: `gaussian` must be a bool or None (the paper's choice for the mode). "
                f"Received: gaussian={gaussian!r}"
            )
        window = positive_int(name, "window", window)
        if mode not in MODES:
            raise ValueError(f"{name}: `mode` must be one of {MODES}. Received: mode={mode!r}")
        if score not in SCORES:
            raise ValueError(f"{name}: `score` must be one of {SCORES}. Received: score={score!r}")
        if units is not None:
            units = positive_int(name, "units", units)
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.window = window
        self.mode = mode
        self.score_function = score
        self.units = units
        self.gaussian = (mode == "predictive") if gaussian is None else gaussian
        self._set_weight_options(
            kernel_initializer, "zeros", kernel_regularizer, None, kernel_constraint, None
        )

    # -- score hooks ----------------------------------------------------------------------------

    def validate_dims(self, query_dim, key_dim, value_dim):
        if self.score_function == "dot" and query_dim != key_dim:
            raise ValueError(
                f'{type(self).__name__}: score="dot" needs query and key of the same depth. '
                f"Received: query_dim={query_dim}, key_dim={key_dim}"
            )

    def build_score(self, query_dim, key_dim):
        units = self.units or query_dim
        if self.score_function == "general":
            self.kernel = self._add_kernel("kernel", (key_dim, query_dim))
        elif self.score_function == "concat":
            self.kernel = self._add_kernel("kernel", (query_dim + key_dim, units))
            self.attention_v = self._add_kernel("attention_v", (units,))
        if self.mode == "predictive":
            self.position_kernel = self._add_kernel("position_kernel", (query_dim, units))
            self.position_v = self._add_kernel("position_v", (units,))

    def score(self, query, key, value_length):
        if self.score_function == "general":
            return bilinear_score(query, key, self.kernel)
        if self.score_function == "concat":
            return concat_score(query, key, self.kernel, self.attention_v)
        return dot_score(query, key)

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
        query_offset=0,
        return_attention_scores=False,
        return_positions=False,
        training=None,
    ):
        query_offset = position_offset(type(self).__name__, "query_offset", query_offset)
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
            allow_single_step_causal=True,
        )
        positions = self._aligned_positions(
            inputs.query, inputs.padding_mask, inputs.value_length, query_offset
        )  # (B, Tq)
        window_mask, gaussian = local_window(positions, inputs.value_length, self.window)
        combined_mask = compute_attention_mask(
            query_mask=inputs.query_mask,
            value_mask=inputs.padding_mask,
            attention_mask=merge_padding_masks(inputs.attention_mask, window_mask),
            use_causal_mask=use_causal_mask,
            query_length=inputs.query_length,
            value_length=inputs.value_length,
            causal_offset=query_offset,
        )
        scores = self.score(inputs.query, inputs.key, inputs.value_length)  # (B, Tq, Tv)
        weights = masked_softmax(scores, combined_mask)  # align, (B, Tq, Tv)
        if self.gaussian:  # in float32; masked positions stay exactly zero
            weights = ops.cast(ops.cast(weights, "float32") * gaussian, weights.dtype)
        context = apply_attention(self._dropout_layer(weights, training=training), value)
        outputs = (context,)
        if return_attention_scores:
            outputs += (weights,)
        if return_positions:
            outputs += (positions,)
        return self._finish_outputs(inputs, outputs)

    def compute_output_spec(
        self, query, value, key=None, return_attention_scores=False, return_positions=False, **kw
    ):
        per_query = ("float32",) if return_positions else ()
        return self._output_specs(query, value, key, return_attention_scores, per_query)

    def get_config(self):
        options = self._weight_options_config()
        return {
            **super().get_config(),
            "window": self.window,
            "mode": self.mode,
            "score": self.score_function,
            "units": self.units,
            "gaussian": self.gaussian,
            **{
                k: options[k]
                for k in ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
            },
        }

    @classmethod
    def from_config(cls, config):
        # A layer saved before the option existed applied the Gaussian in both modes.
        return super().from_config({"gaussian": True, **config})

    # -- helpers --------------------------------------------------------------------------------

    def _aligned_positions(self, query, padding_mask, value_length, query_offset):
        """The aligned positions `p_t`, float32 `(B, Tq)`."""
        batch_size, query_length = ops.shape(query)[0], ops.shape(query)[1]
        if self.mode == "monotonic":
            steps = ops.arange(query_length, dtype="int32") + ops.cast(query_offset, "int32")
            steps = ops.cast(ops.expand_dims(steps, 0), "float32")  # (1, Tq)
            return ops.broadcast_to(steps, (batch_size, query_length))  # (B, Tq)
        hidden = ops.tanh(ops.matmul(query, ops.cast(self.position_kernel, query.dtype)))
        logits = ops.sum(hidden * ops.cast(self.position_v, hidden.dtype), axis=-1)  # (B, Tq)
        if padding_mask is None:
            source_length = ops.cast(value_length, "float32")
        else:
            source_length = ops.sum(ops.cast(padding_mask, "float32"), axis=-1, keepdims=True)
        return source_length * ops.sigmoid(ops.cast(logits, "float32"))  # (B, Tq)


register_score("local_monotonic", LocalAttention, mode="monotonic")
register_score("local_predictive", LocalAttention, mode="predictive")
