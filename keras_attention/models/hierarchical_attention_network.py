"""Hierarchical attention network for document classification (Yang et al. 2016)."""

import keras
from keras import ops

from keras_attention.layers import AttentionPooling
from keras_attention.layers._dropout import Dropout
from keras_attention.models.backbone import Backbone
from keras_attention.utils import describe, optional_positive_int, positive_int, rate


@keras.saving.register_keras_serializable(package="keras_attention")
class HierarchicalAttentionNetwork(Backbone):
    """A hierarchical attention network (HAN) document classifier.

    A document is a `(num_sentences, num_words)` grid of word ids. The word
    encoder (embedding + bidirectional GRU) reads every sentence and
    `AttentionPooling` turns its annotations into a sentence vector; the
    sentence encoder (bidirectional GRU) reads the sentence vectors and a
    second `AttentionPooling` turns them into a document vector, which a
    softmax layer classifies. Word id `0` is padding: padded words get zero
    word weight, and an all-padding sentence is a padded sentence with zero
    sentence weight. All sentences of a batch are encoded together as one
    batch of `batch_size * num_sentences` rows. The GRUs skip the padding
    after the last word of a sentence and after the last sentence of a
    document; padding before them is read (as the embedding of id `0`, or a
    zero sentence vector) but still gets zero weight. No GRU sees a fully
    padded row, which cuDNN's GRU rejects on GPUs.

    The word and sentence attention weights, for display, come from
    `hierarchical_attention_weights(model)`, a second model sharing these
    layers (it works on a reloaded `.keras` model too).

    Args:
        vocabulary_size: positive int, the number of word ids (`0` included).
        num_classes: int `>= 2`, the number of labels.
        num_sentences: optional positive int, the sentences per document.
            Defaults to `None` (any number).
        num_words: optional positive int, the words per sentence. Defaults
            to `None` (any number).
        embedding_dim: positive int, the word embedding size. Defaults to
            `64`.
        word_units: positive int, the GRU size of each direction of the
            word encoder. Defaults to `32`.
        sentence_units: positive int, the GRU size of each direction of the
            sentence encoder. Defaults to `32`.
        attention_units: optional positive int, the size of the context
            vectors of both attention layers. Defaults to `None`: the depth of
            the annotations they pool (`2 * word_units`, `2 * sentence_units`),
            as in the paper.
        dropout: float in `[0, 1)`, dropout on the document vector before
            the classifier. Defaults to `0.0`.
        dtype: optional dtype policy of the model and its layers.
        **kwargs: `name` (defaults to `"hierarchical_attention_network"`),
            `trainable`.

    The model maps int32 ids `(batch_size, num_sentences, num_words)` to
    class probabilities `(batch_size, num_classes)`.

    Attributes:
        word_embedding, word_encoder, sentence_encoder, classifier: its
            layers; `word_attention` and `sentence_attention`: the two
            `AttentionPooling` layers.

    Example:

    >>> import numpy as np
    >>> model = HierarchicalAttentionNetwork(vocabulary_size=30, num_classes=3,
    ...                                       embedding_dim=8, word_units=4, sentence_units=4)
    >>> ids = np.array([[[5, 7, 2, 0], [9, 0, 0, 0], [0, 0, 0, 0]]], "int32")
    >>> tuple(model(ids).shape)
    (1, 3)
    >>> weights = hierarchical_attention_weights(model)(ids)
    >>> tuple(weights["word_weights"].shape), tuple(weights["sentence_weights"].shape)
    ((1, 3, 4), (1, 3))
    >>> (np.asarray(weights["sentence_weights"]) > 0).astype(int)  # the last is padding
    array([[1, 1, 0]])
    >>> np.asarray(weights["word_weights"])[0, 1].round(3)  # one word: all the weight
    array([1., 0., 0., 0.], dtype=float32)

    References:
        Yang et al., 2016, "Hierarchical Attention Networks for Document
        Classification", NAACL.
    """

    def __init__(
        self,
        vocabulary_size,
        num_classes,
        num_sentences=None,
        num_words=None,
        embedding_dim=64,
        word_units=32,
        sentence_units=32,
        attention_units=None,
        dropout=0.0,
        dtype=None,
        **kwargs,
    ):
        config = _check_arguments(
            type(self).__name__,
            vocabulary_size=vocabulary_size,
            num_classes=num_classes,
            num_sentences=num_sentences,
            num_words=num_words,
            embedding_dim=embedding_dim,
            word_units=word_units,
            sentence_units=sentence_units,
            attention_units=attention_units,
            dropout=dropout,
        )
        kwargs.setdefault("name", "hierarchical_attention_network")

        self._build_layers(config, dtype)

        # === Functional model ===
        ids = keras.Input(
            (config["num_sentences"], config["num_words"]), dtype="int32", name="token_ids"
        )  # (B, S, W)
        rows = _SentencesToRows(name="sentences_to_rows")(ids)  # (B * S, W)
        word_mask, word_encoder_mask = _PaddingMasks(name="word_masks")(rows)  # (B * S, W)
        words = self.word_encoder(
            self.word_embedding(rows), mask=word_encoder_mask
        )  # (B * S, W, 2 * word_units)
        sentence_vectors, word_weights = self.word_attention(
            words, mask=word_mask, return_attention_scores=True
        )  # (B * S, 2 * word_units)
        sentence_vectors = _RowsToSentences(name="rows_to_sentences")([sentence_vectors, ids])
        sentence_mask, sentence_encoder_mask = _PaddingMasks(name="sentence_masks")(ids)  # (B, S)
        annotations = self.sentence_encoder(
            sentence_vectors, mask=sentence_encoder_mask
        )  # (B, S, 2 * sentence_units)
        document, sentence_weights = self.sentence_attention(
            annotations, mask=sentence_mask, return_attention_scores=True
        )  # (B, 2 * sentence_units)
        if self.dropout_layer is not None:
            document = self.dropout_layer(document)
        probabilities = self.classifier(document)
        super().__init__(inputs=ids, outputs=probabilities, dtype=dtype, **kwargs)
        # The symbolic weights, for `hierarchical_attention_weights`.
        self._attention_outputs = (word_weights, sentence_weights)

        # === Config ===
        for name, value in config.items():
            setattr(self, name, value)

    def _build_layers(self, config, dtype):
        """Creates the layers, kept as attributes."""
        self.word_embedding = keras.layers.Embedding(
            config["vocabulary_size"], config["embedding_dim"], dtype=dtype, name="word_embedding"
        )
        self.word_encoder = keras.layers.Bidirectional(
            keras.layers.GRU(config["word_units"], return_sequences=True, name="gru"),
            dtype=dtype,
            name="word_encoder",
        )
        self.word_attention = AttentionPooling(
            config["attention_units"], dtype=dtype, name="word_attention"
        )
        self.sentence_encoder = keras.layers.Bidirectional(
            keras.layers.GRU(config["sentence_units"], return_sequences=True, name="gru"),
            dtype=dtype,
            name="sentence_encoder",
        )
        self.sentence_attention = AttentionPooling(
            config["attention_units"], dtype=dtype, name="sentence_attention"
        )
        dropout = config["dropout"]
        self.dropout_layer = (
            Dropout(dropout, dtype=dtype, name="dropout") if dropout else None
        )
        self.classifier = keras.layers.Dense(
            config["num_classes"], activation="softmax", dtype=dtype, name="classifier"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_classes": self.num_classes,
            "num_sentences": self.num_sentences,
            "num_words": self.num_words,
            "embedding_dim": self.embedding_dim,
            "word_units": self.word_units,
            "sentence_units": self.sentence_units,
            "attention_units": self.attention_units,
            "dropout": self.dropout,
        }


