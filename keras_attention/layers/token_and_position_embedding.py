"""Token embeddings plus position embeddings, the input layer of a Transformer."""

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import check_positions, clone_initializer, position_offset
from keras_attention.layers.position_embedding import PositionEmbedding
from keras_attention.layers.sinusoidal_position_encoding import (
    SinusoidalPositionEncoding,
)
from keras_attention.ops.checks import check_inputs
from keras_attention.utils.validation import positive_int

POSITIONS = ("learned", "sinusoidal")


@keras.saving.register_keras_serializable(package="keras_attention")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Embeds token ids and adds the embedding of each position.

    `output[b, t] = E[ids[b, t]] + P[start_index + t]` with `E` a
    `(vocabulary_size, embedding_dim)` token table and `P` either a learned
    `(sequence_length, embedding_dim)` table (`position="learned"`, a
    `PositionEmbedding`) or the fixed sinusoids of Vaswani et al.
    (`position="sinusoidal"`, a `SinusoidalPositionEncoding`).

    With `mask_zero=True` id `0` is padding: the output carries the mask
    `ids != 0`, so a following `MultiHeadAttention` gives padded keys no
    weight and zeros padded query rows. Padded positions still get
    `E[0] + P[t]` (nothing is zeroed).

    Ids must lie in `[0, vocabulary_size)`. Ids given as NumPy arrays, lists
    or concrete (not traced) JAX arrays are checked and raise a `ValueError`.
    Other tensors are not checked: TensorFlow on CPU and TFLite raise for ids
    `>= vocabulary_size`, but XLA clamps them, TensorFlow on GPU gives zeros,
    traced JAX gives NaN rows, and negative ids count from the end of the
    table (`keras.ops.take`), so check ids in the input pipeline. Positions must lie in `[0, sequence_length)` in both modes: a
    statically known longer input raises a `ValueError`.

    Args:
        vocabulary_size: positive int, the number of token ids.
        sequence_length: positive int, the number of positions (the longest
            sequence, counting the decoding offset).
        embedding_dim: positive int, the size of the embeddings.
        mask_zero: bool, whether id `0` is padding and masked. Defaults to
            `False`.
        position: `"learned"` or `"sinusoidal"`. Defaults to `"learned"`.
        embeddings_initializer: initializer of the token table and of the
            learned position table (each gets a fresh copy). Defaults to
            `"uniform"`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: int token ids `(batch_size, seq_len)`.
        start_index: int or scalar int tensor, the position of the first
            token (a decoding step at position `t` passes `t`). Defaults to
            `0`.

    Every call checks that `inputs` has rank 2 `(batch_size, seq_len)`.

    Returns:
        `(batch_size, seq_len, embedding_dim)` in the compute dtype, with the
        padding mask when `mask_zero=True`.

    Example:

    >>> import numpy as np
    >>> layer = TokenAndPositionEmbedding(
    ...     vocabulary_size=100, sequence_length=16, embedding_dim=8, mask_zero=True)
    >>> ids = np.array([[5, 7, 9, 0], [3, 0, 0, 0]])
    >>> x = layer(ids)
    >>> tuple(x.shape)
    (2, 4, 8)
    >>> np.asarray(x._keras_mask)
    array([[ True,  True,  True, False],
           [ True, False, False, False]])

    References:
        Vaswani et al., 2017, "Attention Is All You Need"; Devlin et al.,
        2019, "BERT: Pre-training of Deep Bidirectional Transformers for
        Language Understanding".
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        embedding_dim,
        mask_zero=False,
        position="learned",
        embeddings_initializer="uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = "TokenAndPositionEmbedding"
        self.vocabulary_size = positive_int(name, "vocabulary_size", vocabulary_size)
        self.sequence_length = positive_int(name, "sequence_length", sequence_length)
        self.embedding_dim = positive_int(name, "embedding_dim", embedding_dim)
        if not isinstance(mask_zero, bool):
            raise ValueError(
                f"{name}: `mask_zero` must be a bool. Received: mask_zero={mask_zero!r}"
            )
        self.mask_zero = mask_zero
        if position not in POSITIONS:
            raise ValueError(
                f"{name}: `position` must be one of {POSITIONS}. Received: position={position!r}"
            )
        self.position = position
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(
                "TokenAndPositionEmbedding: `inputs` must be token ids of rank 2 "
                f"`(batch_size, seq_len)`. Received: inputs.shape={input_shape}"
            )
        check_positions("TokenAndPositionEmbedding", input_shape[1], 0, self.sequence_length)
        self._token_embedding = keras.layers.Embedding(
            self.vocabulary_size,
            self.embedding_dim,
            embeddings_initializer=clone_initializer(self.embeddings_initializer),
            mask_zero=self.mask_zero,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        self._token_embedding.build(input_shape)
        if self.position == "learned":
            self._position_embedding = PositionEmbedding(
                self.sequence_length,
                initializer=clone_initializer(self.embeddings_initializer),
                dtype=self.dtype_policy,
                name="position_embedding",
            )
        else:
            self._position_embedding = SinusoidalPositionEncoding(
                dtype=self.dtype_policy, name="position_encoding"
            )
        self._position_embedding.build(input_shape + (self.embedding_dim,))
        self.built = True

    @property
    def token_embeddings(self):
        """The `(vocabulary_size, embedding_dim)` token table (a variable; the layer must be built).

        A model whose output layer shares it (tied embeddings, Press & Wolf
        2017) reads it at every call.
        """
        if not self.built:
            raise ValueError(
                f"TokenAndPositionEmbedding '{self.name}': `token_embeddings` exists once the "
                "layer is built (call it or `build` it first)"
            )
        return self._token_embedding.embeddings

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, list | tuple):  # Keras takes tensors and arrays only
            inputs = np.asarray(inputs)
        if isinstance(inputs, np.ndarray) or _concrete_jax(inputs):
            _check_ids(np.asarray(inputs), self.vocabulary_size)  # values known now
        elif _eager_float(inputs):  # a float tensor's values are known now too: 2.7 is not id 2
            _check_ids(keras.ops.convert_to_numpy(inputs), self.vocabulary_size)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, start_index=0):
        (inputs,) = check_inputs(
            "TokenAndPositionEmbedding", [("inputs", inputs, ("batch_size", "T"))]
        )
        start_index = position_offset("TokenAndPositionEmbedding", "start_index", start_index)
        check_positions(
            "TokenAndPositionEmbedding", inputs.shape[1], start_index, self.sequence_length
        )
        tokens = self._token_embedding(inputs)  # (batch, seq_len, embedding_dim)
        positions = self._position_embedding(tokens, start_index=start_index)
        return tokens + positions

    def compute_mask(self, inputs, previous_mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)

    def compute_output_spec(self, inputs, start_index=0):
        check_positions(
            "TokenAndPositionEmbedding", inputs.shape[1], start_index, self.sequence_length
        )
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "embedding_dim": self.embedding_dim,
            "mask_zero": self.mask_zero,
            "position": self.position,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


