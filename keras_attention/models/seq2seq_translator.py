"""RNN translator: a bidirectional GRU/LSTM encoder and an `AttentionDecoder` (Bahdanau or Luong)."""

import keras
from keras import ops

from keras_attention.layers import AttentionDecoder, LocationAttention
from keras_attention.layers._dropout import Dropout
from keras_attention.layers.attention_decoder import CELLS
from keras_attention.layers.base_score_attention import has_key_projection
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.utils import one_of, positive_int, rate, renamed_argument
from keras_attention.utils.masking import padding_mask

_SAME_DEPTH_SCORES = ("dot", "scaled_dot")


@keras.saving.register_keras_serializable(package="keras_attention")
class Seq2SeqTranslator(EncoderDecoderBackbone):
    """An attention-based RNN translator (Bahdanau et al. 2015, Luong et al. 2015).

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

    Decoding (see `EncoderDecoderBackbone`): the state is `{"memory": (B, S,
    2 * encoder_units), "encoder_padding_mask": (B, S) bool,
    "decoder_state_<j>": (B, units)}` with the decoder's states `h` (`c` for
    an LSTM, then `h~` with input feeding), and for a score with a memory
    projection (`"additive"`, `"concat"`) `"projected_memory": (B, S, d)`,
    the memory's half of the score computed once by `encode` instead of at
    every step (`AttentionDecoder.project_memory`); its shapes do not change from
    step to step and there is no length limit (`max_length` is ignored). The
    step number goes to the attention (a local-m attention centres its window
    on it). A token id `0` (padding) leaves the state unchanged, as padded
    target steps do in the model. `cross_attention(source_ids, target_in)`
    returns the attention weights `(batch_size, T, S)`.

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
        score: the score attention of the decoder, a name or a layer; see
            `AttentionDecoder` and `keras_attention.layers.make_score`.
            `"dot"` and `"scaled_dot"` need `2 * encoder_units == units`.
            Defaults to `"additive"`. (`attention` is its deprecated name.)
        style: `"bahdanau"` or `"luong"`; see `AttentionDecoder`. Defaults to
            `"bahdanau"`.
        input_feeding: bool, Luong's input feeding. Defaults to `True` for
            `"luong"`, `False` for `"bahdanau"`.
        dropout: float in `[0, 1)`, dropout on the embeddings and on the
            decoder outputs in training. Defaults to `0.0`.
        dtype: optional dtype policy of the model and its layers (the logits
            stay float32).
        **kwargs: `name` (defaults to `"seq2seq_translator"`), `trainable`.

    Attributes:
        source_embedding, target_embedding: the `keras.layers.Embedding`s.
        encoder: the bidirectional RNN.
        initial_state_h, initial_state_c: the projections of the encoder's
            final states (`initial_state_c` is `None` for a GRU).
        decoder: the `AttentionDecoder`.
        output_layer: the dense layer giving the logits.

    Example:

    >>> import numpy as np
    >>> model = Seq2SeqTranslator(20, 30, embedding_dim=8, units=16, cell="lstm",
    ...                           score="general", style="luong")
    >>> source = np.array([[4, 5, 6, 0], [7, 8, 0, 0]])
    >>> target_in = np.array([[1, 9, 10], [1, 11, 0]])
    >>> tuple(model({"source": source, "target_in": target_in}).shape)
    (2, 3, 30)
    >>> weights = model.cross_attention(source, target_in)
    >>> tuple(weights.shape), float(np.asarray(weights)[1, :2, 2:].max())  # padded source
    ((2, 3, 4), 0.0)
    >>> state = model.encode(source)
    >>> sorted(state)
    ['decoder_state_0', 'decoder_state_1', 'decoder_state_2', 'encoder_padding_mask', 'memory']

    References:
        Bahdanau et al., 2015, "Neural Machine Translation by Jointly Learning
        to Align and Translate"; Luong et al., 2015, "Effective Approaches to
        Attention-based Neural Machine Translation".
    """

    def __init__(
        self,
        source_vocabulary_size,
        target_vocabulary_size,
        embedding_dim=128,
        units=256,
        encoder_units=None,
        cell="gru",
        score="additive",
        style="bahdanau",
        input_feeding=None,
        dropout=0.0,
        dtype=None,
        **kwargs,
    ):
        owner = type(self).__name__
        score = renamed_argument(owner, kwargs, "attention", "score", score, "additive")
        config = _check_arguments(
            owner,
            source_vocabulary_size=source_vocabulary_size,
            target_vocabulary_size=target_vocabulary_size,
            embedding_dim=embedding_dim,
            units=units,
            encoder_units=encoder_units,
            cell=cell,
            score=score,
            dropout=dropout,
        )
        kwargs.setdefault("name", "seq2seq_translator")
        try:
            self.decoder = AttentionDecoder(
                config["units"],
                cell=config["cell"],
                score=score,
                style=style,
                input_feeding=input_feeding,
                dropout=config["dropout"],
                dtype=dtype,
                name="decoder",
            )
        except ValueError as error:
            raise ValueError(f"{owner}: {error}") from None
        self._build_layers(dtype=dtype, **config)

        # === Functional model ===
        source = keras.Input((None,), dtype="int32", name="source")  # (B, S)
        target_in = keras.Input((None,), dtype="int32", name="target_in")  # (B, T)
        memory, memory_mask, decoder_state = self._encode(source)
        logits = self._decode(target_in, memory, memory_mask, decoder_state)
        super().__init__(
            inputs={"source": source, "target_in": target_in}, outputs=logits, dtype=dtype, **kwargs
        )

        # === Config ===
        for name, value in config.items():
            setattr(self, name, value)
        self.style = self.decoder.style
        self.input_feeding = self.decoder.input_feeding

    def _build_layers(self, source_vocabulary_size, target_vocabulary_size, embedding_dim,
                      units, encoder_units, cell, score, dropout, dtype):  # fmt: skip
        """Creates the layers around the decoder, kept as attributes."""
        rnn_cls = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
        self.source_embedding = keras.layers.Embedding(
            source_vocabulary_size, embedding_dim, mask_zero=True, dtype=dtype,
            name="source_embedding",
        )  # fmt: skip
        self.source_embedding_dropout = Dropout(
            dropout, dtype=dtype, name="source_embedding_dropout"
        )
        self.encoder = keras.layers.Bidirectional(
            rnn_cls(encoder_units, return_sequences=True, return_state=True, name="encoder_rnn"),
            dtype=dtype,
            name="encoder",
        )
        self.initial_state_h = keras.layers.Dense(
            units, activation="tanh", dtype=dtype, name="initial_state_h"
        )
        self.initial_state_c = (
            keras.layers.Dense(units, dtype=dtype, name="initial_state_c")
            if cell == "lstm"
            else None
        )
        self.target_embedding = keras.layers.Embedding(
            target_vocabulary_size, embedding_dim, mask_zero=True, dtype=dtype,
            name="target_embedding",
        )  # fmt: skip
        self.target_embedding_dropout = Dropout(
            dropout, dtype=dtype, name="target_embedding_dropout"
        )
        # float32 logits under mixed precision too, for a stable softmax.
        self.output_layer = keras.layers.Dense(target_vocabulary_size, dtype="float32", name="logits")

    def get_config(self):
        score = self.decoder.get_config()["score"]  # a name, or the layer's serialized config
        return {
            **super().get_config(),
            "source_vocabulary_size": self.source_vocabulary_size,
            "target_vocabulary_size": self.target_vocabulary_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "encoder_units": self.encoder_units,
            "cell": self.cell,
            "score": score,
            "style": self.style,
            "input_feeding": self.input_feeding,
            "dropout": self.dropout,
        }

    @property
    def source_sequence_length(self):
        """`LocationAttention`'s `max_length` (its weights have one column per source position),
        else `None`: the RNN takes sources of any length."""
        score = self.decoder.score
        return score.max_length if isinstance(score, LocationAttention) else None

    # -- decoding -------------------------------------------------------------------------------

    def encode(self, source_ids, max_length=None):
        if max_length is not None:
            positive_int(type(self).__name__, "max_length", max_length)
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        memory, memory_mask, cell_state = self._encode(source_ids, training=False)
        zeros = self.decoder.get_initial_state(ops.shape(source_ids)[0])
        states = tuple(cell_state) + zeros[len(cell_state) :]  # h~ starts at zero
        state = {"memory": memory, "encoder_padding_mask": memory_mask}
        projected_memory = self.decoder.project_memory(memory)  # None for a score without one
        if projected_memory is not None:
            state["projected_memory"] = projected_memory  # once, not at every step
        state.update({f"decoder_state_{j}": s for j, s in enumerate(states)})
        return state

    def call_with_cache(self, token_ids, state, index):
        token_ids = ops.convert_to_tensor(token_ids, "int32")  # (B,) or (B, T)
        x = self.target_embedding(token_ids)  # (B[, T], embedding_dim)
        x = self.target_embedding_dropout(x, training=False)
        states = tuple(state[f"decoder_state_{j}"] for j in range(len(self.decoder.state_size)))
        outputs = self.decoder(
            x,
            state["memory"],
            initial_state=states,
            decoder_padding_mask=padding_mask(token_ids),
            encoder_padding_mask=state["encoder_padding_mask"],
            start_index=index,
            return_state=True,
            training=False,
            projected_memory=state.get("projected_memory"),
        )
        output, new_states = outputs
        new_state = dict(state)
        new_state.update({f"decoder_state_{j}": s for j, s in enumerate(new_states)})
        return self.output_layer(output), new_state

    def cross_attention(self, source_ids, target_in):
        """Attention weights `(batch_size, T, S)`: row `t` is target step `t`'s weights."""
        source_ids = ops.convert_to_tensor(source_ids, "int32")
        target_in = ops.convert_to_tensor(target_in, "int32")
        memory, memory_mask, cell_state = self._encode(source_ids, training=False)
        _, weights = self._decode(
            target_in, memory, memory_mask, cell_state, return_attention_scores=True,
            training=False,
        )  # fmt: skip
        return weights

    def alignment(self, source_ids, target_in):
        """The decoder's attention weights `(batch_size, T, S)`."""
        return self.cross_attention(source_ids, target_in)

    def decoding_state_spec(self, max_length=None):
        dtype = self.decoder.compute_dtype
        spec = {
            "memory": ((None, None, 2 * self.encoder_units), dtype),
            "encoder_padding_mask": ((None, None), "bool"),
        }
        attention = self.decoder._attention_layer
        if has_key_projection(attention):
            depth = attention.projected_key_dim(2 * self.encoder_units)
            spec["projected_memory"] = ((None, None, depth), dtype)
        for j, size in enumerate(self.decoder.state_size):
            spec[f"decoder_state_{j}"] = ((None, size), dtype)
        return spec

    # -- the forward pass, shared by the graph and the decoding methods -------------------------

    def _encode(self, source, training=None):
        """Source ids -> `(memory, memory_mask, [h0(, c0)])`."""
        memory_mask = padding_mask(source)  # (B, S)
        x = self.source_embedding(source)  # (B, S, embedding_dim)
        x = self.source_embedding_dropout(x, training=training)
        memory, *final_states = self.encoder(x, mask=memory_mask, training=training)
        half = len(final_states) // 2  # forward states, then backward states
        forward, backward = final_states[:half], final_states[half:]
        state = [self.initial_state_h(ops.concatenate([forward[0], backward[0]], axis=-1))]
        if self.initial_state_c is not None:
            state.append(self.initial_state_c(ops.concatenate([forward[1], backward[1]], axis=-1)))
        return memory, memory_mask, state

    def _decode(self, target_in, memory, memory_mask, decoder_state,
                return_attention_scores=False, training=None):
        """Target ids -> logits `(B, T, V)` (and the weights `(B, T, S)`)."""
        x = self.target_embedding(target_in)  # (B, T, embedding_dim)
        x = self.target_embedding_dropout(x, training=training)
        outputs = self.decoder(
            x,
            memory,
            initial_state=decoder_state,
            decoder_padding_mask=padding_mask(target_in),
            encoder_padding_mask=memory_mask,
            return_attention_scores=return_attention_scores,
            training=training,
        )
        if not return_attention_scores:
            return self.output_layer(outputs)
        outputs, weights = outputs
        return self.output_layer(outputs), weights


