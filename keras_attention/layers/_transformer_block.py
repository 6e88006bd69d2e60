"""What the Transformer encoder and decoder blocks share: arguments, sublayers, feed-forward."""

import numbers

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._dropout import Dropout
from keras_attention.layers.multi_head_attention import MultiHeadAttention
from keras_attention.ops.activations import fused_gelu_in_training, gelu, gelu_approximate
from keras_attention.ops.hard import position_selector
from keras_attention.ops.masking import as_bool_mask
from keras_attention.utils.masking import attach_keras_mask
from keras_attention.utils.validation import positive_int, rate


class TransformerBlock(WeightOptionsMixin, keras.layers.Layer):
    """Base of `TransformerEncoderBlock` and `TransformerDecoderBlock` (not public).

    Holds the constructor arguments, `get_config`, the sublayer factories and
    the residual feed-forward sublayer `x + Dropout(W_2 act(W_1 LN(x)))`
    (pre-LN) or `LN(x + Dropout(W_2 act(W_1 x)))` (post-LN).
    """

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        key_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        attention_dropout=None,
        activation="relu",
        layer_norm_epsilon=1e-5,
        normalize_first=False,
        chunk_size="auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        rotary_max_wavelength=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        layer = type(self).__name__
        self.intermediate_dim = positive_int(layer, "intermediate_dim", intermediate_dim)
        self.num_heads = positive_int(layer, "num_heads", num_heads)
        self.key_dim = None if key_dim is None else positive_int(layer, "key_dim", key_dim)
        self.num_key_value_heads = (
            None
            if num_key_value_heads is None
            else positive_int(layer, "num_key_value_heads", num_key_value_heads)
        )
        if self.num_key_value_heads is not None and self.num_heads % self.num_key_value_heads:
            raise ValueError(
                f"{layer}: `num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, num_key_value_heads={num_key_value_heads}"
            )
        self.dropout = rate(layer, "dropout", dropout)
        if attention_dropout is None:
            self.attention_dropout = self.dropout
        else:
            try:
                self.attention_dropout = rate(None, "dropout", attention_dropout)
            except ValueError:
                raise ValueError(
                    f"{layer}: `attention_dropout` must be a float in [0, 1). "
                    f"Received: attention_dropout={attention_dropout!r}"
                ) from None
        self.activation = keras.activations.get(activation)
        if (
            isinstance(layer_norm_epsilon, bool)
            or not isinstance(layer_norm_epsilon, numbers.Real)
            or not layer_norm_epsilon > 0
        ):
            raise ValueError(
                f"{layer}: `layer_norm_epsilon` must be a positive float. "
                f"Received: layer_norm_epsilon={layer_norm_epsilon!r}"
            )
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.normalize_first = bool(normalize_first)
        MultiHeadAttention(num_heads=1, key_dim=1, chunk_size=chunk_size)  # validates it
        self.chunk_size = chunk_size
        self.seed = seed
        if rotary_max_wavelength is not None:  # validated here, not at build
            MultiHeadAttention(num_heads=1, key_dim=2, rotary_max_wavelength=rotary_max_wavelength)
        self.rotary_max_wavelength = rotary_max_wavelength
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )
        self.supports_masking = True

    # -- build ------------------------------------------------------------------------------

    def _check_sequence_shape(self, arg, shape):
        shape = tuple(shape)
        if len(shape) != 3 or shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: `{arg}` must have rank 3 `(batch_size, length, dim)` "
                f"with a known last dimension. Received: {arg}.shape={shape}"
            )
        return shape

    def _attention(self, name, hidden_dim, seed_offset):
        """An unbuilt `MultiHeadAttention` whose output has the hidden size."""
        key_dim = self.key_dim
        if key_dim is None:
            if hidden_dim % self.num_heads:
                raise ValueError(
                    f"{type(self).__name__}: without `key_dim`, the hidden size "
                    f"{hidden_dim} must be divisible by `num_heads`; pass `key_dim` or "
                    f"change `num_heads`. Received: num_heads={self.num_heads}, "
                    f"hidden_dim={hidden_dim}"
                )
            key_dim = hidden_dim // self.num_heads
        return MultiHeadAttention(
            num_heads=self.num_heads,
            key_dim=key_dim,
            num_key_value_heads=self.num_key_value_heads,
            dropout=self.attention_dropout,
            output_dim=hidden_dim,
            chunk_size=self.chunk_size,
            seed=self._seed(seed_offset),
            # Rotary positions rotate a sequence's own queries and keys: self-attention only.
            rotary_max_wavelength=(
                self.rotary_max_wavelength if name == "self_attention" else None
            ),
            name=name,
            dtype=self.dtype_policy,
            **self._sublayer_weight_options(),
        )

    def _layer_norm(self, name, shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype_policy
        )
        norm.build(shape)
        return norm

    def _dropout(self, name, seed_offset):
        return Dropout(
            self.dropout, seed=self._seed(seed_offset), name=name, dtype=self.dtype_policy
        )

    def _seed(self, offset):
        # Distinct seeds per sublayer: equal seeds would give every dropout the same mask.
        return None if self.seed is None else self.seed + offset

    # Whether the feed-forward layer norm is created before the dense layers: the weight order
    # of keras_hub's TransformerEncoder (before) and TransformerDecoder (after), so that
    # `block.set_weights(keras_hub_block.get_weights())` copies their weights.
    _feedforward_layer_norm_first = True

    def _build_feedforward(self, shape):
        hidden_dim = shape[-1]
        if self._feedforward_layer_norm_first:
            self._feedforward_layer_norm = self._layer_norm("feedforward_layer_norm", shape)
        self._feedforward_intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,  # the activation follows in `_feedforward`
            name="feedforward_intermediate_dense",
            dtype=self.dtype_policy,
            **self._sublayer_weight_options(),
        )
        self._feedforward_intermediate_dense.build(shape)
        self._feedforward_output_dense = keras.layers.Dense(
            hidden_dim,
            name="feedforward_output_dense",
            dtype=self.dtype_policy,
            **self._sublayer_weight_options(),
        )
        self._feedforward_output_dense.build(shape[:-1] + (self.intermediate_dim,))
        if not self._feedforward_layer_norm_first:
            self._feedforward_layer_norm = self._layer_norm("feedforward_layer_norm", shape)
        self._feedforward_dropout = self._dropout("feedforward_dropout", seed_offset=4)

    # -- call -------------------------------------------------------------------------------

    def _pre_norm(self, norm, x):
        return norm(x) if self.normalize_first else x

    def _add_residual(self, norm, dropout, x, residual, training):
        x = dropout(x, training=training) + residual
        return x if self.normalize_first else norm(x)

    def _feedforward(self, x, training):
        residual = x
        x = self._pre_norm(self._feedforward_layer_norm, x)
        x = self._activate(self._feedforward_intermediate_dense(x), training)
        x = self._feedforward_output_dense(x)
        return self._add_residual(
            self._feedforward_layer_norm, self._feedforward_dropout, x, residual, training
        )

    def _activate(self, x, training):
        """The feed-forward activation; while training, GELU through `ops.gelu`'s fused kernels."""
        # `fit` passes `True`; a tensor `training` (Keras makes one of a NumPy bool) keeps
        # Keras's activation: the same values.
        if training is True and fused_gelu_in_training():
            if self.activation is keras.activations.gelu:
                return gelu(x, approximate=False)
            if self.activation is gelu_approximate:
                return gelu(x, approximate=True)
        return self.activation(x)

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "num_key_value_heads": self.num_key_value_heads,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "normalize_first": self.normalize_first,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            **self._weight_options_config(),
        }