def _concrete_jax(x):
    """A JAX array whose values are known now (not a tracer): its ids can be checked."""
    if keras.backend.backend() != "jax" or not hasattr(x, "shape"):
        return False
    import jax  # noqa: PLC0415 (JAX only)

    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def _eager_float(inputs):
    """An eager TensorFlow float tensor: its values are known (not a traced or Keras tensor)."""
    if keras.backend.backend() != "tensorflow" or "float" not in str(getattr(inputs, "dtype", "")):
        return False
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    return tf.executing_eagerly() and isinstance(inputs, tf.Tensor) and hasattr(inputs, "numpy")


def _check_ids(ids, vocabulary_size):
    if not (np.issubdtype(ids.dtype, np.integer) or np.issubdtype(ids.dtype, np.floating)):
        raise ValueError(
            "TokenAndPositionEmbedding: `inputs` must be token ids (integers). "
            f"Received: inputs of dtype {ids.dtype}"
        )
    if np.issubdtype(ids.dtype, np.floating) and ids.size and not np.all(ids == np.round(ids)):
        raise ValueError(  # the lookup would truncate 2.7 to 2
            "TokenAndPositionEmbedding: token ids in `inputs` must be whole numbers. "
            f"Received: inputs with the ids {ids[ids != np.round(ids)][:5].tolist()}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= vocabulary_size):
        bad = ids[(ids < 0) | (ids >= vocabulary_size)]
        raise ValueError(
            "TokenAndPositionEmbedding: token ids in `inputs` must lie in [0, vocabulary_size). "
            f"Received: vocabulary_size={vocabulary_size}, inputs with the ids {bad[:5].tolist()}"
        )
