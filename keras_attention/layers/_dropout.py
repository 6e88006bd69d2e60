"""`Dropout`: `keras.layers.Dropout` drawing its mask with `ops.dropout` (cheaper on TensorFlow)."""

import keras

from keras_attention.ops.dropout import dropout


@keras.saving.register_keras_serializable(package="keras_attention")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, the same arguments, config and seed state.

    Without `noise_shape`, training draws its keep decisions with
    `keras_attention.ops.dropout`: on TensorFlow 16 random bits per element
    instead of 32 (the dropout of every attention layer and Transformer block
    here; about 6% of a BERT pre-training step on a 2-core CPU, median of three rounds).
    """

    def call(self, inputs, training=False):
        if training and 0 < self.rate < 1 and self.noise_shape is None:
            return dropout(inputs, self.rate, self.seed_generator)
        return super().call(inputs, training=training)