def _check_arguments(owner, **arguments):
    """The constructor arguments, checked (a `ValueError` names the first bad one)."""
    for name in ("source_vocabulary_size", "target_vocabulary_size", "embedding_dim", "units"):
        arguments[name] = positive_int(owner, name, arguments[name])
    units, encoder_units = arguments["units"], arguments["encoder_units"]
    encoder_units = positive_int(
        owner, "encoder_units", max(1, units // 2) if encoder_units is None else encoder_units
    )
    arguments["encoder_units"] = encoder_units
    arguments["cell"] = one_of(owner, "cell", arguments["cell"], CELLS)
    if arguments["score"] in _SAME_DEPTH_SCORES and 2 * encoder_units != units:
        raise ValueError(
            f"{owner}: score={arguments['score']!r} compares the decoder state with the memory, "
            "so the memory depth `2 * encoder_units` must equal `units`. "
            f"Received: units={units}, encoder_units={encoder_units}"
        )
    arguments["dropout"] = rate(owner, "dropout", arguments["dropout"])
    return arguments


def seq2seq_translator(*args, **kwargs):
    """Builds a `Seq2SeqTranslator` (see the class for the arguments).

    Example:

    >>> model = seq2seq_translator(20, 30, embedding_dim=8, units=16)
    >>> type(model).__name__, model.decoder.score
    ('Seq2SeqTranslator', 'additive')
    """
    return Seq2SeqTranslator(*args, **kwargs)
