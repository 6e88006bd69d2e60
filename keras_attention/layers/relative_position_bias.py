"""T5 relative position bias: a learned scalar per head and bucket of relative positions."""

import keras
from keras import ops

from keras_attention.layers._common import clone_initializer, position_offset
from keras_attention.ops.positions import relative_position_bucket
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class RelativePositionBias(keras.layers.Layer):
    """T5 relative position bias (Raffel et al. 2020), added to attention logits.

    The relative position of key `j` seen from query `i` is `j - i`
    (`i` counted from `query_offset`). It is mapped to one of `num_buckets`
    buckets as in the original mesh-tensorflow `_relative_position_bucket`:
    with `bidirectional=True` half of the buckets are for keys after the
    query; within a half, the first `n // 2` buckets (`n` the buckets of the
    half) hold the distances `0, 1, ...` exactly and the rest are
    logarithmically spaced up to `max_distance`, beyond which all distances
    share the last bucket. With `bidirectional=False` (causal decoders) all
    buckets are for keys at or before the query and later keys share bucket
    `0`. Each bucket has a learned scalar per head; the layer returns the
    scalars as an additive bias for the attention logits.

    Args:
        num_heads: positive int, the number of attention heads.
        num_buckets: int, the number of buckets: at least `4` with
            `bidirectional=True`, `2` otherwise. Defaults to `32`.
        max_distance: int, the distance from which on all distances share a
            bucket; greater than the number of exact buckets. Defaults to
            `128`.
        bidirectional: bool, whether keys after the query get buckets of their
            own (encoders) or share bucket `0` (causal decoders). Defaults to
            `True`.
        embeddings_initializer: initializer of the `(num_buckets, num_heads)`
            table. Defaults to `"random_normal"` (standard deviation `0.05`).
        **kwargs: base layer arguments.

    Call arguments:
        query: `(batch_size, Tq, ...)`; only its length is used.
        key: optional `(batch_size, Tk, ...)`; only its length is used.
            Defaults to `query`.
        query_offset: int or scalar int tensor, the position of the first
            query among the keys. With a decoding cache the keys span the
            `Tk` cache positions and a step at position `t` passes `t`.
            Defaults to `0`.

    Returns:
        The bias `(1, num_heads, Tq, Tk)` in the compute dtype, to add to the
        `(batch_size, num_heads, Tq, Tk)` attention logits.

    Example:

    >>> import numpy as np
    >>> layer = RelativePositionBias(num_heads=4, num_buckets=8, max_distance=16)
    >>> x = np.zeros((2, 5, 16), "float32")
    >>> bias = layer(x)
    >>> tuple(bias.shape)
    (1, 4, 5, 5)
    >>> step = layer(x[:, :1], key=x, query_offset=3)  # the query at position 3
    >>> bool(np.array_equal(step[0, :, 0], bias[0, :, 3]))
    True

    References:
        Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a
        Unified Text-to-Text Transformer"; Shaw et al., 2018, "Self-Attention
        with Relative Position Representations".
    """

    def __init__(
        self,
        num_heads,
        num_buckets=32,
        max_distance=128,
        bidirectional=True,
        embeddings_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = "RelativePositionBias"
        self.num_heads = positive_int(name, "num_heads", num_heads)
        if not isinstance(bidirectional, bool):
            raise ValueError(
                f"{name}: `bidirectional` must be a bool. Received: bidirectional={bidirectional!r}"
            )
        self.bidirectional = bidirectional
        self.num_buckets = positive_int(name, "num_buckets", num_buckets)
        fewest = 4 if bidirectional else 2
        if num_buckets < fewest:
            raise ValueError(
                f"{name}: `num_buckets` must be at least {fewest} with "
                f"bidirectional={bidirectional}. Received: num_buckets={num_buckets}"
            )
        self.max_distance = positive_int(name, "max_distance", max_distance)
        exact = _exact_buckets(num_buckets, bidirectional)
        if max_distance <= exact:
            raise ValueError(
                f"{name}: `max_distance` must be greater than the {exact} exact buckets "
                f"(num_buckets={num_buckets}, bidirectional={bidirectional}). "
                f"Received: max_distance={max_distance}"
            )
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        # The bias has no sequence axis of the input: it takes the masks and returns none.
        self.supports_masking = True

    def build(self, query_shape, key_shape=None):
        _check_ranks(query_shape, key_shape)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.num_heads),
            initializer=clone_initializer(self.embeddings_initializer),
        )
        self.built = True

    def call(self, query, key=None, query_offset=0):
        _check_ranks(query.shape, None if key is None else key.shape)  # at every call
        query_offset = position_offset("RelativePositionBias", "query_offset", query_offset)
        key = query if key is None else key
        query_positions = ops.arange(ops.shape(query)[1], dtype="int32") + ops.cast(
            query_offset, "int32"
        )
        key_positions = ops.arange(ops.shape(key)[1], dtype="int32")
        relative = ops.expand_dims(key_positions, 0) - ops.expand_dims(query_positions, 1)
        buckets = relative_position_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )  # (Tq, Tk)
        bias = ops.take(self.embeddings, buckets, axis=0)  # (Tq, Tk, heads)
        bias = ops.expand_dims(ops.transpose(bias, (2, 0, 1)), 0)  # (1, heads, Tq, Tk)
        return ops.cast(bias, self.compute_dtype)

    def compute_mask(self, query, previous_mask=None):
        return None

    def compute_output_shape(self, query_shape, key_shape=None):
        key_shape = query_shape if key_shape is None else key_shape
        return (1, self.num_heads, query_shape[1], key_shape[1])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


def _check_ranks(query_shape, key_shape):
    for arg, shape in (("query", query_shape), ("key", key_shape)):
        if shape is not None and len(shape) < 2:
            raise ValueError(
                f"RelativePositionBias: `{arg}` must have rank 2 or more "
                f"`(batch_size, length, ...)`. Received: {arg}.shape={tuple(shape)}"
            )


def _exact_buckets(num_buckets, bidirectional):
    """The number of buckets that hold one distance each (per direction)."""
    return (num_buckets // 2 if bidirectional else num_buckets) // 2
