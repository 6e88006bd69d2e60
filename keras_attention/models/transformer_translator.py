"""Transformer translator: encoder and decoder stacks of Transformer blocks (Vaswani et al. 2017)."""

import keras
from keras import ops

from keras_attention.layers import (
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.layers._common import dropout_rate, positive_int
from keras_attention.layers.multi_head_attention import AUTO_CHUNK_MIN_SCORES
from keras_attention.layers.token_and_position_embedding import POSITIONS
from keras_attention.models.translator_decoding import TranslatorDecoding, find_layer

_NAME = "transformer_translator"
_LAYER_NORM_EPSILON = 1e-5


def transformer_translator(
    source_vocabulary_size,
    target_vocabulary_size,
    max_length=128,
    num_layers=2,
    hidden_dim=256,
    num_heads=8,
    intermediate_dim=1024,
    dropout=0.1,
    position="learned",
    normalize_first=False,
    name="transformer_translator",
):
    """Builds an encoder-decoder Transformer translator (Vaswani et al. 2017).

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

    Decoding: `translator_decoding(model, max_length)` gives
    `encode(source_ids)` and the one-step `step(token_ids, state, step)` with
    rank-4 self-attention KV caches of `max_length` positions, built from
    this model's layers; its `cross_attention(source_ids, target_in)` returns
    the per-head cross-attention weights of every decoder block for plotting.

    Args:
        source_vocabulary_size: positive int, the number of source token ids
            (`0` included).
        target_vocabulary_size: positive int, the number of target token ids,
            the size of the logits.
        max_length: positive int, the most positions of a source and of a
            target (the position tables, and the largest decoding cache).
            Defaults to `128`.
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

    The blocks compute attention in full (`chunk_size=None`) when
    `max_length ** 2` is below the size at which `chunk_size="auto"` would
    chunk (`max_length < 2048`), and with `"auto"` otherwise.
        name: the model name. Defaults to `"transformer_translator"`.

    Returns:
        A functional `keras.Model` from `{"source": (batch_size, S),
        "target_in": (batch_size, T)}` (int32 ids, `S, T <= max_length`;
        `target_in` is the target shifted right, starting with the start
        token) to float32 logits `(batch_size, T, target_vocabulary_size)`.
        Its layers are named `"source_embedding"`, `"encoder_block_<i>"`,
        `"target_embedding"`, `"decoder_block_<i>"` and `"logits"` (and
        `"encoder_final_norm"`, `"decoder_final_norm"` when pre-LN).

    Example:

    >>> import numpy as np
    >>> model = transformer_translator(20, 30, max_length=8, num_layers=1, hidden_dim=16,
    ...                                num_heads=2, intermediate_dim=32)
    >>> source = np.array([[4, 5, 6, 0], [7, 8, 0, 0]])
    >>> target_in = np.array([[1, 9, 10], [1, 11, 0]])
    >>> tuple(model({"source": source, "target_in": target_in}).shape)
    (2, 3, 30)
    >>> from keras_attention.models import translator_decoding
    >>> weights = translator_decoding(model).cross_attention(source, target_in)
    >>> {name: tuple(w.shape) for name, w in weights.items()}  # (B, heads, T, S)
    {'decoder_block_0': (2, 2, 3, 4)}

    References:
        Vaswani et al., 2017, "Attention Is All You Need".
    """
    source_vocabulary_size = positive_int(_NAME, "source_vocabulary_size", source_vocabulary_size)
    target_vocabulary_size = positive_int(_NAME, "target_vocabulary_size", target_vocabulary_size)
    max_length = positive_int(_NAME, "max_length", max_length)
    num_layers = positive_int(_NAME, "num_layers", num_layers)
    hidden_dim = positive_int(_NAME, "hidden_dim", hidden_dim)
    num_heads = positive_int(_NAME, "num_heads", num_heads)
    if hidden_dim % num_heads:
        raise ValueError(
            f"{_NAME}: `hidden_dim` must be divisible by `num_heads`. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    intermediate_dim = positive_int(_NAME, "intermediate_dim", intermediate_dim)
    try:
        dropout = dropout_rate(dropout)
    except ValueError as error:
        raise ValueError(f"{_NAME}: {error}") from None
    if position not in POSITIONS:
        raise ValueError(
            f"{_NAME}: `position` must be one of {POSITIONS}. Received: position={position!r}"
        )
    if not isinstance(normalize_first, bool):
        raise ValueError(
            f"{_NAME}: `normalize_first` must be a bool. "
            f"Received: normalize_first={normalize_first!r}"
        )

    def embedding(side, vocabulary_size):
        return TokenAndPositionEmbedding(
            vocabulary_size,
            max_length,
            hidden_dim,
            mask_zero=True,
            position=position,
            name=f"{side}_embedding",
        )

    block_kwargs = {
        "intermediate_dim": intermediate_dim,
        "num_heads": num_heads,
        "dropout": dropout,
        "normalize_first": normalize_first,
        "layer_norm_epsilon": _LAYER_NORM_EPSILON,
        # Sequences are at most `max_length` long: when no score matrix can reach the size at
        # which "auto" chunks, the full path is fixed at build time, so unknown lengths (bucketed
        # batches, serving) do not trace both paths behind a run-time `cond`.
        "chunk_size": None if max_length * max_length < AUTO_CHUNK_MIN_SCORES else "auto",
    }
    layers = {
        "source_embedding": embedding("source", source_vocabulary_size),
        "source_embedding_dropout": keras.layers.Dropout(dropout, name="source_embedding_dropout"),
        "target_embedding": embedding("target", target_vocabulary_size),
        "target_embedding_dropout": keras.layers.Dropout(dropout, name="target_embedding_dropout"),
        # float32 logits under mixed precision too, for a stable softmax.
        "logits": keras.layers.Dense(target_vocabulary_size, dtype="float32", name="logits"),
    }
    for index in range(num_layers):
        layers[f"encoder_block_{index}"] = TransformerEncoderBlock(
            **block_kwargs, name=f"encoder_block_{index}"
        )
        layers[f"decoder_block_{index}"] = TransformerDecoderBlock(
            **block_kwargs, name=f"decoder_block_{index}"
        )
    if normalize_first:
        for stack in ("encoder", "decoder"):
            layers[f"{stack}_final_norm"] = keras.layers.LayerNormalization(
                epsilon=_LAYER_NORM_EPSILON, name=f"{stack}_final_norm"
            )

    source = keras.Input((None,), dtype="int32", name="source")  # (B, S)
    target_in = keras.Input((None,), dtype="int32", name="target_in")  # (B, T)
    memory, memory_mask = _encode(layers, num_layers, source)
    logits = _teacher_forced(layers, num_layers, target_in, memory, memory_mask)
    return keras.Model({"source": source, "target_in": target_in}, logits, name=name)


class TransformerDecoding(TranslatorDecoding):
    """`TranslatorDecoding` of a `transformer_translator` (made by `translator_decoding`).

    The state is `{"memory_mask": (B, S) bool, "caches": ((key_cache,
    value_cache), ...), "cross_caches": ((key_heads, value_heads), ...)}` with,
    per decoder block, one self-attention cache pair of shape
    `(B, max_length, num_heads, key_dim)` and the cross-attention keys and
    values of the encoder outputs, `(B, S, num_heads, key_dim)`, projected
    once by `encode`. `step(token_ids, state, step)` embeds the token at
    position `step`, writes its keys and values at cache index `step` (so
    `step < max_length`), attends over the cache causally and over the
    cross-attention cache. A token id `0` is decoded like any other token (the
    model zeroes padded target positions instead), so logits match the
    model's at unpadded positions.
    """

    def __init__(self, model, max_length=None):
        self._num_layers = 0
        while any(layer.name == f"decoder_block_{self._num_layers}" for layer in model.layers):
            self._num_layers += 1
        names = ["source_embedding", "target_embedding"]
        names += [
            f"{stack}_block_{i}"
            for stack in ("encoder", "decoder")
            for i in range(self._num_layers)
        ]
        names += ["source_embedding_dropout", "target_embedding_dropout", "logits"]
        self._layers = {name: find_layer(model, name) for name in names}
        for stack in ("encoder", "decoder"):
            if any(layer.name == f"{stack}_final_norm" for layer in model.layers):
                self._layers[f"{stack}_final_norm"] = find_layer(model, f"{stack}_final_norm")
        longest = find_layer(model, "target_embedding", TokenAndPositionEmbedding).sequence_length
        if max_length is None:
            max_length = longest
        max_length = positive_int("translator_decoding", "max_length", max_length)
        if max_length > longest:
            raise ValueError(
                "translator_decoding: `max_length` may not exceed the model's target positions. "
                f"Received: max_length={max_length}, the model's max_length={longest}"
            )
        super().__init__(model, self._layers["logits"].units, max_length)

    def encode(self, source_ids):
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        memory, memory_mask = _encode(self._layers, self._num_layers, source_ids, training=False)
        batch_size = ops.shape(source_ids)[0]
        blocks = [self._layers[f"decoder_block_{i}"] for i in range(self._num_layers)]
        caches = tuple(tuple(block.init_cache(batch_size, self.max_length)) for block in blocks)
        cross_caches = tuple(tuple(block.compute_cross_attention_cache(memory)) for block in blocks)
        return {"memory_mask": memory_mask, "caches": caches, "cross_caches": cross_caches}

    def step(self, token_ids, state, step):
        token_ids = ops.convert_to_tensor(token_ids, "int32")  # (B,)
        x = self._layers["target_embedding"](ops.expand_dims(token_ids, 1), start_index=step)
        x = self._layers["target_embedding_dropout"](x, training=False)  # (B, 1, hidden_dim)
        caches = []
        for index, (cache, cross_cache) in enumerate(
            zip(state["caches"], state["cross_caches"], strict=True)
        ):
            x, cache = self._layers[f"decoder_block_{index}"](
                x,
                encoder_padding_mask=state["memory_mask"],
                self_attention_cache=cache,
                self_attention_cache_update_index=step,
                cross_attention_cache=cross_cache,
                training=False,
            )
            caches.append(tuple(cache))
        if "decoder_final_norm" in self._layers:
            x = self._layers["decoder_final_norm"](x)
        logits = self._layers["logits"](x)[:, 0]  # (B, vocabulary_size)
        return logits, {**state, "caches": tuple(caches)}

    def cross_attention(self, source_ids, target_in):
        """`{"decoder_block_<i>": (batch_size, num_heads, T, S)}`, the cross-attention weights."""
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        target_in = ops.convert_to_tensor(target_in, "int32")
        memory, memory_mask = _encode(self._layers, self._num_layers, source_ids, training=False)
        _, weights = _teacher_forced(
            self._layers,
            self._num_layers,
            target_in,
            memory,
            memory_mask,
            return_attention_scores=True,
            training=False,
        )
        return weights


# -- helpers ------------------------------------------------------------------------------------


def _encode(layers, num_layers, source, training=None):
    """Source ids -> `(memory (B, S, hidden_dim), memory_mask (B, S))`."""
    memory_mask = ops.not_equal(source, 0)
    x = layers["source_embedding"](source)
    x = layers["source_embedding_dropout"](x, training=training)
    for index in range(num_layers):
        x = layers[f"encoder_block_{index}"](x, padding_mask=memory_mask, training=training)
    if "encoder_final_norm" in layers:
        x = layers["encoder_final_norm"](x)
    return x, memory_mask


def _teacher_forced(
    layers, num_layers, target_in, memory, memory_mask, return_attention_scores=False, training=None
):
    """Target ids -> logits `(B, T, V)` (and the cross-attention weights of every block)."""
    target_mask = ops.not_equal(target_in, 0)
    x = layers["target_embedding"](target_in)
    x = layers["target_embedding_dropout"](x, training=training)
    weights = {}
    for index in range(num_layers):
        name = f"decoder_block_{index}"
        x = layers[name](
            x,
            memory,
            decoder_padding_mask=target_mask,
            encoder_padding_mask=memory_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if return_attention_scores:
            x, scores = x
            weights[name] = scores["cross_attention"]  # (B, H, T, S)
    if "decoder_final_norm" in layers:
        x = layers["decoder_final_norm"](x)
    logits = layers["logits"](x)
    return (logits, weights) if return_attention_scores else logits
