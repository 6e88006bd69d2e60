"""Masked language model head: gather, transform, layer norm, (tied) projection to the vocabulary."""

import keras
from keras import ops

from keras_attention.layers._common import clone_initializer
from keras_attention.ops.checks import check_inputs
from keras_attention.ops.hard import position_selector
from keras_attention.utils.validation import optional_positive_int, positive_number


@keras.saving.register_keras_serializable(package="keras_attention")
class MaskedLMHead(keras.layers.Layer):
    """Masked language model head (BERT; keras_hub's `MaskedLMHead`).

    The encodings at `mask_positions` are gathered, transformed,
    `h = LN(activation(W x + b))`, and projected to the vocabulary,
    `logits = h E^T + c`, where `E` is the `(vocabulary_size, hidden_dim)`
    table of `token_embedding` when one is given (weights tied to the input
    embedding, Press and Wolf 2016), or a kernel of the head's own otherwise.
    The weights (their shapes and what each one does) are those of
    keras_hub's `MaskedLMHead`, so a trained head's weights copy over.

    Args:
        vocabulary_size: positive int, the number of logits per position.
            Defaults to `token_embedding.input_dim` (one of the two must be
            given; when both are, they must agree).
        token_embedding: optional `keras.layers.Embedding` (or a subclass such
            as `keras.layers.ReversibleEmbedding`) whose `embeddings` table,
            transposed, is the output projection. Its `output_dim` must be the
            hidden size of the inputs. Defaults to `None` (a head-owned
            `output_kernel` of shape `(hidden_dim, vocabulary_size)`).
        intermediate_activation: activation of the dense transform. Defaults
            to `"relu"` (BERT uses `"gelu"`).
        activation: activation of the outputs, e.g. `"softmax"`. Defaults to
            `None` (logits).
        layer_norm_epsilon: positive float. Defaults to `1e-5`.
        kernel_initializer: initializer of the dense kernel and of the
            head-owned output kernel. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the biases. Defaults to `"zeros"`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch_size, seq_len, hidden_dim)`, the encoder outputs.
        mask_positions: int `(batch_size, num_positions)`, positions in
            `[0, seq_len)` to predict; or `None` when `inputs` are already
            the encodings at those positions, `(batch_size, num_positions,
            hidden_dim)` (`BertMaskedLM` computes its last encoder block at
            the masked positions only).

    Every call checks that `inputs` has the hidden size the layer was built
    with and that `mask_positions` has the batch size of `inputs`.

    Returns:
        `(batch_size, num_positions, vocabulary_size)` in the compute dtype.
        The output carries no Keras mask.

    Example:

    >>> import numpy as np
    >>> embedding = keras.layers.Embedding(30, 8)
    >>> head = MaskedLMHead(token_embedding=embedding, intermediate_activation="gelu")
    >>> encodings = embedding(np.array([[3, 4, 5, 6], [7, 8, 9, 0]]))
    >>> logits = head(encodings, mask_positions=np.array([[1, 3], [0, 2]]))
    >>> tuple(logits.shape)
    (2, 2, 30)

    References:
        Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional
        Transformers for Language Understanding"; Press and Wolf, 2016,
        "Using the Output Embedding to Improve Language Models".
    """

    def __init__(
        self,
        vocabulary_size=None,
        token_embedding=None,
        intermediate_activation="relu",
        activation=None,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        layer = type(self).__name__
        vocabulary_size = optional_positive_int(layer, "vocabulary_size", vocabulary_size)
        if token_embedding is not None:
            if not isinstance(token_embedding, keras.layers.Embedding):
                raise ValueError(
                    f"{layer}: `token_embedding` must be a `keras.layers.Embedding` or `None`. "
                    f"Received: token_embedding={token_embedding!r}"
                )
            if vocabulary_size is not None and vocabulary_size != token_embedding.input_dim:
                raise ValueError(
                    f"{layer}: `vocabulary_size` must equal the `input_dim` of "
                    f"`token_embedding`. Received: vocabulary_size={vocabulary_size}, "
                    f"token_embedding.input_dim={token_embedding.input_dim}"
                )
            vocabulary_size = token_embedding.input_dim
        elif vocabulary_size is None:
            raise ValueError(
                f"{layer}: one of `vocabulary_size` or `token_embedding` must be given. "
                "Received: vocabulary_size=None, token_embedding=None"
            )
        self.vocabulary_size = vocabulary_size
        self.token_embedding = token_embedding
        self.intermediate_activation = keras.activations.get(intermediate_activation)
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = positive_number(layer, "layer_norm_epsilon", layer_norm_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, inputs_shape, mask_positions_shape=None):
        inputs_shape = tuple(inputs_shape)
        if len(inputs_shape) != 3 or inputs_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: `inputs` must have rank 3 "
                "`(batch_size, seq_len, hidden_dim)` with a known `hidden_dim`. "
                f"Received: inputs.shape={inputs_shape}"
            )
        hidden_dim = inputs_shape[-1]
        self._hidden_dim = hidden_dim
        if self.token_embedding is not None:
            if self.token_embedding.output_dim != hidden_dim:
                raise ValueError(
                    f"{type(self).__name__}: the `output_dim` of `token_embedding` must be the "
                    f"hidden size of `inputs`. Received: "
                    f"token_embedding.output_dim={self.token_embedding.output_dim}, "
                    f"inputs.shape={inputs_shape}"
                )
            if not self.token_embedding.built:
                self.token_embedding.build()
        gathered_shape = (inputs_shape[0], None, hidden_dim)  # (B, P, hidden_dim)
        self._intermediate_dense = keras.layers.Dense(
            hidden_dim,
            activation=self.intermediate_activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy,
            name="intermediate_dense",
        )
        self._intermediate_dense.build(gathered_shape)
        self._intermediate_layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="intermediate_layer_norm"
        )
        self._intermediate_layer_norm.build(gathered_shape)
        self._kernel = None
        if self.token_embedding is None:
            self._kernel = self.add_weight(
                name="output_kernel",
                shape=(hidden_dim, self.vocabulary_size),
                initializer=clone_initializer(self.kernel_initializer),
            )
        self._bias = self.add_weight(
            name="output_bias",
            shape=(self.vocabulary_size,),
            initializer=clone_initializer(self.bias_initializer),
        )

    def call(self, inputs, mask_positions=None):
        if mask_positions is None:  # the encodings at the positions already: (B, P, hidden_dim)
            (x,) = check_inputs(
                type(self).__name__,
                [("inputs", inputs, ("batch_size", "P", getattr(self, "_hidden_dim", None)))],
            )
        else:
            inputs, mask_positions = check_inputs(
                type(self).__name__,
                [
                    ("inputs", inputs, ("batch_size", "T", getattr(self, "_hidden_dim", None))),
                    ("mask_positions", mask_positions, ("batch_size", "P")),
                ],
            )
            if "int" not in str(mask_positions.dtype):  # a float 0.7 would be position 0
                raise ValueError(
                    f"{type(self).__name__}: `mask_positions` must be integers (e.g. an "
                    f"`Input(dtype='int32')`). Received: mask_positions of dtype "
                    f"{mask_positions.dtype}"
                )
            # A one-hot product rather than a gather: exact, empty batches work, and a position
            # outside the sequence gives zeros instead of another row's encoding (built from a
            # comparison: PyTorch's `one_hot` refuses positions outside the sequence).
            select = position_selector(mask_positions, ops.shape(inputs)[1])  # (B, P, L)
            x = ops.einsum("bpl,blh->bph", ops.cast(select, inputs.dtype), inputs)  # (B, P, H)
        x = self._intermediate_layer_norm(self._intermediate_dense(x))
        if self.token_embedding is not None:
            kernel = ops.transpose(self.token_embedding.embeddings)  # (hidden_dim, V)
        else:
            kernel = self._kernel
        logits = ops.matmul(x, ops.cast(kernel, self.compute_dtype))  # (B, P, V)
        logits = logits + ops.cast(self._bias, self.compute_dtype)
        return self.activation(logits)

    def compute_output_shape(self, inputs_shape, mask_positions_shape=None):
        positions_shape = inputs_shape[:-1] if mask_positions_shape is None else mask_positions_shape
        return tuple(positions_shape) + (self.vocabulary_size,)

    def get_config(self):
        embedding = None
        if self.token_embedding is not None:
            embedding = keras.layers.serialize(self.token_embedding)
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "token_embedding": embedding,
            "intermediate_activation": keras.activations.serialize(self.intermediate_activation),
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("token_embedding"), dict):
            config["token_embedding"] = keras.layers.deserialize(config["token_embedding"])
        return super().from_config(config)