def zero_padded_positions(x, mask):
    """Zeros `x` at padded positions (`mask == False`) and attaches the mask as its Keras mask."""
    if mask is None:
        return x
    mask = as_bool_mask(mask, "padding mask")
    x = ops.where(ops.expand_dims(mask, -1), x, ops.zeros_like(x))
    attach_keras_mask(x, mask)
    return x


def rows_at_positions(tensors, positions, padding_mask=None, attention_mask=None):
    """The rows at `positions` of each `(B, T, D)` tensor, with their query masks.

    For a block that computes its outputs at some positions only (a masked
    LM's last block): returns `(rows, query_mask, attention_rows)`, the rows
    `(B, P, D)` of each tensor, the bool `(B, P)` mask of the positions that
    are inside `[0, T)` and not padded, and the rows `(B, P, T)` of
    `attention_mask` (or `None`). A position outside the sequence gives a
    zero row and is masked (its output is then zeros, as at a padded
    position). A one-hot product (`ops.position_selector`), as in
    `MaskedLMHead`: it also works for empty sequences.
    """
    select = position_selector(positions, ops.shape(tensors[0])[1])  # (B, P, T) bool
    rows = tuple(ops.einsum("bpt,btd->bpd", ops.cast(select, x.dtype), x) for x in tensors)
    if padding_mask is not None:
        select = ops.logical_and(select, ops.expand_dims(as_bool_mask(padding_mask), 1))
    query_mask = ops.any(select, axis=-1)  # inside the sequence and not padded
    if attention_mask is not None:
        attention_mask = as_bool_mask(attention_mask, "attention mask")
        picked = ops.einsum("bpt,bts->bps", ops.cast(select, "float32"),
                            ops.cast(attention_mask, "float32"))  # fmt: skip
        attention_mask = ops.greater(picked, 0.5)
    return rows, query_mask, attention_mask
