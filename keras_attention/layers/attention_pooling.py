"""Attention pooling with a learned context vector (HAN word and sentence attention)."""

import keras

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._dropout import Dropout
from keras_attention.ops import attention_pool, context_vector_score, masked_softmax
from keras_attention.ops.checks import check_inputs
from keras_attention.utils.validation import positive_int, rate


@keras.saving.register_keras_serializable(package="keras_attention")
class AttentionPooling(WeightOptionsMixin, keras.layers.Layer):
    """Pools a sequence into one vector with attention against a learned context vector.

    Every position `t` of the annotations `h` gets a hidden representation
    `u_t = tanh(W h_t + b)` and a weight `a_t = softmax_t(u_tᵀ u_w)`, where the
    context vector `u_w` is a weight learned with the rest of the network (a
    fixed query: "which position is informative?"). The output is
    `Σ_t a_t h_t`. Padded positions get exactly zero weight; a fully padded
    sequence gives a zero vector and zero weights.

    Args:
        units: optional positive int, the size of `u_t` and `u_w`. Defaults
            to `None`: the input depth `d`.
        use_bias: bool, whether `u_t` has the bias `b`. Defaults to `True`.
        kernel_initializer: initializer of `W` and of `u_w`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of `b`. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer of `W` and `u_w`.
        bias_regularizer: optional regularizer of `b`.
        kernel_constraint: optional constraint of `W` and `u_w`.
        bias_constraint: optional constraint of `b`.
        dropout: float in `[0, 1)`, dropout on the attention weights when
            `training=True`. Defaults to `0.0`.
        seed: optional int, seed of the dropout. Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the annotations `(batch_size, T, d)`.
        mask: optional boolean `(batch_size, T)`; `False` marks padded
            positions, which get exactly zero weight. Filled from the input's
            Keras mask (e.g. an `Embedding(mask_zero=True)` upstream) when not
            given.
        return_attention_scores: bool, also return the weights `a`
            `(batch_size, T)` (before dropout; they sum to 1 over unmasked
            positions and are all zero on a fully masked row). Defaults to
            `False`.
        training: bool, whether dropout is active.

    Every call checks `inputs` against the size the layer was built with and
    `mask` against `inputs`; a float mask raises `ValueError`.

    Returns:
        The pooled vector `(batch_size, d)`, and with
        `return_attention_scores=True` the weights `(batch_size, T)`. The
        output has no sequence axis, so it carries no mask.

    Example:

    >>> import numpy as np
    >>> layer = AttentionPooling(units=4)
    >>> h = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    >>> mask = np.array([[True, True, True, False, False], [True] * 5])
    >>> pooled, weights = layer(h, mask=mask, return_attention_scores=True)
    >>> tuple(pooled.shape), tuple(weights.shape)
    ((2, 3), (2, 5))
    >>> np.asarray(weights)[0, 3:]
    array([0., 0.], dtype=float32)
    >>> np.asarray(weights).sum(-1).round(5)
    array([1., 1.], dtype=float32)

    References:
        Yang et al., 2016, "Hierarchical Attention Networks for Document
        Classification", section 2.2 (word and sentence attention).
    """

    def __init__(
        self,
        units=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        name = type(self).__name__
        if units is not None:
            units = positive_int(name, "units", units)
        if not isinstance(use_bias, bool):
            raise ValueError(f"{name}: `use_bias` must be a bool. Received: use_bias={use_bias!r}")
        dropout = rate(name, "dropout", dropout)
        super().__init__(**kwargs)
        self.units = units
        self.use_bias = use_bias
        self.dropout = dropout
        self.seed = seed
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )
        self.supports_masking = True  # consumes the mask; `compute_mask` returns None

    def build(self, inputs_shape):
        input_dim = self._validate_shape(inputs_shape)
        self._input_dim = input_dim
        units = self.units or input_dim
        self.kernel = self._add_kernel("kernel", (input_dim, units))
        self.bias = self._add_bias("bias", (units,)) if self.use_bias else None
        self.context_vector = self._add_kernel("context_vector", (units,))
        self._dropout_layer = Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.built = True

    def call(self, inputs, mask=None, return_attention_scores=False, training=None):
        self._validate_shape(inputs.shape)
        inputs, mask = check_inputs(
            type(self).__name__,
            [("inputs", inputs, ("batch_size", "T", getattr(self, "_input_dim", None)))],
            masks=[("mask", mask, ("batch_size", "T"))],
        )
        scores = context_vector_score(inputs, self.kernel, self.context_vector, self.bias)  # (B, T)
        weights = masked_softmax(scores, mask)  # (B, T), zero on padding
        pooled = attention_pool(self._dropout_layer(weights, training=training), inputs)  # (B, d)
        return (pooled, weights) if return_attention_scores else pooled

    def compute_mask(self, inputs, previous_mask=None):
        return None

    def compute_output_shape(self, inputs_shape):
        self._validate_shape(inputs_shape)
        return (inputs_shape[0], inputs_shape[-1])

    def compute_output_spec(self, inputs, return_attention_scores=False, **kwargs):
        output = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return output
        return output, keras.KerasTensor(tuple(inputs.shape[:2]), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            **self._weight_options_config(),
            "dropout": self.dropout,
            "seed": self.seed,
        }

    # -- helpers --------------------------------------------------------------------------------

    def _validate_shape(self, inputs_shape):
        inputs_shape = tuple(inputs_shape)
        name = type(self).__name__
        if len(inputs_shape) != 3:
            raise ValueError(
                f"{name}: `inputs` must have rank 3 `(batch_size, T, d)`. "
                f"Received: inputs.shape={inputs_shape}"
            )
        if inputs_shape[-1] is None:
            raise ValueError(
                f"{name}: the last dimension of `inputs` must be known. "
                f"Received: inputs.shape={inputs_shape}"
            )
        return inputs_shape[-1]
