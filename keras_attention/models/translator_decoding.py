"""The inference side of the translators: encode a source once, then decode one token per step."""

import abc

import keras


class TranslatorDecoding(abc.ABC):
    """Encoder and one-step decoder of a translator, built from the model's own layers.

    Made by `translator_decoding(model)` for a model of `seq2seq_translator`
    or `transformer_translator` (also one reloaded from a `.keras` file): it
    finds the model's layers by name and calls them, so it shares the
    model's weights and reproduces its teacher-forced logits step by step.
    Every method is traceable in a `tf.function` with unknown batch size and
    source length.

    The decoding interface (what `keras_attention.generation` calls):

    - `encode(source_ids) -> state`: `source_ids` int `(batch_size, S)`, `0`
      padding. `state` is a dict of tensors, each with a leading batch axis:
      the boolean `"memory_mask"` `(batch_size, S)` and what the decoder
      needs of the source (the RNN: the encoder outputs `"memory"`
      `(batch_size, S, dim)`; the Transformer: their keys and values,
      projected once per block, `"cross_caches"`), then its own entries (RNN
      states, or rank-4 KV caches of a fixed `max_length`).
    - `step(token_ids, state, step) -> (logits, new_state)`: `token_ids` int32
      `(batch_size,)`, the previous token (the start token at step `0`);
      `step` an int32 scalar, the position of `token_ids` in the target (the
      cache index). `logits` `(batch_size, vocabulary_size)` are unnormalised
      and `new_state` has the structure, shapes and dtypes of `state`.
    - `cross_attention(source_ids, target_in)`: the decoder's attention
      weights over the source for a teacher-forced target, for plotting.

    Attributes:
        model: the translator.
        vocabulary_size: the size of the target vocabulary (of the logits).
        max_length: the most target positions a decoding can take (the size
            of the KV caches), or `None` when there is no limit.
    """

    def __init__(self, model, vocabulary_size, max_length):
        self.model = model
        self.vocabulary_size = vocabulary_size
        self.max_length = max_length

    @abc.abstractmethod
    def encode(self, source_ids):
        """Source ids `(batch_size, S)` -> the initial decoding state."""

    @abc.abstractmethod
    def step(self, token_ids, state, step):
        """One decoding step: `(logits (batch_size, vocabulary_size), new_state)`."""

    @abc.abstractmethod
    def cross_attention(self, source_ids, target_in):
        """The attention weights over the source of a teacher-forced decoding."""

    @property
    def step_fn(self):
        """`step` as a function `step_fn(token_ids, state, step) -> (logits, new_state)`."""
        return self.step


def translator_decoding(model, max_length=None):
    """The encoder and one-step decoder of a translator model, for generation.

    Args:
        model: a `keras.Model` built by `seq2seq_translator` or
            `transformer_translator`, or reloaded from one.
        max_length: positive int, the size of the Transformer's KV caches: the
            most target positions (start token included) a decoding can take.
            Defaults to the model's `max_length`, which it may not exceed.
            An RNN translator has no limit and ignores it.

    Returns:
        A `TranslatorDecoding` with `encode`, `step` (the `step_fn` of
        `keras_attention.generation`) and `cross_attention`.

    Example:

    >>> import numpy as np
    >>> from keras_attention.models import seq2seq_translator
    >>> model = seq2seq_translator(20, 30, embedding_dim=8, units=16)
    >>> decoding = translator_decoding(model)
    >>> state = decoding.encode(np.array([[4, 5, 6, 0], [7, 8, 0, 0]]))
    >>> tokens = np.array([1, 1], "int32")  # the start token
    >>> for t in range(3):  # greedy
    ...     logits, state = decoding.step(tokens, state, t)
    ...     tokens = np.argmax(logits, axis=-1).astype("int32")
    >>> tuple(logits.shape)
    (2, 30)
    """
    from keras_attention.models.seq2seq_translator import Seq2SeqDecoding
    from keras_attention.models.transformer_translator import TransformerDecoding

    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    names = {layer.name for layer in model.layers}
    if "decoder" in names:
        return Seq2SeqDecoding(model, max_length)
    if "decoder_block_0" in names:
        return TransformerDecoding(model, max_length)
    raise ValueError(
        "`model` must be built by `seq2seq_translator` (a layer named 'decoder') or "
        "`transformer_translator` (layers named 'decoder_block_<i>'). "
        f"Received: model {model.name!r} with layers {sorted(names)}"
    )


def find_layer(model, name, layer_cls=None):
    """`model.get_layer(name)`, with a `ValueError` naming the builder when it is missing."""
    try:
        layer = model.get_layer(name)
    except ValueError:
        layer = None
    if layer is None or (layer_cls is not None and not isinstance(layer, layer_cls)):
        raise ValueError(
            f"`model` has no layer {name!r}"
            + (f" of type {layer_cls.__name__}" if layer_cls is not None else "")
            + "; it must be built by `seq2seq_translator` or `transformer_translator`. "
            f"Received: model {model.name!r}"
        )
    return layer
