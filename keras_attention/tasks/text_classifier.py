"""Text and token classification on a BERT encoder: strings in, labels and probabilities out."""

import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_attention.models.bert import (
    BertBackbone,
    BertClassifier,
    BertTokenClassifier,
)
from keras_attention.tasks.bert_config import ClassifierConfig, LabeledData
from keras_attention.tasks.losses import MaskedCrossEntropy, MaskedTokenAccuracy
from keras_attention.tasks.masked_lm import (
    VOCABULARY,
    check_bert_preprocessor,
    serve_with_status,
    text_batch,
    trimmed,
)
from keras_attention.tasks.registry import register_task
from keras_attention.tasks.serving_status import (
    answered,
    decode_statuses,
    framed_status,
    sanitize,
)
from keras_attention.tasks.task import ASSETS_DIR, Task, read_task_file
from keras_attention.utils import describe, positive_int
from keras_attention.utils.files import read_json, write_json
from pipelines import classification
from pipelines.masked_lm import BERT_RESERVED_TOKENS, MaskedLMPreprocessor
from pipelines.text import build_wordpiece_vocab

LABELS_FILE = "labels.json"
_LABELS_FORMAT = "keras_attention.labels"


class ClassifierPreprocessor(MaskedLMPreprocessor):
    """A `MaskedLMPreprocessor` that also knows the label names (saved as `labels.json`).

    Args:
        tokenizer: a `TextTokenizer` with `[CLS]` and `[SEP]`, or its vocabulary path.
        sequence_length: int >= 8, the longest framed input.
        labels: the label (or tag) names, index = class id.
    """

    def __init__(self, tokenizer, sequence_length=128, labels=()):
        super().__init__(tokenizer, sequence_length)
        labels = [str(label) for label in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels) or not all(
            label.strip() == label and label for label in labels
        ):
            # An empty name would be an answer that reads as no answer (an empty text's).
            raise ValueError(
                "ClassifierPreprocessor: `labels` must be at least 2 distinct, non-empty names "
                f"without surrounding whitespace. Received: labels={labels[:20]}"
            )
        self.labels = tuple(labels)

    def save_assets(self, directory):
        paths = list(super().save_assets(directory))
        path = os.path.join(os.fspath(directory), LABELS_FILE)
        write_json(path, {"format": _LABELS_FORMAT, "labels": list(self.labels)})
        return [*paths, path]

    @classmethod
    def from_assets(cls, directory, **config):
        labels = read_json(os.path.join(os.fspath(directory), LABELS_FILE), _LABELS_FORMAT,
                           "a label list")["labels"]  # fmt: skip
        return cls(os.path.join(os.fspath(directory), VOCABULARY), labels=labels, **config)


