"""Concat attention (Luong "concat")."""

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import additive_score
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class ConcatAttention(WeightOptionsMixin, BaseScoreAttention):
    """Concat attention: `score(s, h) = vᵀ tanh(W [s; h] + b)`.

    One kernel `W` of shape `(dq + dk, units)` acts on the concatenation of
    query and key (rows `[:dq]` on the query, `[dq:]` on the key); `v` is a
    `(units,)` vector.

    Args:
        units: positive int, the size of the hidden layer of the score.
        use_bias: bool, add the bias `b` inside the `tanh`. Defaults to `True`.
        kernel_initializer: initializer of `W` and `v`. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of `b`. Defaults to `"zeros"`.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: optional, applied to the kernels / the bias.
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        See `BaseScoreAttention`.

    Returns:
        Context `(batch_size[, Tq], dv)` [and weights `(batch_size[, Tq], Tv)`].

    Example:

    >>> import numpy as np
    >>> layer = ConcatAttention(units=16)
    >>> query = np.random.rand(2, 3, 8).astype("float32")
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> tuple(layer(query, value).shape), tuple(layer.kernel.shape)
    ((2, 3, 4), (12, 16))

    References:
        Luong et al., 2015, "Effective Approaches to Attention-based Neural
        Machine Translation".
    """

    def __init__(
        self,
        units,
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
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.units = positive_int(type(self).__name__, "units", units)
        self.use_bias = bool(use_bias)
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    def build_score(self, query_dim, key_dim):
        self.kernel = self._add_kernel("kernel", (query_dim + key_dim, self.units))
        self.attention_v = self._add_kernel("attention_v", (self.units,))
        self.bias = self._add_bias("bias", (self.units,)) if self.use_bias else None

    def score(self, query, key, value_length):
        return self.score_projected(query, self.project_key(key), value_length)

    def project_key(self, key):
        """`W[dq:] h`: `(batch_size, Tv, units)`, the key's half of `W [s; h]`."""
        key = self._key_to_project(key)
        query_dim = self._input_dims[0]
        return ops.matmul(key, ops.cast(self.kernel, key.dtype)[query_dim:])  # (B, Tv, units)

    def score_projected(self, query, projected_key, value_length):
        query_dim = query.shape[-1]
        projected_query = ops.matmul(query, ops.cast(self.kernel, query.dtype)[:query_dim])
        return additive_score(projected_query, projected_key, self.attention_v, self.bias)

    def projected_key_dim(self, key_dim):
        return self.units

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            **self._weight_options_config(),
        }


register_score("concat", ConcatAttention, units=True)
