"""Scaled dot-product attention."""

import math
import numbers

import keras

from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.layers.dot_attention import _require_same_depth
from keras_attention.ops import scaled_dot_score


@keras.saving.register_keras_serializable(package="keras_attention")
class ScaledDotAttention(BaseScoreAttention):
    """Scaled dot-product attention: `score(s, h) = hᵀ s / √n`, `n` the key depth.

    Args:
        scale: optional float replacing `1/√n`. Defaults to `None` (`1/√n`).
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        See `BaseScoreAttention`; `query` and `key` must have the same depth.

    Returns:
        Context `(batch_size[, Tq], dv)` [and weights `(batch_size[, Tq], Tv)`].

    Example:

    >>> import numpy as np
    >>> layer = ScaledDotAttention()
    >>> query = np.random.rand(2, 8).astype("float32")  # one decoder step
    >>> value = np.random.rand(2, 5, 8).astype("float32")
    >>> tuple(layer(query, value).shape)
    (2, 8)

    References:
        Vaswani et al., 2017, "Attention Is All You Need".
    """

    def __init__(self, scale=None, dropout=0.0, seed=None, **kwargs):
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        if scale is not None:
            if (
                isinstance(scale, bool)
                or not isinstance(scale, numbers.Real)
                or not math.isfinite(scale)
                or scale <= 0
            ):
                raise ValueError(
                    f"`scale` must be a positive float or None. Received: scale={scale!r}"
                )
            scale = float(scale)
        self.scale = scale

    def validate_dims(self, query_dim, key_dim, value_dim):
        _require_same_depth(type(self).__name__, query_dim, key_dim)

    def score(self, query, key, value_length):
        return scaled_dot_score(query, key, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


register_score("scaled_dot", ScaledDotAttention)