def _check_arguments(owner, **arguments):
    """The constructor arguments, checked."""
    for name in ("vocabulary_size", "embedding_dim", "word_units", "sentence_units"):
        arguments[name] = positive_int(owner, name, arguments[name])
    arguments["num_classes"] = positive_int(owner, "num_classes", arguments["num_classes"], 2)
    for name in ("num_sentences", "num_words", "attention_units"):
        arguments[name] = optional_positive_int(owner, name, arguments[name])
    arguments["dropout"] = rate(owner, "dropout", arguments["dropout"])
    return arguments


def hierarchical_attention_network(*args, **kwargs):
    """Builds a `HierarchicalAttentionNetwork` (see the class for the arguments).

    Example:

    >>> model = hierarchical_attention_network(vocabulary_size=30, num_classes=3)
    >>> type(model).__name__
    'HierarchicalAttentionNetwork'
    """
    return HierarchicalAttentionNetwork(*args, **kwargs)


def hierarchical_attention_weights(model):
    """The word and sentence attention weights of a `HierarchicalAttentionNetwork`.

    Returns a second `keras.Model` that shares the layers (and so the
    trained weights) of `model`, built from the outputs of its
    `word_attention` and `sentence_attention` layers, so it also works on a
    model reloaded from a `.keras` file.

    Args:
        model: a `HierarchicalAttentionNetwork` (built by
            `hierarchical_attention_network`, or reloaded from one).

    Returns:
        A `keras.Model` from the ids `(batch_size, num_sentences, num_words)`
        to a dict: `"word_weights"` `(batch_size, num_sentences, num_words)`,
        each sentence's weights over its words (zero on padded words and on
        padded sentences), and `"sentence_weights"` `(batch_size,
        num_sentences)`, the document's weights over its sentences (zero on
        padded sentences). See the example of `HierarchicalAttentionNetwork`.
    """
    if not isinstance(model, HierarchicalAttentionNetwork):
        raise ValueError(
            "`model` must be a `HierarchicalAttentionNetwork` (built by "
            "`hierarchical_attention_network`). Received: model="
            + describe(model)
        )
    word_weights, sentence_weights = model._attention_outputs
    ids = model.inputs[0]
    word_weights = _RowsToSentences(name="word_weights")([word_weights, ids])
    return keras.Model(
        ids,
        {"word_weights": word_weights, "sentence_weights": sentence_weights},
        name=f"{model.name}_attention_weights",
    )


