"""Location-based attention (Luong "location")."""

import keras

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers._scores import register_score
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import location_score
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class LocationAttention(WeightOptionsMixin, BaseScoreAttention):
    """Location-based attention: `a = softmax(W s + b)` over source positions.

    The weights depend on the query only: `W` `(dq, max_length)` maps the
    decoder state to one score per source position. The source length is fixed
    at construction (`max_length`); a memory of length `Tv <= max_length` uses
    the first `Tv` scores, so positions beyond the real length get no weight,
    and padded positions inside it are masked with `value_mask` as usual.
    `key` is accepted for the shared call contract but does not enter the score.

    Args:
        max_length: positive int, the longest source length.
        use_bias: bool, add the bias `b`. Defaults to `True`.
        kernel_initializer: initializer of `W`. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of `b`. Defaults to `"zeros"`.
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: optional.
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        See `BaseScoreAttention`; `value` must have `Tv <= max_length`.

    Returns:
        Context `(batch_size[, Tq], dv)` [and weights `(batch_size[, Tq], Tv)`].

    Example:

    >>> import numpy as np
    >>> layer = LocationAttention(max_length=10)
    >>> query = np.random.rand(2, 3, 8).astype("float32")
    >>> value = np.random.rand(2, 6, 4).astype("float32")  # Tv = 6 <= 10
    >>> _, weights = layer(query, value, return_attention_scores=True)
    >>> tuple(weights.shape)
    (2, 3, 6)

    References:
        Luong et al., 2015, "Effective Approaches to Attention-based Neural
        Machine Translation".
    """

    def __init__(
        self,
        max_length,
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
        self.max_length = positive_int("LocationAttention", "max_length", max_length)
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
        self.kernel = self._add_kernel("kernel", (query_dim, self.max_length))
        self.bias = self._add_bias("bias", (self.max_length,)) if self.use_bias else None

    def score(self, query, key, value_length):
        message = f"LocationAttention: the memory is longer than `max_length={self.max_length}`."
        static_length = key.shape[1]
        if static_length is not None and static_length > self.max_length:
            raise ValueError(f"{message} Received: value.shape={tuple(key.shape)}")
        if static_length is None and keras.backend.backend() == "tensorflow":
            # Known only at run time (a traced signature with `None` lengths): asserted there,
            # instead of the scores silently keeping `max_length` columns.
            import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

            assertion = tf.debugging.Assert(
                tf.cast(value_length, "int32") <= self.max_length,
                [message, "Received: value length", value_length],
            )
            with tf.control_dependencies([assertion]):
                value_length = tf.identity(value_length)
        return location_score(query, self.kernel, value_length, self.bias)

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "use_bias": self.use_bias,
            **self._weight_options_config(),
        }


register_score("location", LocationAttention, max_length=True)