class _BertClassification(Task):
    """What the sentence and the token classifier share: the pre-trained start, the checks."""

    _model_class = None
    preprocessor_class = ClassifierPreprocessor
    config_class = ClassifierConfig
    data_class = LabeledData

    def __init__(self, backbone, preprocessor):
        name = type(self).__name__
        if not isinstance(backbone, self._model_class):
            raise ValueError(
                f"{name}: `backbone` must be a keras_attention.models."
                f"{self._model_class.__name__}. Received: backbone={describe(backbone)}"
            )
        check_bert_preprocessor(name, backbone.backbone, preprocessor)
        if not isinstance(preprocessor, ClassifierPreprocessor):
            raise ValueError(
                f"{name}: `preprocessor` must be a ClassifierPreprocessor (it has the labels). "
                f"Received: preprocessor={preprocessor!r}"
            )
        outputs = getattr(backbone, "num_classes", None) or backbone.num_labels
        if len(preprocessor.labels) != outputs:
            raise ValueError(
                f"{name}: the preprocessor has {len(preprocessor.labels)} labels, the model "
                f"{outputs} outputs. Received: labels={list(preprocessor.labels)[:20]}"
            )
        super().__init__(backbone, preprocessor)
        self._labels = tf.constant(preprocessor.labels)
        spec = tf.TensorSpec([None], tf.string, name="text")
        self.serve = tf.function(self._serve, input_signature=[spec])

    @property
    def labels(self):
        """The label names, index = class id."""
        return self.preprocessor.labels

    @classmethod
    def read_valid_data(cls, valid_data, train_data):
        """`read_data(valid_data)`, refusing labels the training data does not have."""
        return cls.read_data(valid_data, classification.label_vocabulary(train_data[1]))

    @classmethod
    def build_preprocessor(cls, config, data, assets_dir):
        """The vocabulary (learned, or the pre-trained model's) and the labels of the data."""
        texts, labels = data
        names = classification.label_vocabulary(
            [tag for row in labels for tag in row] if labels and isinstance(labels[0], list)
            else labels
        )  # fmt: skip
        if config.init_from is not None:
            tokenizer = _pretrained_preprocessor(config).tokenizer
        else:
            tokenizer = os.path.join(assets_dir, VOCABULARY)
            words = (" ".join(t) if isinstance(t, list) else t for t in texts)
            build_wordpiece_vocab(words, tokenizer, config.vocabulary_size,
                                  lowercase=config.lowercase,
                                  extra_reserved_tokens=BERT_RESERVED_TOKENS)  # fmt: skip
        preprocessor = ClassifierPreprocessor(tokenizer, config.sequence_length, names)
        preprocessor.save_assets(assets_dir)  # the vocabulary and the labels, read on resume
        return preprocessor

    @classmethod
    def load_preprocessor(cls, config, assets_dir):
        return ClassifierPreprocessor.from_assets(assets_dir, sequence_length=config.sequence_length)

    @classmethod
    def build(cls, config, preprocessor):
        """A new classifier: on a fresh encoder, or on the pre-trained one of `init_from`."""
        if config.init_from is not None:
            encoder = _pretrained_encoder(config, preprocessor)
        else:
            encoder = BertBackbone(preprocessor.tokenizer.vocabulary_size,
                                   **config.encoder_options())  # fmt: skip
        model = cls._model_class(encoder, len(preprocessor.labels),
                                 dropout=config.classifier_dropout,
                                 **cls._head_options(config))  # fmt: skip
        return cls(model, preprocessor)

    @classmethod
    def _head_options(cls, config):
        """The head's options from `config` beyond the dropout (`pooling` for a text classifier)."""
        return {"pooling": config.pooling}

    def _inputs(self, texts):
        texts = text_batch(texts, type(self).__name__)
        return texts, tf.constant(texts, tf.string, shape=[len(texts)])

    @staticmethod
    def serving_input(inputs):
        """What the exported signature takes: a `tf.string` batch of texts."""
        texts = [t if isinstance(t, bytes) else str(t) for t in inputs]  # bytes as they are
        return tf.constant(texts, tf.string, shape=[len(inputs)])

    def serving_signatures(self):
        """`serving_default`: `text: tf.string (batch_size,)` -> the outputs of `serving_outputs`."""
        return {"serving_default": (self.serve, {"text": tf.TensorSpec([None], tf.string)})}

    def _evaluation_data(self, data, limit):
        """`read_data(data)` (labels the model has no class for refused), its first `limit`."""
        inputs, labels = self.read_data(data, self.labels)
        if limit is not None:
            limit = positive_int(f"{type(self).__name__}.evaluate", "limit", limit)
            inputs, labels = inputs[:limit], labels[:limit]
        return inputs, labels