# -- helpers ------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_attention")
class _SentencesToRows(keras.layers.Layer):
    """Ids `(B, S, W)` -> `(B * S, W)`: every sentence becomes a row of the word encoder."""

    def call(self, ids):
        return ops.reshape(ids, (-1, ops.shape(ids)[2]))

    def compute_output_shape(self, ids_shape):
        batch, sentences, words = ids_shape
        rows = None if batch is None or sentences is None else batch * sentences
        return (rows, words)


@keras.saving.register_keras_serializable(package="keras_attention")
class _RowsToSentences(keras.layers.Layer):
    """Rows `(B * S, ...)` back to `(B, S, ...)`, the shape of the ids `(B, S, W)`."""

    def call(self, inputs):
        rows, ids = inputs
        shape = ops.shape(ids)
        return ops.reshape(rows, (shape[0], shape[1], *ops.shape(rows)[1:]))

    def compute_output_shape(self, input_shape):
        rows_shape, ids_shape = input_shape
        return (ids_shape[0], ids_shape[1], *rows_shape[1:])


@keras.saving.register_keras_serializable(package="keras_attention")
class _PaddingMasks(keras.layers.Layer):
    """The padding mask of ids, and the mask the GRU encoder reads with.

    Word ids `(N, W)` give `ids != 0`; document ids `(B, S, W)` give the
    sentences with a word, `(B, S)`. The encoder mask covers every position
    up to the last unpadded one, and at least the first: cuDNN's GRU (used on
    GPUs) rejects fully masked rows, which every padded sentence and every
    empty document would be, and masks that are not right-padded. The
    attention layers use the padding mask, so padding still gets zero
    weight; a padded row's encoder output is never attended to.
    """

    def call(self, ids):
        mask = ops.not_equal(ids, 0)
        if len(ids.shape) == 3:
            mask = ops.any(mask, axis=-1)  # (B, S)
        positions = ops.arange(1, ops.shape(mask)[-1] + 1, dtype="int32")  # (T,)
        last = ops.max(ops.where(mask, positions, 0), axis=-1, keepdims=True)  # (N, 1)
        encoder_mask = ops.less_equal(positions, ops.maximum(last, 1))  # (N, T)
        return mask, encoder_mask

    def compute_output_spec(self, ids):
        shape = tuple(ids.shape[:2])
        return keras.KerasTensor(shape, dtype="bool"), keras.KerasTensor(shape, dtype="bool")
