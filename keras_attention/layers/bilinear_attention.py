"""Bilinear (Luong "general", multiplicative) attention."""

import keras

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import bilinear_score


@keras.saving.register_keras_serializable(package="keras_attention")
class BilinearAttention(WeightOptionsMixin, BaseScoreAttention):
    """Bilinear attention: `score(s, h) = hᵀ W s` with a trainable `W` of shape `(dk, dq)`.

    Query and key may have different depths.

    Args:
        kernel_initializer: initializer of `W`. Defaults to `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of `W`.
        kernel_constraint: optional constraint of `W`.
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        See `BaseScoreAttention`.

    Returns:
        Context `(batch_size[, Tq], dv)` [and weights `(batch_size[, Tq], Tv)`].

    Example:

    >>> import numpy as np
    >>> layer = BilinearAttention()
    >>> query = np.random.rand(2, 3, 6).astype("float32")
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> tuple(layer(query, value).shape), tuple(layer.kernel.shape)
    ((2, 3, 4), (4, 6))

    References:
        Luong et al., 2015, "Effective Approaches to Attention-based Neural
        Machine Translation".
    """

    def __init__(
        self,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        kernel_constraint=None,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self._set_weight_options(
            kernel_initializer, "zeros", kernel_regularizer, None, kernel_constraint, None
        )

    def build_score(self, query_dim, key_dim):
        self.kernel = self._add_kernel("kernel", (key_dim, query_dim))

    def score(self, query, key, value_length):
        return bilinear_score(query, key, self.kernel)

    def get_config(self):
        options = self._weight_options_config()
        return {
            **super().get_config(),
            **{
                k: options[k]
                for k in ("kernel_initializer", "kernel_regularizer", "kernel_constraint")
            },
        }


register_score("bilinear", BilinearAttention)
# Luong et al. call the bilinear score "general".
register_score("general", BilinearAttention)
