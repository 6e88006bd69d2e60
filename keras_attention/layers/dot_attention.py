"""Dot-product (Luong "dot") attention."""

import keras

from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import dot_score


@keras.saving.register_keras_serializable(package="keras_attention")
class DotAttention(BaseScoreAttention):
    """Dot-product attention: `score(s, h) = hᵀ s`, no parameters.

    The same as `keras.layers.Attention(score_mode="dot")`, with the call
    contract of `BaseScoreAttention` (one-step queries, `value_mask`,
    fully masked rows give zeros).

    Args:
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        See `BaseScoreAttention`; `query` and `key` must have the same depth.

    Returns:
        Context `(batch_size[, Tq], dv)` [and weights `(batch_size[, Tq], Tv)`].

    Example:

    >>> import numpy as np
    >>> layer = DotAttention()
    >>> query = np.random.rand(2, 3, 4).astype("float32")
    >>> value = np.random.rand(2, 5, 4).astype("float32")
    >>> context, weights = layer(query, value, return_attention_scores=True)
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 4), (2, 3, 5))

    References:
        Luong et al., 2015, "Effective Approaches to Attention-based Neural
        Machine Translation".
    """

    def validate_dims(self, query_dim, key_dim, value_dim):
        _require_same_depth(type(self).__name__, query_dim, key_dim)

    def score(self, query, key, value_length):
        return dot_score(query, key)


def _require_same_depth(layer_name, query_dim, key_dim):
    if query_dim != key_dim:
        raise ValueError(
            f"{layer_name}: the query depth must equal the key depth. "
            f"Received: query_dim={query_dim}, key_dim={key_dim}"
        )


register_score("dot", DotAttention)
