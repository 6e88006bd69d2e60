"""Additive (Bahdanau) attention."""

import math

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import additive_score
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class AdditiveAttention(WeightOptionsMixin, BaseScoreAttention):
    """Bahdanau attention: `score(s, h) = vᵀ tanh(W s + U h + b)`.

    `W` `(dq, units)` projects the query, `U` `(dk, units)` the key, `v` is a
    `(units,)` vector. With `normalize=True` it is the weight-normalised form
    of Salimans & Kingma (2016) used by TensorFlow's seq2seq: `v` is replaced
    by `g · v / ‖v‖` with a trainable scalar `g` (initialised to `√(1/units)`).

    Args:
        units: positive int, the size of the hidden layer of the score.
        use_bias: bool, add the bias `b` inside the `tanh`. Defaults to `True`.
        normalize: bool, weight-normalise `v`. Defaults to `False`.
        kernel_initializer: initializer of `W`, `U` and `v`. Defaults to
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
    >>> layer = AdditiveAttention(units=16)
    >>> query = np.random.rand(2, 8).astype("float32")  # one decoder step
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> context, weights = layer(query, value, return_attention_scores=True)
    >>> tuple(context.shape), np.allclose(np.asarray(weights).sum(-1), 1.0)
    ((2, 4), True)

    References:
        Bahdanau et al., 2015, "Neural Machine Translation by Jointly Learning
        to Align and Translate".
    """

    def __init__(
        self,
        units,
        use_bias=True,
        normalize=False,
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
        self.normalize = bool(normalize)
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    def build_score(self, query_dim, key_dim):
        self.query_kernel = self._add_kernel("query_kernel", (query_dim, self.units))
        self.key_kernel = self._add_kernel("key_kernel", (key_dim, self.units))
        self.attention_v = self._add_kernel("attention_v", (self.units,))
        self.bias = self._add_bias("bias", (self.units,)) if self.use_bias else None
        self.attention_g = None
        if self.normalize:
            self.attention_g = self.add_weight(
                name="attention_g",
                shape=(),
                initializer=keras.initializers.Constant(math.sqrt(1.0 / self.units)),
            )

    def effective_v(self):
        """`v`, or `g · v / ‖v‖` when `normalize=True`."""
        if not self.normalize:
            return self.attention_v
        return (
            self.attention_g * self.attention_v * ops.rsqrt(ops.sum(ops.square(self.attention_v)))
        )

    def score(self, query, key, value_length):
        return self.score_projected(query, self.project_key(key), value_length)

    def project_key(self, key):
        """`U h`: `(batch_size, Tv, units)`, the key's half of the score (see `BaseScoreAttention`)."""
        key = self._key_to_project(key)
        return ops.matmul(key, ops.cast(self.key_kernel, key.dtype))  # (B, Tv, units)

    def score_projected(self, query, projected_key, value_length):
        projected_query = ops.matmul(
            query, ops.cast(self.query_kernel, query.dtype)
        )  # (B, Tq, units)
        return additive_score(projected_query, projected_key, self.effective_v(), self.bias)

    def projected_key_dim(self, key_dim):
        return self.units

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "normalize": self.normalize,
            **self._weight_options_config(),
        }


register_score("additive", AdditiveAttention, units=True)
