"""A Transformer captioner: decoder blocks whose cross-attention looks at an image's feature grid."""

import keras
from keras import ops

from keras_attention.layers import (
    MultiHeadAttention,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.layers._dropout import Dropout
from keras_attention.models._transformer_decoding import (
    caches_spec,
    decode_cached,
    decode_pass,
    initial_caches,
)
from keras_attention.models.captioner_backbone import ImageCaptioner, check_image_arguments
from keras_attention.utils import boolean, positive_int, rate
from keras_attention.utils.masking import without_keras_mask

_LAYER_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerCaptioner(ImageCaptioner):
    """Image encoder grid -> (optional encoder blocks) -> Transformer decoder blocks -> words.

    The cells of the grid, projected to `hidden_dim` with a learned vector per
    cell, are the memory; `num_encoder_layers` self-attention blocks may
    refine it; `num_layers` decoder blocks (causal self-attention over the
    words, cross-attention over the cells) give the logits. Decoding keeps
    a KV cache per block and the cells' projected keys and values, under
    LiteRT's names (`kv_cache_k_<i>`, `kv_cache_v_<i>`, `cross_k_<i>`,
    `cross_v_<i>`), so the decode step converts to TFLite builtins.

    Args:
        vocabulary_size: positive int, the caption vocabulary.
        image_size, encoder, encoder_weights, encoder_trainable,
        position_embedding: as for `ShowAttendTellCaptioner`.
        sequence_length: positive int, the most caption positions. Defaults
            to `32`.
        num_layers: positive int, decoder blocks. Defaults to `2`.
        num_encoder_layers: int `>= 0`, encoder blocks over the cells.
            Defaults to `0`.
        hidden_dim, num_heads, intermediate_dim: the blocks' sizes. Default
            to `256`, `4`, `512`.
        dropout: float in `[0, 1)`. Defaults to `0.1`.
        normalize_first: bool, pre-LN blocks. Defaults to `False`.
        dtype: optional dtype policy.
        **kwargs: `name` (defaults to `"transformer_captioner"`), `trainable`.

    Example:

    >>> import numpy as np
    >>> model = TransformerCaptioner(20, image_size=32, sequence_length=8, hidden_dim=16,
    ...                              num_heads=2, intermediate_dim=16, num_layers=1)
    >>> images = np.random.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    >>> tuple(model({"images": images, "target_in": np.array([[2, 5], [2, 6]])}).shape)
    (2, 2, 20)
    >>> state = model.encode(images)
    >>> tuple(state["kv_cache_k_0"].shape), tuple(state["cross_k_0"].shape)
    ((2, 8, 2, 8), (2, 64, 2, 8))

    References:
        Vaswani et al., 2017, "Attention Is All You Need"; Xu et al., 2015,
        "Show, Attend and Tell" (the grid of an image as the memory).
    """

    def __init__(
        self,
        vocabulary_size,
        image_size=224,
        encoder="small_cnn",
        encoder_weights=None,
        encoder_trainable=True,
        position_embedding=True,
        sequence_length=32,
        num_layers=2,
        num_encoder_layers=0,
        hidden_dim=256,
        num_heads=4,
        intermediate_dim=512,
        dropout=0.1,
        normalize_first=False,
        dtype=None,
        **kwargs,
    ):
        owner = type(self).__name__
        config = check_image_arguments(
            owner, vocabulary_size, image_size, None, position_embedding, encoder_trainable
        )
        sizes = {
            name: positive_int(owner, name, value)
            for name, value in (
                ("sequence_length", sequence_length),
                ("num_layers", num_layers),
                ("hidden_dim", hidden_dim),
                ("num_heads", num_heads),
                ("intermediate_dim", intermediate_dim),
            )
        }
        num_encoder_layers = positive_int(owner, "num_encoder_layers", num_encoder_layers, 0)
        if hidden_dim % num_heads:
            raise ValueError(
                f"{owner}: `hidden_dim` must be divisible by `num_heads`. "
                f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        dropout = rate(owner, "dropout", dropout)
        normalize_first = boolean(owner, "normalize_first", normalize_first)
        kwargs.setdefault("name", "transformer_captioner")
        self._build_image_layers(
            config["image_size"], encoder, encoder_weights, config["encoder_trainable"],
            hidden_dim, config["position_embedding"], dtype,
        )  # fmt: skip
        self._build_decoder_layers(
            config["vocabulary_size"], sizes, num_encoder_layers, dropout, normalize_first, dtype
        )

        # === Config (the forward pass reads some of it) ===
        self.target_vocabulary_size = config["vocabulary_size"]
        self.image_size = config["image_size"]
        self.encoder = encoder
        self.encoder_trainable = config["encoder_trainable"]
        self.feature_dim = hidden_dim
        self.position_embedding = config["position_embedding"]
        self.sequence_length = sizes["sequence_length"]
        self.num_layers = sizes["num_layers"]
        self.num_encoder_layers = num_encoder_layers
        self.hidden_dim = sizes["hidden_dim"]
        self.num_heads = sizes["num_heads"]
        self.intermediate_dim = sizes["intermediate_dim"]
        self.dropout = dropout
        self.normalize_first = normalize_first

        # === Functional model ===
        images, target_in = self._image_inputs(config["image_size"])
        logits = self._decode_grid(*self._memory(self.image_encoder(images)), target_in)
        super().__init__(
            inputs={"images": images, "target_in": target_in}, outputs=logits, dtype=dtype,
            **kwargs,
        )  # fmt: skip

    def _build_decoder_layers(self, vocabulary_size, sizes, num_encoder_layers, dropout,
                              normalize_first, dtype):  # fmt: skip
        """The blocks, the word embeddings and the logits, kept as attributes."""
        block_kwargs = {
            "intermediate_dim": sizes["intermediate_dim"],
            "num_heads": sizes["num_heads"],
            "dropout": dropout,
            "normalize_first": normalize_first,
            "layer_norm_epsilon": _LAYER_NORM_EPSILON,
            "chunk_size": MultiHeadAttention.chunk_size_for_length(sizes["sequence_length"]),
            "dtype": dtype,
        }
        self.memory_dropout = Dropout(dropout, dtype=dtype, name="memory_dropout")
        self.encoder_blocks = [
            TransformerEncoderBlock(**block_kwargs, name=f"encoder_block_{i}")
            for i in range(num_encoder_layers)
        ]
        self.token_embedding = TokenAndPositionEmbedding(
            vocabulary_size, sizes["sequence_length"], sizes["hidden_dim"], mask_zero=True,
            dtype=dtype,
            name="token_embedding",
        )  # fmt: skip
        self.token_embedding_dropout = Dropout(
            dropout, dtype=dtype, name="token_embedding_dropout"
        )
        self.decoder_blocks = [
            TransformerDecoderBlock(**block_kwargs, name=f"decoder_block_{i}")
            for i in range(sizes["num_layers"])
        ]
        self.decoder_final_norm = (
            keras.layers.LayerNormalization(
                epsilon=_LAYER_NORM_EPSILON, dtype=dtype, name="decoder_final_norm"
            )
            if normalize_first
            else None
        )
        self.output_layer = keras.layers.Dense(
            vocabulary_size, dtype="float32", name="logits"
        )

    @property
    def target_sequence_length(self):
        return self.sequence_length

    def get_config(self):
        config = {**super().get_config(), **self._image_config()}
        config.pop("feature_dim")  # always hidden_dim
        return {
            **config,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "num_encoder_layers": self.num_encoder_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "normalize_first": self.normalize_first,
        }

    # -- decoding -------------------------------------------------------------------------------

    def image_memory(self, images):
        """Images -> the cells after the encoder blocks, `(B, L, hidden_dim)` (inference)."""
        _, keys = super().image_memory(images)  # the cells with their positions
        return self._refine(keys, training=False)

    def decoding_state(self, memory, max_length=None):
        """The KV caches and the cells' keys and values for a decoding from `image_memory`."""
        max_length = self.decoding_length(max_length)
        return initial_caches(self, memory, ops.shape(memory)[0], max_length)

    def call_with_cache(self, token_ids, state, index):
        token_ids = ops.convert_to_tensor(token_ids, "int32")
        one_step = len(token_ids.shape) == 1
        tokens = ops.expand_dims(token_ids, 1) if one_step else token_ids  # (B, T)
        x = without_keras_mask(self.token_embedding(tokens, start_index=index))
        x = self.token_embedding_dropout(x, training=False)
        logits, new_state = decode_cached(self, x, state, index)
        return (logits[:, 0] if one_step else logits), new_state

    def cross_attention(self, images, target_in, memory=None):
        """`{"decoder_block_<i>": (batch_size, num_heads, T, L)}`, the cross-attention weights."""
        if memory is None:
            memory = self.image_memory(images)
        target_in = ops.convert_to_tensor(target_in, "int32")
        _, weights = self._decode_memory(memory, target_in, True, training=False)
        return weights

    def memory_alignment(self, memory, target_in):
        """The mean over heads of the last block's cross-attention, `(batch_size, T, L)`."""
        weights = self.cross_attention(None, target_in, memory=memory)
        return ops.mean(weights[self.decoder_blocks[-1].name], axis=1)

    def decoding_state_spec(self, max_length=None):
        max_length = self.decoding_length(max_length)
        return caches_spec(self, max_length, self.grid_shape[0] * self.grid_shape[1])

    # -- the forward pass -----------------------------------------------------------------------

    def _refine(self, memory, training=None):
        memory = self.memory_dropout(memory, training=training)
        for block in self.encoder_blocks:
            memory = block(memory, training=training)
        return memory

    def _decode_grid(self, values, keys, target_in, training=None):
        return self._decode_memory(self._refine(keys, training), target_in, training=training)

    def _decode_memory(self, memory, target_in, return_attention_scores=False, training=None):
        """Target ids -> logits `(B, T, V)` (and each block's cross-attention weights)."""
        x = self.token_embedding(target_in)
        x = self.token_embedding_dropout(x, training=training)
        return decode_pass(
            self, x, target_in, memory, None, return_attention_scores, training=training
        )