@register_task
class TextClassifier(_BertClassification):
    """Sentence classification on a BERT encoder: strings in, labels out (one text per example).

    One `tf.function` traced for a `tf.string` `(batch_size,)` input, the one
    the SavedModel serves, tokenizes (`[CLS] text [SEP]`, truncated to the
    preprocessor's `sequence_length`), runs the classifier and returns the
    label probabilities and the most likely label (`serving_default`: `text`
    `(B,)` -> `label` `(B,)`, `probabilities` `(B, num_labels)`, `status`
    `(B,)`: see `keras_attention.tasks.serving_status`; an `empty_input` or
    `invalid_utf8` text gets the label `""` and the neutral probabilities
    `1 / num_labels`, never a confident label of nothing). The `.tflite` export
    (`tflite_signatures`) holds the model from ids to probabilities (the
    tokenizer stays on the host: `export.tflite_predictor`).

    Train it from scratch or from a pre-trained `MaskedLM` run
    (`ClassifierConfig(init_from=...)`, `--init-from`): its encoder and
    vocabulary are copied.

    Args:
        backbone: a `keras_attention.models.BertClassifier`.
        preprocessor: a `ClassifierPreprocessor` (vocabulary and label names).
    """

    task_name = "classifier"
    train_summary = (
        "Train a text classifier (BERT encoder) on a TSV of `sentence<TAB>label`, from scratch "
        "or from a pre-trained masked-lm run (--init-from)."
    )
    _model_class = BertClassifier
    serving_outputs = {"serving_default": ("label", "probabilities", "status")}
    prediction_output = "label"

    def training_network(self):
        """The classifier; with mean pooling its backbone's pooler is frozen (it is not used)."""
        if self.backbone.pooling == "mean":
            self.backbone.backbone.pooled_dense.trainable = False
        return self.backbone

    def predict_proba(self, texts):
        """Label probabilities, float32 `(batch_size, num_labels)` (columns in `labels` order)."""
        texts, batch = self._inputs(texts)
        if not texts:
            return np.zeros([0, len(self.labels)], "float32")
        return self.serve(batch)["probabilities"].numpy()

    def classify(self, texts):
        """A list of dicts: `"label"`, its `"probability"`, every label's `"probabilities"`.

        A text without tokens or not UTF-8 gets the label `""`, probability `0.0` and the
        neutral probabilities (`"status"` says why: `keras_attention.tasks.serving_status`).
        """
        texts, batch = self._inputs(texts)
        if not texts:
            return []
        outputs = {key: value.numpy() for key, value in self.serve(batch).items()}
        results = []
        for label, row, status in zip(
            outputs["label"], outputs["probabilities"], decode_statuses(outputs["status"]),
            strict=True,
        ):  # fmt: skip
            label = label.decode("utf-8")
            results.append({
                "label": label,
                "probability": float(np.max(row)) if label else 0.0,
                "probabilities": dict(zip(self.labels, map(float, row), strict=True)),
                "status": status,
            })  # fmt: skip
        return results

    def predict(self, texts):
        """The most likely label of each text (a list of `str`; `""` for an empty text)."""
        return [result["label"] for result in self.classify(texts)]

    def predict_with_status(self, texts):
        """`{"outputs": predict(texts), "status": [str]}` (`keras_attention.tasks.serving_status`)."""
        return serve_with_status(self, texts, "label")

    def __call__(self, texts):
        return self.classify(texts)

    def evaluate(self, data, batch_size=64, limit=None):
        """Accuracy and macro F1 on labeled texts (a TSV or `(texts, labels)`)."""
        positive_int("TextClassifier.evaluate", "batch_size", batch_size)
        texts, labels = self._evaluation_data(data, limit)
        predicted = []
        for start in range(0, len(texts), batch_size):
            predicted += self.predict(texts[start : start + batch_size])
        return {"examples": len(texts), **label_scores(predicted, labels, self.labels)}

    def summarize(self, result, split="validation"):
        return [
            f"{split}: {result['examples']} examples, accuracy {result['accuracy']:.2%}, "
            f"macro F1 {result['macro_f1']:.2%}"
        ]

    # -- on device ------------------------------------------------------------------------------

    device_signature = "classify"

    def tflite_signatures(self):
        """The `.tflite` file's signature: `classify`, ids in, probabilities out.

        Inputs `token_ids`, `padding_mask`, `segment_ids`, int32 `(batch_size,
        length)` (any sizes up to the model's `max_sequence_length`); output
        `probabilities`, float32 `(batch_size, num_labels)`. What
        `keras_attention.export.convert_task_tflite` converts (builtin ops
        only); the tokenizer stays on the host (`preprocess_for_device`).
        """
        specs = [tf.TensorSpec([None, None], tf.int32, name=name)
                 for name in ("token_ids", "padding_mask", "segment_ids")]  # fmt: skip

        def classify(token_ids, padding_mask, segment_ids):
            inputs = {"token_ids": token_ids, "padding_mask": padding_mask,
                      "segment_ids": segment_ids}  # fmt: skip
            logits = self.backbone(inputs, training=False)
            return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}

        return {self.device_signature: (classify, specs)}

    def preprocess_for_device(self, texts):
        """`(feed, answered)`: the `classify` signature's int32 inputs (tokenized here), bool `(B,)`.

        `answered` is `False` for an `empty_input` or `invalid_utf8` text (label `""`).
        """
        _, batch = self._inputs(texts)
        batch, valid = sanitize(batch)
        inputs = self.preprocessor.preprocess(batch)
        status = framed_status(valid, inputs)
        feed = {key: value.numpy() for key, value in trimmed(inputs).items()}
        return feed, answered(status).numpy()

    def device_status(self, texts):
        """The `status` of each text (list of `str`), as the SavedModel answers it."""
        _, batch = self._inputs(texts)
        batch, valid = sanitize(batch)
        return decode_statuses(framed_status(valid, self.preprocessor.preprocess(batch)))

    def postprocess_from_device(self, outputs):
        """The `classify` signature's outputs -> the most likely label of each row."""
        probabilities = np.asarray(outputs["probabilities"])
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.labels):
            raise ValueError(
                f"The `probabilities` output must be (batch_size, {len(self.labels)}), a column "
                f"per label of this task; is the `.tflite` file another model's? Received: "
                f"shape={probabilities.shape}"
            )
        return [self.labels[int(i)] for i in np.argmax(probabilities, -1)]

    # -- training -------------------------------------------------------------------------------

    @classmethod
    def read_data(cls, data, labels=None):
        """`(texts, labels)` from a TSV (`pipelines.classification.read_labeled_texts`) or lists.

        With `labels` (the model's), any other label is refused, its file and line (or
        index) named.
        """
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], list):
            texts, given = data
            if len(texts) != len(given):
                raise ValueError(
                    f"TextClassifier: `texts` and `labels` must be aligned. Received: "
                    f"{len(texts)} texts, {len(given)} labels"
                )
            known = None if labels is None else {str(label) for label in labels}
            # Checked as a file's rows are: texts of `str`, stripped, nothing empty.
            return classification.labeled_rows(list(zip(texts, given, strict=True)), known, "data")
        return classification.read_labeled_texts(data, labels)

    def make_dataset(self, data, batch_size=32, shuffle=False, seed=None):
        texts, labels = data
        return classification.make_dataset(
            texts, labels, self.preprocessor, self.labels, batch_size=batch_size,
            shuffle=shuffle, seed=0 if seed is None else seed,
        )  # fmt: skip

    def loss(self, config=None):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics(self, config=None):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def _serve(self, text):
        text, valid = sanitize(text)
        inputs = self.preprocessor.preprocess(text)
        status = framed_status(valid, inputs)
        keep = answered(status)
        logits = self.backbone(trimmed(inputs), training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
        neutral = tf.fill(tf.shape(probabilities), 1.0 / len(self.labels))
        return {
            "label": tf.where(keep, tf.gather(self._labels, tf.argmax(probabilities, -1)), ""),
            "probabilities": tf.where(keep[:, None], probabilities, neutral),
            "status": status,
        }


@register_task
class TokenClassifier(_BertClassification):
    """A label per word (tagging: named entities, parts of speech) on a BERT encoder.

    Text is split into words on whitespace (or given as lists of words); each
    word is tokenized into word pieces, and the label of a word is the one
    predicted at its first piece. Words past the preprocessor's
    `sequence_length` are not tagged (their tag is `""`). `serving_default`:
    `text` `(B,)` -> `words` and `tags` `(B, W)` (padded with `""`),
    `tagged` `(B,)` (`word/TAG word/TAG ...`) and `status` `(B,)`
    (`keras_attention.tasks.serving_status`: an `empty_input` or
    `invalid_utf8` text has no words, `tagged` `""`; `truncated`: words
    were left untagged).

    Args:
        backbone: a `keras_attention.models.BertTokenClassifier`.
        preprocessor: a `ClassifierPreprocessor` (vocabulary and tag names).
    """

    task_name = "token-classifier"
    train_summary = (
        "Train a token classifier (a tag per word, BERT encoder) on `word<TAB>tag` lines with a "
        "blank line between sentences, from scratch or from a masked-lm run (--init-from)."
    )
    _model_class = BertTokenClassifier
    serving_outputs = {"serving_default": ("status", "tagged", "tags", "words")}
    prediction_output = "tagged"

    @classmethod
    def _head_options(cls, config):
        if config.pooling != "first":
            raise ValueError(
                "TokenClassifier: `pooling` applies to sentence classification; a tag per word "
                f"reads each word's own output. Received: pooling={config.pooling!r}"
            )
        return {}

    def training_network(self):
        """The token classifier, its pooler frozen (per-token logits give it no gradient)."""
        self.backbone.backbone.pooled_dense.trainable = False
        return self.backbone

    def tag(self, sentences):
        """Tags each sentence (a string, split on whitespace, or a list of words).

        Returns:
            A list of lists of `(word, tag)` pairs (tag `""` for words past
            the sequence length).
        """
        texts = [_joined_words(s, i) if isinstance(s, list | tuple) else s
                 for i, s in enumerate(sentences)]  # fmt: skip
        texts, batch = self._inputs(texts)
        if not texts:
            return []
        outputs = self.serve(batch)
        result = []
        for words, tags in zip(outputs["words"].numpy(), outputs["tags"].numpy(), strict=True):
            result.append([(w.decode("utf-8"), t.decode("utf-8"))
                           for w, t in zip(words, tags, strict=True) if w])  # fmt: skip
        return result

    def predict(self, texts):
        """`word/TAG word/TAG ...` for each text (untagged words left out, as the export's `tagged`)."""
        return [" ".join(f"{w}/{t}" for w, t in row if t) for row in self.tag(texts)]

    def predict_with_status(self, texts):
        """`{"outputs": [tagged str], "status": [str]}` (`keras_attention.tasks.serving_status`)."""
        return serve_with_status(self, texts, "tagged")

    def __call__(self, texts):
        return self.tag(texts)

    def evaluate(self, data, batch_size=64, limit=None):
        """Word-level accuracy and macro F1 over the tags."""
        positive_int("TokenClassifier.evaluate", "batch_size", batch_size)
        sentences, tags = self._evaluation_data(data, limit)
        predicted, gold = [], []
        for start in range(0, len(sentences), batch_size):
            rows = self.tag(sentences[start : start + batch_size])
            for row, expected in zip(rows, tags[start : start + batch_size], strict=True):
                got = [t for _, t in row] + [""] * (len(expected) - len(row))
                predicted += got[: len(expected)]
                gold += expected
        # Words past the sequence length (or with no piece) get no tag (""): wrong, and counted.
        return {"sentences": len(sentences), "words": len(gold),
                "untagged_words": sum(1 for tag in predicted if tag == ""),
                **label_scores(predicted, gold, self.labels)}  # fmt: skip

    def summarize(self, result, split="validation"):
        untagged = result.get("untagged_words", 0)
        return [
            f"{split}: {result['sentences']} sentences, {result['words']} words, accuracy "
            f"{result['accuracy']:.2%}, macro F1 {result['macro_f1']:.2%}"
            + (
                f" ({untagged} words left untagged, counted as wrong: past the sequence "
                "length, where a longer `sequence_length` tags them, or with no piece left after "
                "normalisation)"
                if untagged
                else ""
            )
        ]

    @classmethod
    def read_data(cls, data, labels=None):
        """`(sentences, tags)` lists of word lists (`pipelines.classification.read_tagged_words`).

        With `labels` (the model's tags), any other tag is refused, its file and line (or
        indices) named.
        """
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], list):
            sentences, tags = [list(s) for s in data[0]], [list(t) for t in data[1]]
            if len(sentences) != len(tags) or any(
                len(words) != len(row) for words, row in zip(sentences, tags, strict=False)
            ):
                raise ValueError(
                    "TokenClassifier: `sentences` and `tags` must be aligned, a tag per word. "
                    f"Received: {len(sentences)} sentences, {len(tags)} tag rows"
                )
            known = None if labels is None else {str(tag) for tag in labels}
            # Checked as a file's lines are: no whitespace inside a word (the export splits its
            # text on whitespace), nothing empty.
            rows = [list(zip(words, row, strict=True)) for words, row in zip(sentences, tags, strict=True)]
            return classification.tagged_rows(rows, known, "data")
        return classification.read_tagged_words(data, labels)

    def make_dataset(self, data, batch_size=32, shuffle=False, seed=None):
        sentences, tags = data
        return classification.make_token_dataset(
            sentences, tags, self.preprocessor, self.labels, batch_size=batch_size,
            shuffle=shuffle, seed=0 if seed is None else seed,
        )  # fmt: skip

    def loss(self, config=None):
        # Every tag id is a real class (0 too): the sample weights mark the scored positions.
        return MaskedCrossEntropy(pad_id=-1)

    def metrics(self, config=None):
        return [MaskedTokenAccuracy(pad_id=-1)]

    def _serve(self, text):
        text, valid = sanitize(text)
        words = tf.strings.split(text)  # (B, None) on whitespace
        inputs = self.preprocessor.preprocess_words(words)
        status = framed_status(valid, inputs)
        logits = self.backbone(trimmed(inputs), training=False)  # (B, L', C)
        length = tf.shape(logits)[1]
        word_ids = inputs["word_ids"][:, :length]
        first = tf.logical_and(tf.equal(inputs["first_piece"][:, :length], 1), word_ids >= 0)
        predicted = tf.gather(self._labels, tf.argmax(logits, -1))  # (B, L')
        # The tag of each word: scattered from its first piece into (B, W).
        where = tf.where(first)
        at = tf.stack([where[:, 0], tf.cast(tf.gather_nd(word_ids, where), tf.int64)], 1)
        dense_words = tf.where(answered(status)[:, None], words.to_tensor(""), "")
        tags = tf.tensor_scatter_nd_update(
            tf.fill(tf.shape(dense_words), ""), at, tf.gather_nd(predicted, where)
        )
        tags = tf.where(tf.equal(dense_words, ""), "", tags)
        # Untagged words (past the sequence length, or with no piece) are left out.
        tagged = tf.strings.reduce_join(
            tf.ragged.boolean_mask(tf.strings.join([dense_words, "/", tags]), tf.not_equal(tags, "")),
            axis=1, separator=" ",
        )  # fmt: skip
        return {
            "words": dense_words,
            "tags": tags,
            "tagged": tf.strings.strip(tagged),
            "status": status,
        }


