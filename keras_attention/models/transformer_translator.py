"""Transformer translator: encoder and decoder stacks of Transformer blocks (Vaswani et al. 2017)."""

import keras
from keras import ops

from keras_attention.layers import (
    MultiHeadAttention,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.layers._dropout import Dropout
from keras_attention.layers.token_and_position_embedding import POSITIONS
from keras_attention.models._transformer_decoding import (
    caches_spec,
    decode_cached,
    decode_pass,
    initial_caches,
)
from keras_attention.models.backbone import check_transformer_sizes
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.utils import boolean, one_of, renamed_argument
from keras_attention.utils.masking import padding_mask, without_keras_mask

_LAYER_NORM_EPSILON = 1e-5
TIE_EMBEDDINGS = ("none", "target", "all")


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerTranslator(EncoderDecoderBackbone):
    """An encoder-decoder Transformer translator (Vaswani et al. 2017).

    Source and target tokens are embedded with their positions
    (`TokenAndPositionEmbedding`). `num_layers` `TransformerEncoderBlock`s
    encode the source; `num_layers` `TransformerDecoderBlock`s run causal
    self-attention over the target and cross-attention over the encoder
    outputs; a dense layer gives the logits over the target vocabulary.
    With `normalize_first=True` (pre-LN) each stack ends with a layer norm.

    Id `0` is padding in both sequences (right padding): padded source
    positions get zero attention weight, padded target positions output zero
    before the logits layer, and the logits carry the target mask, so a Keras
    loss skips them.

    Decoding (see `EncoderDecoderBackbone`): `encode(source_ids, max_length)`
    projects the encoder outputs once per decoder block into the
    cross-attention cache and allocates rank-4 self-attention KV caches of
    `max_length` positions; `call_with_cache(token_ids, state, index)` runs
    one token (or a prefill) through the decoder. The state is
    `{"encoder_padding_mask": (B, S) bool, "kv_cache_k_<i>", "kv_cache_v_<i>":
    (B, max_length, num_heads, key_dim), "cross_k_<i>", "cross_v_<i>":
    (B, S, num_heads, key_dim)}` for every decoder block `i`. A token id `0`
    is decoded like any other token (the model zeroes padded target positions
    instead), so logits match the model's at unpadded positions.
    `cross_attention(source_ids, target_in)` returns the per-head
    cross-attention weights of every decoder block for plotting.

    The blocks compute attention in full (`chunk_size=None`) when
    `sequence_length ** 2` is below the size at which `chunk_size="auto"`
    would chunk (`sequence_length < 2048`), and with `"auto"` otherwise
    (`MultiHeadAttention.chunk_size_for_length`).

    Args:
        source_vocabulary_size: positive int, the number of source token ids
            (`0` included).
        target_vocabulary_size: positive int, the number of target token ids,
            the size of the logits.
        sequence_length: positive int, the most positions of a source and of
            a target (the position tables, and the largest decoding cache).
            Defaults to `128`. (`max_length` is its deprecated name.)
        num_layers: positive int, the number of encoder blocks and of decoder
            blocks. Defaults to `2`.
        hidden_dim: positive int, the size of the embeddings and of every
            block's states. Defaults to `256`.
        num_heads: positive int dividing `hidden_dim`. Defaults to `8`.
        intermediate_dim: positive int, the feed-forward size of every block.
            Defaults to `1024`.
        dropout: float in `[0, 1)`, dropout on the embeddings, the attention
            weights and the sublayer outputs in training. Defaults to `0.1`.
        position: `"learned"` or `"sinusoidal"` position embeddings. Defaults
            to `"learned"`.
        normalize_first: bool, pre-LN blocks (with a final layer norm per
            stack) instead of post-LN. Defaults to `False`.
        tie_embeddings: which token tables the logits share (Press & Wolf
            2017): `"none"` (a separate output layer), `"target"` (the
            logits are `x @ E_target^T + b`: the target embedding's token
            table is the output weights) or `"all"` (three-way tying for a
            shared source/target vocabulary: one `TokenAndPositionEmbedding`,
            token table and positions, embeds both sides and gives the
            logits; needs `source_vocabulary_size == target_vocabulary_size`).
            Defaults to `"none"`.
        dtype: optional dtype policy of the model and its layers (the logits
            stay float32).
        **kwargs: `name` (defaults to `"transformer_translator"`), `trainable`.

    Attributes:
        source_embedding, target_embedding: the `TokenAndPositionEmbedding`s
            (one layer with `tie_embeddings="all"`).
        encoder_blocks, decoder_blocks: the lists of blocks.
        encoder_final_norm, decoder_final_norm: the final layer norms
            (`None` for post-LN).
        output_layer: the layer giving the logits (a `Dense`, or with tied
            embeddings a layer that multiplies by the target token table and
            adds its own bias).

    Example:

    >>> import numpy as np
    >>> model = TransformerTranslator(20, 30, sequence_length=8, num_layers=1, hidden_dim=16,
    ...                               num_heads=2, intermediate_dim=32)
    >>> source = np.array([[4, 5, 6, 0], [7, 8, 0, 0]])
    >>> target_in = np.array([[1, 9, 10], [1, 11, 0]])
    >>> tuple(model({"source": source, "target_in": target_in}).shape)
    (2, 3, 30)
    >>> weights = model.cross_attention(source, target_in)
    >>> {name: tuple(w.shape) for name, w in weights.items()}  # (B, heads, T, S)
    {'decoder_block_0': (2, 2, 3, 4)}
    >>> state = model.encode(source, max_length=4)
    >>> logits, state = model.call_with_cache(np.array([1, 1], "int32"), state, 0)
    >>> tuple(logits.shape), tuple(state["kv_cache_k_0"].shape)
    ((2, 30), (2, 4, 2, 8))

    Three-way tied embeddings for a shared vocabulary:

    >>> tied = TransformerTranslator(30, 30, sequence_length=8, num_layers=1, hidden_dim=16,
    ...                              num_heads=2, intermediate_dim=32, tie_embeddings="all")
    >>> tied.source_embedding is tied.target_embedding
    True
    >>> tuple(tied({"source": source, "target_in": target_in}).shape)
    (2, 3, 30)

    References:
        Vaswani et al., 2017, "Attention Is All You Need".
    """

    def __init__(
        self,
        source_vocabulary_size,
        target_vocabulary_size,
        sequence_length=128,
        num_layers=2,
        hidden_dim=256,
        num_heads=8,
        intermediate_dim=1024,
        dropout=0.1,
        position="learned",
        normalize_first=False,
        tie_embeddings="none",
        dtype=None,
        **kwargs,
    ):
        owner = type(self).__name__
        sequence_length = renamed_argument(
            owner, kwargs, "max_length", "sequence_length", sequence_length, 128
        )
        config = _check_arguments(
            owner,
            source_vocabulary_size=source_vocabulary_size,
            target_vocabulary_size=target_vocabulary_size,
            sequence_length=sequence_length,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            position=position,
            normalize_first=normalize_first,
            tie_embeddings=tie_embeddings,
        )
        kwargs.setdefault("name", "transformer_translator")
        self._build_layers(dtype=dtype, **config)

        # === Functional model ===
        source = keras.Input((None,), dtype="int32", name="source")  # (B, S)
        target_in = keras.Input((None,), dtype="int32", name="target_in")  # (B, T)
        memory, memory_mask = self._encode(source)
        logits = self._decode(target_in, memory, memory_mask)
        super().__init__(
            inputs={"source": source, "target_in": target_in}, outputs=logits, dtype=dtype, **kwargs
        )

        # === Config ===
        for name, value in config.items():
            setattr(self, name, value)

    def _build_layers(self, source_vocabulary_size, target_vocabulary_size, sequence_length,
                      num_layers, hidden_dim, num_heads, intermediate_dim, dropout, position,
                      normalize_first, tie_embeddings, dtype):  # fmt: skip
        """Creates the layers, kept as attributes."""

        def embedding(side, vocabulary_size):
            return TokenAndPositionEmbedding(
                vocabulary_size,
                sequence_length,
                hidden_dim,
                mask_zero=True,
                position=position,
                dtype=dtype,
                name=f"{side}_embedding",
            )

        block_kwargs = {
            "intermediate_dim": intermediate_dim,
            "num_heads": num_heads,
            "dropout": dropout,
            "normalize_first": normalize_first,
            "layer_norm_epsilon": _LAYER_NORM_EPSILON,
            "chunk_size": MultiHeadAttention.chunk_size_for_length(sequence_length),
            "dtype": dtype,
        }
        self.source_embedding = embedding("source", source_vocabulary_size)
        self.source_embedding_dropout = Dropout(
            dropout, dtype=dtype, name="source_embedding_dropout"
        )
        self.target_embedding = (
            self.source_embedding
            if tie_embeddings == "all"
            else embedding("target", target_vocabulary_size)
        )
        self.target_embedding_dropout = Dropout(
            dropout, dtype=dtype, name="target_embedding_dropout"
        )
        self.encoder_blocks = [
            TransformerEncoderBlock(**block_kwargs, name=f"encoder_block_{i}")
            for i in range(num_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(**block_kwargs, name=f"decoder_block_{i}")
            for i in range(num_layers)
        ]
        self.encoder_final_norm = self.decoder_final_norm = None
        if normalize_first:
            self.encoder_final_norm, self.decoder_final_norm = (
                keras.layers.LayerNormalization(
                    epsilon=_LAYER_NORM_EPSILON, dtype=dtype, name=f"{stack}_final_norm"
                )
                for stack in ("encoder", "decoder")
            )
        # float32 logits under mixed precision too, for a stable softmax.
        if tie_embeddings == "none":
            self.output_layer = keras.layers.Dense(
                target_vocabulary_size, dtype="float32", name="logits"
            )
        else:
            self.output_layer = _TiedLogits(self.target_embedding, name="logits")

    @property
    def target_sequence_length(self):
        return self.sequence_length

    @property
    def source_sequence_length(self):
        return self.sequence_length

    def get_config(self):
        return {
            **super().get_config(),
            "source_vocabulary_size": self.source_vocabulary_size,
            "target_vocabulary_size": self.target_vocabulary_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "position": self.position,
            "normalize_first": self.normalize_first,
            "tie_embeddings": self.tie_embeddings,
        }

    # -- decoding -------------------------------------------------------------------------------

    def encode(self, source_ids, max_length=None):
        max_length = self.decoding_length(max_length)
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        memory, memory_mask = self._encode(source_ids, training=False)
        batch_size = ops.shape(source_ids)[0]
        state = {"encoder_padding_mask": memory_mask}
        state.update(initial_caches(self, memory, batch_size, max_length))
        return state

    def call_with_cache(self, token_ids, state, index):
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        one_step = len(token_ids.shape) == 1
        tokens = ops.expand_dims(token_ids, 1) if one_step else token_ids  # (B, T)
        # Every token is decoded as a real one: the cache index, not a padding mask, bounds what
        # the self-attention sees.
        x = without_keras_mask(self.target_embedding(tokens, start_index=index))
        x = self.target_embedding_dropout(x, training=False)  # (B, T, hidden_dim)
        logits, new_state = decode_cached(self, x, state, index, state["encoder_padding_mask"])
        return (logits[:, 0] if one_step else logits), new_state

    def cross_attention(self, source_ids, target_in):
        """`{"decoder_block_<i>": (batch_size, num_heads, T, S)}`, the cross-attention weights."""
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        target_in = ops.convert_to_tensor(target_in, "int32")
        memory, memory_mask = self._encode(source_ids, training=False)
        _, weights = self._decode(
            target_in, memory, memory_mask, return_attention_scores=True, training=False
        )
        return weights

    def alignment(self, source_ids, target_in):
        """The mean over heads of the last decoder block's cross-attention, `(B, T, S)`."""
        weights = self.cross_attention(source_ids, target_in)
        return ops.mean(weights[self.decoder_blocks[-1].name], axis=1)

    def decoding_state_spec(self, max_length=None):
        max_length = self.decoding_length(max_length)
        spec = {"encoder_padding_mask": ((None, None), "bool")}
        spec.update(caches_spec(self, max_length))
        return spec

    # -- the forward pass, shared by the graph and the decoding methods -------------------------

    def _encode(self, source, training=None):
        """Source ids -> `(memory (B, S, hidden_dim), memory_mask (B, S))`."""
        memory_mask = padding_mask(source)
        x = self.source_embedding(source)
        x = self.source_embedding_dropout(x, training=training)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=memory_mask, training=training)
        if self.encoder_final_norm is not None:
            x = self.encoder_final_norm(x)
        return x, memory_mask

    def _decode(self, target_in, memory, memory_mask, return_attention_scores=False,
                training=None):
        """Target ids -> logits `(B, T, V)` (and the cross-attention weights of every block)."""
        x = self.target_embedding(target_in)
        x = self.target_embedding_dropout(x, training=training)
        return decode_pass(
            self, x, target_in, memory, memory_mask, return_attention_scores, training
        )


def _check_arguments(owner, **arguments):
    """The constructor arguments, checked (a `ValueError` names the first bad one)."""
    sizes = ("source_vocabulary_size", "target_vocabulary_size", "sequence_length", "num_layers",
             "hidden_dim", "num_heads", "intermediate_dim")  # fmt: skip
    arguments = check_transformer_sizes(owner, arguments, sizes)
    arguments["position"] = one_of(owner, "position", arguments["position"], POSITIONS)
    arguments["normalize_first"] = boolean(owner, "normalize_first", arguments["normalize_first"])
    arguments["tie_embeddings"] = one_of(
        owner, "tie_embeddings", arguments["tie_embeddings"], TIE_EMBEDDINGS
    )
    if (
        arguments["tie_embeddings"] == "all"
        and arguments["source_vocabulary_size"] != arguments["target_vocabulary_size"]
    ):
        raise ValueError(
            f"{owner}: `tie_embeddings='all'` shares one token table between the source and "
            "the target, so `source_vocabulary_size` must equal `target_vocabulary_size` (one "
            "shared vocabulary). Received: source_vocabulary_size="
            f"{arguments['source_vocabulary_size']}, target_vocabulary_size="
            f"{arguments['target_vocabulary_size']}"
        )
    return arguments


class _TiedLogits(keras.layers.Layer):
    """Logits from an embedding's token table: `inputs @ E^T + bias`, in float32.

    The output layer of a model with tied embeddings (Press & Wolf 2017): `E`
    is `embedding.token_embeddings`, read at every call, so the embedding and
    the logits train one table. Only the bias `(vocabulary_size,)` is this
    layer's own weight. The Keras mask of `inputs` passes through (a loss
    then skips padded positions). Made by the model that owns `embedding`
    (which rebuilds it from its own config; it is not serialized alone).
    """

    def __init__(self, embedding, **kwargs):
        kwargs["dtype"] = "float32"  # a stable softmax under mixed precision
        super().__init__(**kwargs)
        self.supports_masking = True
        self.vocabulary_size = embedding.vocabulary_size
        self._table = lambda: embedding.token_embeddings  # not tracked: the model owns it

    def build(self, input_shape):
        self.bias = self.add_weight(
            shape=(self.vocabulary_size,), initializer="zeros", name="bias"
        )
        self.built = True

    def call(self, inputs):
        table = ops.cast(self._table(), "float32")  # (V, D)
        return ops.matmul(ops.cast(inputs, "float32"), ops.transpose(table)) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.vocabulary_size,)


def transformer_translator(*args, **kwargs):
    """Builds a `TransformerTranslator` (see the class for the arguments).

    Example:

    >>> model = transformer_translator(20, 30, sequence_length=8, num_layers=1, hidden_dim=16,
    ...                                num_heads=2, intermediate_dim=32)
    >>> type(model).__name__, len(model.decoder_blocks)
    ('TransformerTranslator', 1)
    """
    return TransformerTranslator(*args, **kwargs)
