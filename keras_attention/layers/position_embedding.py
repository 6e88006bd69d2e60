"""Learned absolute position embeddings."""

import keras
from keras import ops

from keras_attention.layers._common import check_positions, clone_initializer, position_offset
from keras_attention.ops.checks import check_inputs
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class PositionEmbedding(keras.layers.Layer):
    """Learned position embeddings: one trainable `dim`-vector per position.

    Position `p` is encoded by row `p` of a `(sequence_length, dim)` table
    (as in BERT and GPT-2). The layer returns the embeddings of the input's
    positions; add them to the token embeddings yourself. `dim` is taken from
    the input's last axis when the layer is built. The output carries the
    input's Keras mask.

    Positions must lie in `[0, sequence_length)`. With a `start_index` known
    when called (a Python int, an eager or constant tensor) and a statically
    known `seq_len`, a longer input raises a `ValueError`. Values only known
    at run time (a traced `start_index` or a `None` length) are not checked by
    the layer: TensorFlow on CPU and TFLite raise, XLA clamps positions to the
    last row and JAX gives NaN rows, so keep
    `start_index + seq_len <= sequence_length` in decoding loops.

    Args:
        sequence_length: positive int, the number of positions in the table
            (the longest sequence, counting the decoding offset).
        initializer: initializer of the table. Defaults to `"glorot_uniform"`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(batch_size, seq_len, dim)`; only its shape is used.
        start_index: int or scalar int tensor, the position of the first
            element (a decoding step at position `t` passes `t`). Defaults to
            `0`.

    Every call checks that `inputs` has rank 3 and the size the layer was built
    with.

    Returns:
        Rows `start_index, ..., start_index + seq_len - 1` of the table,
        broadcast to `(batch_size, seq_len, dim)`, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = PositionEmbedding(sequence_length=16)
    >>> x = np.zeros((2, 5, 8), "float32")
    >>> tuple(layer(x).shape), tuple(layer.embeddings.shape)
    ((2, 5, 8), (16, 8))
    >>> step = layer(x[:, :1], start_index=3)  # decoding the 4th position
    >>> bool(np.array_equal(step[0, 0], layer.embeddings[3]))
    True

    References:
        Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
        Transformers for Language Understanding"; Gehring et al., 2017,
        "Convolutional Sequence to Sequence Learning".
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = positive_int("PositionEmbedding", "sequence_length", sequence_length)
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "PositionEmbedding: `inputs` must have rank 3 `(batch_size, seq_len, dim)` "
                f"with a known `dim`. Received: inputs.shape={input_shape}"
            )
        check_positions("PositionEmbedding", input_shape[1], 0, self.sequence_length)
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=clone_initializer(self.initializer),
        )
        self.built = True

    def call(self, inputs, start_index=0):
        (inputs,) = check_inputs(
            "PositionEmbedding", [("inputs", inputs, ("batch_size", "T", self.embeddings.shape[-1]))]
        )
        start_index = position_offset("PositionEmbedding", "start_index", start_index)
        check_positions("PositionEmbedding", inputs.shape[1], start_index, self.sequence_length)
        shape = ops.shape(inputs)
        positions = ops.arange(shape[1], dtype="int32") + ops.cast(start_index, "int32")
        # A gather, not a slice: XLA compiles a slice anew for every start value.
        rows = ops.take(self.embeddings, positions, axis=0)  # (seq_len, dim)
        rows = ops.cast(ops.expand_dims(rows, 0), self.compute_dtype)
        return ops.broadcast_to(rows, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, start_index=0):
        check_positions("PositionEmbedding", inputs.shape[1], start_index, self.sequence_length)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }
