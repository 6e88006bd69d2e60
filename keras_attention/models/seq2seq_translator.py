"""RNN translator: a bidirectional GRU/LSTM encoder and an `AttentionDecoder` (Bahdanau or Luong)."""

import keras
from keras import ops

from keras_attention.layers import AttentionDecoder
from keras_attention.layers._common import dropout_rate, positive_int
from keras_attention.layers.attention_decoder import CELLS
from keras_attention.models.translator_decoding import TranslatorDecoding, find_layer

_NAME = "seq2seq_translator"
_SAME_DEPTH_ATTENTIONS = ("dot", "scaled_dot")


def seq2seq_translator(
    source_vocabulary_size,
    target_vocabulary_size,
    embedding_dim=128,
    units=256,
    encoder_units=None,
    cell="gru",
    attention="additive",
    style="bahdanau",
    input_feeding=None,
    dropout=0.0,
    name="seq2seq_translator",
):
    """Builds an attention-based RNN translator (Bahdanau et al. 2015, Luong et al. 2015).

    The encoder embeds the source tokens and runs a bidirectional GRU or
    LSTM over them; its outputs `(batch_size, S, 2 * encoder_units)` are the
    memory the decoder attends to. The decoder's initial state is projected
    from the encoder's final forward and backward states,
    `s_0 = tanh(W_h [h_fwd; h_bwd])` (and `c_0 = W_c [c_fwd; c_bwd]` for an
    LSTM). An `AttentionDecoder` runs over the embedded target tokens
    (teacher forcing) and a dense layer gives the logits over the target
    vocabulary.

    Id `0` is padding in both sequences (right padding): padded source tokens
    get zero attention weight and do not enter the encoder's final states,
    padded target steps output zeros before the logits layer (so their logits
    are its bias), and the logits carry the target mask, so a Keras loss
    skips them.

    Decoding: `translator_decoding(model)` gives `encode(source_ids)` and the
    one-step `step(token_ids, state, step)` built from this model's layers;
    its `cross_attention(source_ids, target_in)` returns the attention
    weights `(batch_size, T, S)` for plotting.

    Args:
        source_vocabulary_size: positive int, the number of source token ids
            (`0` included).
        target_vocabulary_size: positive int, the number of target token ids,
            the size of the logits.
        embedding_dim: positive int, the size of the token embeddings.
            Defaults to `128`.
        units: positive int, the size of the decoder state. Defaults to `256`.
        encoder_units: positive int, the size of each encoder direction.
            Defaults to `units // 2` (at least 1), so the memory has about
            `units` features.
        cell: `"gru"` or `"lstm"`, for the encoder and the decoder. Defaults
            to `"gru"`.
        attention: the score attention of the decoder, a name or a layer; see
            `AttentionDecoder`. `"dot"` and `"scaled_dot"` need
            `2 * encoder_units == units`. Defaults to `"additive"`.
        style: `"bahdanau"` or `"luong"`; see `AttentionDecoder`. Defaults to
            `"bahdanau"`.
        input_feeding: bool, Luong's input feeding. Defaults to `True` for
            `"luong"`, `False` for `"bahdanau"`.
        dropout: float in `[0, 1)`, dropout on the embeddings and on the
            decoder outputs in training. Defaults to `0.0`.
        name: the model name. Defaults to `"seq2seq_translator"`.

    Returns:
        A functional `keras.Model` from `{"source": (batch_size, S),
        "target_in": (batch_size, T)}` (int32 ids; `target_in` is the target
        shifted right, starting with the start token) to float32 logits
        `(batch_size, T, target_vocabulary_size)`. Its layers are named
        `"source_embedding"`, `"encoder"`, `"initial_state_h"`
        (`"initial_state_c"`), `"target_embedding"`, `"decoder"` and
        `"logits"`.

    Example:

    >>> import numpy as np
    >>> model = seq2seq_translator(20, 30, embedding_dim=8, units=16, cell="lstm",
    ...                            attention="general", style="luong")
    >>> source = np.array([[4, 5, 6, 0], [7, 8, 0, 0]])
    >>> target_in = np.array([[1, 9, 10], [1, 11, 0]])
    >>> tuple(model({"source": source, "target_in": target_in}).shape)
    (2, 3, 30)
    >>> from keras_attention.models import translator_decoding
    >>> weights = translator_decoding(model).cross_attention(source, target_in)
    >>> tuple(weights.shape), float(np.asarray(weights)[1, :2, 2:].max())  # padded source
    ((2, 3, 4), 0.0)

    References:
        Bahdanau et al., 2015, "Neural Machine Translation by Jointly Learning
        to Align and Translate"; Luong et al., 2015, "Effective Approaches to
        Attention-based Neural Machine Translation".
    """
    source_vocabulary_size = positive_int(_NAME, "source_vocabulary_size", source_vocabulary_size)
    target_vocabulary_size = positive_int(_NAME, "target_vocabulary_size", target_vocabulary_size)
    embedding_dim = positive_int(_NAME, "embedding_dim", embedding_dim)
    units = positive_int(_NAME, "units", units)
    if encoder_units is None:
        encoder_units = max(1, units // 2)
    encoder_units = positive_int(_NAME, "encoder_units", encoder_units)
    if cell not in CELLS:
        raise ValueError(f"{_NAME}: `cell` must be one of {CELLS}. Received: cell={cell!r}")
    if attention in _SAME_DEPTH_ATTENTIONS and 2 * encoder_units != units:
        raise ValueError(
            f"{_NAME}: attention={attention!r} compares the decoder state with the memory, so "
            "the memory depth `2 * encoder_units` must equal `units`. "
            f"Received: units={units}, encoder_units={encoder_units}"
        )
    dropout = dropout_rate(dropout)
    try:
        decoder = AttentionDecoder(
            units,
            cell=cell,
            attention=attention,
            style=style,
            input_feeding=input_feeding,
            dropout=dropout,
            name="decoder",
        )
    except ValueError as error:
        raise ValueError(f"{_NAME}: {error}") from None

    rnn_cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    layers = {
        "source_embedding": keras.layers.Embedding(
            source_vocabulary_size, embedding_dim, mask_zero=True, name="source_embedding"
        ),
        "source_embedding_dropout": keras.layers.Dropout(dropout, name="source_embedding_dropout"),
        "encoder": keras.layers.Bidirectional(
            rnn_cls(encoder_units, return_sequences=True, return_state=True, name="encoder_rnn"),
            name="encoder",
        ),
        "initial_state_h": keras.layers.Dense(units, activation="tanh", name="initial_state_h"),
        "target_embedding": keras.layers.Embedding(
            target_vocabulary_size, embedding_dim, mask_zero=True, name="target_embedding"
        ),
        "target_embedding_dropout": keras.layers.Dropout(dropout, name="target_embedding_dropout"),
        "decoder": decoder,
        # float32 logits under mixed precision too, for a stable softmax.
        "logits": keras.layers.Dense(target_vocabulary_size, dtype="float32", name="logits"),
    }
    if cell == "lstm":
        layers["initial_state_c"] = keras.layers.Dense(units, name="initial_state_c")

    source = keras.Input((None,), dtype="int32", name="source")  # (B, S)
    target_in = keras.Input((None,), dtype="int32", name="target_in")  # (B, T)
    memory, memory_mask, decoder_state = _encode(layers, source)
    logits = _teacher_forced(layers, target_in, memory, memory_mask, decoder_state)
    return keras.Model({"source": source, "target_in": target_in}, logits, name=name)


class Seq2SeqDecoding(TranslatorDecoding):
    """`TranslatorDecoding` of a `seq2seq_translator` (made by `translator_decoding`).

    The state is `{"memory": (B, S, 2 * encoder_units), "memory_mask": (B, S)
    bool, "decoder_state": (h[, c][, h~])}` with `(B, units)` RNN states; its
    shapes do not change from step to step. The step number goes to the
    attention (a local-m attention centres its window on it). A token id `0`
    (padding) leaves the state unchanged, as padded target steps do in the
    model.
    """

    def __init__(self, model, max_length=None):
        self._layers = {
            name: find_layer(model, name)
            for name in (
                "source_embedding",
                "source_embedding_dropout",
                "encoder",
                "initial_state_h",
                "target_embedding",
                "target_embedding_dropout",
                "logits",
            )
        }
        self._layers["decoder"] = find_layer(model, "decoder", AttentionDecoder)
        if self._layers["decoder"].cell == "lstm":
            self._layers["initial_state_c"] = find_layer(model, "initial_state_c")
        if max_length is not None:
            max_length = positive_int("translator_decoding", "max_length", max_length)
        super().__init__(model, self._layers["logits"].units, max_length)

    def encode(self, source_ids):
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        memory, memory_mask, cell_state = _encode(self._layers, source_ids, training=False)
        zeros = self._layers["decoder"].get_initial_state(ops.shape(source_ids)[0])
        return {
            "memory": memory,  # (B, S, 2 * encoder_units)
            "memory_mask": memory_mask,  # (B, S)
            "decoder_state": tuple(cell_state) + zeros[len(cell_state) :],  # h~ starts at zero
        }

    def step(self, token_ids, state, step):
        token_ids = ops.convert_to_tensor(token_ids, "int32")  # (B,)
        x = self._layers["target_embedding"](token_ids)  # (B, embedding_dim)
        x = self._layers["target_embedding_dropout"](x, training=False)
        output, decoder_state = self._layers["decoder"](
            x,
            state["memory"],
            initial_state=state["decoder_state"],
            inputs_mask=ops.not_equal(token_ids, 0),
            memory_mask=state["memory_mask"],
            start_index=step,
            training=False,
        )
        logits = self._layers["logits"](output)  # (B, vocabulary_size)
        return logits, {**state, "decoder_state": tuple(decoder_state)}

    def cross_attention(self, source_ids, target_in):
        """Attention weights `(batch_size, T, S)`: row `t` is target step `t`'s weights."""
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        target_in = ops.convert_to_tensor(target_in, "int32")
        memory, memory_mask, cell_state = _encode(self._layers, source_ids, training=False)
        _, weights = _teacher_forced(
            self._layers,
            target_in,
            memory,
            memory_mask,
            cell_state,
            return_attention_scores=True,
            training=False,
        )
        return weights


# -- helpers ------------------------------------------------------------------------------------


def _encode(layers, source, training=None):
    """Source ids -> `(memory, memory_mask, [h0(, c0)])`, the same for the model and decoding."""
    memory_mask = ops.not_equal(source, 0)  # (B, S)
    x = layers["source_embedding"](source)  # (B, S, embedding_dim)
    x = layers["source_embedding_dropout"](x, training=training)
    memory, *final_states = layers["encoder"](x, mask=memory_mask, training=training)
    half = len(final_states) // 2  # forward states, then backward states
    forward, backward = final_states[:half], final_states[half:]
    state = [layers["initial_state_h"](ops.concatenate([forward[0], backward[0]], axis=-1))]
    if "initial_state_c" in layers:
        state.append(layers["initial_state_c"](ops.concatenate([forward[1], backward[1]], axis=-1)))
    return memory, memory_mask, state


def _teacher_forced(
    layers,
    target_in,
    memory,
    memory_mask,
    decoder_state,
    return_attention_scores=False,
    training=None,
):
    """Target ids -> logits `(B, T, V)` (and the weights `(B, T, S)`)."""
    x = layers["target_embedding"](target_in)  # (B, T, embedding_dim)
    x = layers["target_embedding_dropout"](x, training=training)
    outputs = layers["decoder"](
        x,
        memory,
        initial_state=decoder_state,
        inputs_mask=ops.not_equal(target_in, 0),
        memory_mask=memory_mask,
        return_attention_scores=return_attention_scores,
        training=training,
    )
    if not return_attention_scores:
        return layers["logits"](outputs)
    outputs, weights = outputs
    return layers["logits"](outputs), weights