def label_scores(predicted, gold, labels):
    """`{"accuracy", "macro_f1", "per_label": {label: {"precision", "recall", "f1", "support"}}}`.

    Example:

    >>> scores = label_scores(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
    >>> round(scores["accuracy"], 3), scores["per_label"]["a"]["recall"]
    (0.667, 0.5)
    """
    predicted, gold = np.asarray(predicted, object), np.asarray(gold, object)
    per_label = {}
    for label in labels:
        hits = float(np.sum((predicted == label) & (gold == label)))
        precision = hits / max(float(np.sum(predicted == label)), 1.0)
        recall = hits / max(float(np.sum(gold == label)), 1.0)
        f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1,
                            "support": int(np.sum(gold == label))}  # fmt: skip
    # Over the labels (of `labels`) that occur in the gold data or in the predictions, as
    # scikit-learn's macro average does: a label only predicted, wrongly, counts with F1 0; one
    # neither in the data nor predicted is left out. (A word past the sequence length, tagged
    # "", is not a label: it lowers the accuracy and its gold label's recall.)
    present = [
        v["f1"] for label, v in per_label.items() if v["support"] or np.any(predicted == label)
    ]
    return {
        "accuracy": float(np.mean(predicted == gold)) if len(gold) else 0.0,
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "per_label": per_label,
    }


def _joined_words(words, index):
    """A sentence given as words, as the text `tag` splits on whitespace again."""
    for word in words:
        if not isinstance(word, str) or classification.split_words(word) != [word]:
            raise ValueError(
                f"TokenClassifier: a word must be a non-empty string without whitespace (text "
                f"is split into words on whitespace). Received: sentences[{index}] word {word!r}"
            )
    return " ".join(words)


def _pretrained_preprocessor(config):
    description = read_task_file(config.init_from)
    if description["task"] != "masked-lm":
        raise ValueError(
            f"`init_from` must hold a pre-trained masked LM; {config.init_from!r} holds a "
            f"{description['task']!r} task. Received: init_from={config.init_from!r}"
        )
    return MaskedLMPreprocessor.from_assets(
        os.path.join(config.init_from, ASSETS_DIR), sequence_length=config.sequence_length
    )


def _pretrained_encoder(config, preprocessor):
    """A copy of the encoder of the masked LM in `config.init_from`, with its weights."""
    from keras_attention.tasks.masked_lm import MaskedLM

    with warnings.catch_warnings():  # its optimizer state is not wanted (nor complete)
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        encoder = MaskedLM.load(config.init_from).backbone.backbone
    if preprocessor.sequence_length > encoder.max_sequence_length:
        raise ValueError(
            f"the pre-trained encoder of {config.init_from!r} reads at most "
            f"{encoder.max_sequence_length} tokens. Received: sequence_length="
            f"{preprocessor.sequence_length}"
        )
    serialized = keras.saving.serialize_keras_object(encoder)
    if config.encoder_dropout is not None:  # a training-time setting: the weights are the same
        serialized["config"]["dropout"] = config.encoder_dropout
    copy = keras.saving.deserialize_keras_object(serialized)
    copy.set_weights(encoder.get_weights())
    return copy
