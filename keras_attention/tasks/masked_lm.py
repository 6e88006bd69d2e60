"""The masked-LM task: BERT pre-training on plain text, and `fill_mask` on strings."""

import math
import os

import numpy as np
import tensorflow as tf

from keras_attention.models.bert import BertMaskedLM, bert_masked_lm
from keras_attention.tasks.bert_config import MaskedLMConfig, TextData
from keras_attention.tasks.losses import MaskedTokenAccuracy, masked_loss
from keras_attention.tasks.registry import register_task
from keras_attention.tasks.serving_status import decode_statuses, framed_status, sanitize
from keras_attention.tasks.task import Task
from keras_attention.utils import describe, positive_int
from pipelines import masked_lm as pipeline
from pipelines.text import build_wordpiece_vocab

_NAME = "MaskedLM"
VOCABULARY = "vocabulary.txt"
_INPUTS = ("token_ids", "padding_mask", "segment_ids")


def check_bert_preprocessor(owner, backbone, preprocessor):
    """Raises unless `preprocessor` is a `MaskedLMPreprocessor` that fits the BERT `backbone`."""
    if not isinstance(preprocessor, pipeline.MaskedLMPreprocessor):
        raise ValueError(
            f"{owner}: `preprocessor` must be a pipelines.masked_lm.MaskedLMPreprocessor. "
            f"Received: preprocessor={preprocessor!r}"
        )
    size = preprocessor.tokenizer.vocabulary_size
    if size != backbone.vocabulary_size:
        raise ValueError(
            f"{owner}: the vocabulary must have the model's {backbone.vocabulary_size} tokens. "
            f"Received: tokenizer.vocabulary_size={size}"
        )
    if preprocessor.sequence_length > backbone.max_sequence_length:
        raise ValueError(
            f"{owner}: the preprocessor's sequence_length may not exceed the model's "
            f"max_sequence_length ({backbone.max_sequence_length}). "
            f"Received: sequence_length={preprocessor.sequence_length}"
        )


def trimmed(inputs):
    """The model inputs of a preprocessed batch, cut to its longest real row (at least 2)."""
    length = tf.maximum(tf.reduce_max(tf.concat([tf.reduce_sum(inputs["padding_mask"], 1),
                                                 [0]], 0)), 2)  # fmt: skip
    return {name: inputs[name][:, :length] for name in _INPUTS}


@register_task
class MaskedLM(Task):
    """A BERT masked language model: pre-trains an encoder, and fills `[MASK]`s in text.

    `fill_mask` runs one `tf.function` traced for a `tf.string` `(batch_size,)`
    input, the one the SavedModel export serves: the text is tokenized with
    the literal `[MASK]` kept as the mask token (`MaskedLMPreprocessor.
    preprocess(parse_mask=True)`), framed `[CLS] ... [SEP]` and truncated to
    the preprocessor's `sequence_length`; the masked LM predicts every
    `[MASK]`; the `top_k` most likely tokens (reserved tokens never) and their
    probabilities come back, and the text with each `[MASK]` replaced by its
    most likely token. A `[MASK]` (written in any case) stands for a word:
    its candidates are whole words or a word's first piece, never a `##`
    continuation.

    Args:
        backbone: a `keras_attention.models.BertMaskedLM`.
        preprocessor: a `pipelines.masked_lm.MaskedLMPreprocessor` with the
            model's vocabulary.
        top_k: positive int, candidates per `[MASK]`. Defaults to `5`.
        masking: optional dict of the masking the model was trained with
            (`mode`, `mask_rate`, `whole_word`, as in `MaskedLMConfig`), which
            `evaluate` then draws its masks with. A task trained by `train`
            saves it in `task.json`. Defaults to `None`: `MaskedLMConfig`'s.

    Example:

    >>> from pipelines.masked_lm import MaskedLMPreprocessor
    >>> from pipelines.text import TextTokenizer
    >>> from keras_attention.models import bert_masked_lm
    >>> words = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]", "the",
    ...          "cat", "sat", "on", "mat"]
    >>> tokenizer = TextTokenizer(words, reserved_tokens=(*words[:7],))
    >>> task = MaskedLM(bert_masked_lm(len(words), num_layers=1, hidden_dim=8, num_heads=2,
    ...                                intermediate_dim=16), MaskedLMPreprocessor(tokenizer, 16),
    ...                 top_k=3)
    >>> result = task.fill_mask(["the [MASK] sat on the mat"])[0]  # untrained: any words
    >>> len(result["tokens"]), len(result["tokens"][0]), result["tokens"][0][0] in words[7:]
    (1, 3, True)
    """

    task_name = "masked-lm"
    train_summary = (
        "Pre-train a BERT encoder with masked language modelling on plain text (one paragraph "
        "per line; WikiText headings understood)."
    )
    preprocessor_class = pipeline.MaskedLMPreprocessor
    config_class = MaskedLMConfig
    data_class = TextData
    serving_outputs = {"serving_default": ("probabilities", "sequence", "status", "tokens")}
    prediction_output = "sequence"

    def __init__(self, backbone, preprocessor, top_k=5, masking=None):
        if not isinstance(backbone, BertMaskedLM):
            raise ValueError(
                f"{_NAME}: `backbone` must be a keras_attention.models.BertMaskedLM. "
                f"Received: backbone={describe(backbone)}"
            )
        check_bert_preprocessor(_NAME, backbone.backbone, preprocessor)
        super().__init__(backbone, preprocessor)
        self.top_k = positive_int(_NAME, "top_k", top_k)
        self.training_options = None  # the MaskedLMConfig of a task built for training
        self.masking = _masking(preprocessor, masking)
        tokenizer = preprocessor.tokenizer
        # Never predicted: reserved tokens, and `##` continuations (a [MASK] stands for a word:
        # a continuation would be glued to the word before it).
        reserved = np.zeros([tokenizer.vocabulary_size], "float32")
        reserved[: len(tokenizer.reserved_tokens)] = -np.inf
        reserved[[t.startswith("##") for t in tokenizer.vocabulary]] = -np.inf
        predictable = int(np.isfinite(reserved).sum())
        if self.top_k > predictable:
            raise ValueError(
                f"{_NAME}: `top_k` may not exceed the number of tokens a [MASK] can be filled "
                f"with ({predictable}: the vocabulary's {tokenizer.vocabulary_size} less reserved "
                f"tokens and ## continuations). Received: top_k={top_k}"
            )
        self._reserved = tf.constant(reserved)
        self._vocabulary = tf.constant(tokenizer.vocabulary)
        spec = tf.TensorSpec([None], tf.string, name="text")
        self.serve = tf.function(self._serve, input_signature=[spec])

    # -- public API -----------------------------------------------------------------------------

    def fill_mask(self, texts, top_k=None):
        """Predicts every `[MASK]` in each text.

        Args:
            texts: a list of strings (or a `tf.string` vector); `[MASK]`
                marks the words to predict (none is fine: nothing to predict).
            top_k: optional positive int at most the task's `top_k`, the
                candidates returned per mask. Defaults to the task's.

        Returns:
            A list with one dict per text: `"sequence"` (the text as the model
            reads it — normalized, lower-cased as the vocabulary is, truncated
            — with each `[MASK]` replaced by its most likely token),
            `"tokens"` (per `[MASK]`, in order, the `top_k` most likely
            tokens, word pieces as the vocabulary spells them) and
            `"probabilities"` (their probabilities, floats). A `[MASK]` cut
            off by truncation is not predicted.
        """
        top_k = self.top_k if top_k is None else positive_int(f"{_NAME}.fill_mask", "top_k", top_k)
        if top_k > self.top_k:
            raise ValueError(
                f"{_NAME}.fill_mask: `top_k` may not exceed the task's top_k ({self.top_k}, what "
                f"the traced function and the export compute). Received: top_k={top_k}"
            )
        texts = text_batch(texts)
        if not len(texts):
            return []
        outputs = {key: value.numpy() for key, value in self.serve(tf.constant(texts)).items()}
        results = []
        for row in range(len(texts)):
            masks = [i for i, tokens in enumerate(outputs["tokens"][row]) if tokens[0]]
            results.append({
                "sequence": outputs["sequence"][row].decode("utf-8"),
                "tokens": [[t.decode("utf-8") for t in outputs["tokens"][row, i, :top_k]]
                           for i in masks],
                "probabilities": [[float(p) for p in outputs["probabilities"][row, i, :top_k]]
                                  for i in masks],
            })  # fmt: skip
        return results

    def predict(self, texts):
        """The texts with their masks filled (`fill_mask`'s `"sequence"`), one string each."""
        return [result["sequence"] for result in self.fill_mask(texts)]

    def predict_with_status(self, texts):
        """`{"outputs": predict(texts), "status": [str]}` (`keras_attention.tasks.serving_status`)."""
        return serve_with_status(self, texts, "sequence")

    def __call__(self, texts):
        return self.fill_mask(texts)

    @staticmethod
    def serving_input(inputs):
        """What the exported signature takes: a `tf.string` batch of texts."""
        return tf.constant(list(inputs), tf.string, shape=[len(inputs)])

    def get_config(self):
        return {"top_k": self.top_k, "masking": self._masking_options()}

    def _masking_options(self):
        """`{"mode", "mask_rate", "whole_word"}`: the training run's, else the task's."""
        if self.training_options is not None:
            return {name: getattr(self.training_options, name) for name in _MASKING}
        return dict(self.masking)

    def serving_signatures(self):
        """`{"serving_default": (serve, {"text": tf.string (batch_size,)})}`.

        Outputs: `"sequence"` `(B,)` (the filled text), `"tokens"` `(B, M,
        top_k)` strings and `"probabilities"` `(B, M, top_k)` float32, `M` the
        most `[MASK]`s of a row (rows with fewer are padded with `""` and `0`),
        and `"status"` `(B,)` strings (`keras_attention.tasks.serving_status`):
        an `empty_input` or `invalid_utf8` text (never tokenized) gives the
        sequence `""` and no mask predictions; `truncated`: tokens were cut.
        """
        return {"serving_default": (self.serve, {"text": tf.TensorSpec([None], tf.string)})}

    def evaluate(self, data, batch_size=32, limit=None, seed=0):
        """Masked-token accuracy and perplexity on held-out text (masks drawn with `seed`).

        Args:
            data: a text file (or what `read_data` reads).
            batch_size: sequences per batch. Defaults to `32`.
            limit: optional positive int, score the first `limit` sequences.
            seed: the masking seed (the same seed, the same masks). Defaults to `0`.

        Returns:
            A dict: `"sequences"`, `"predictions"` (masked tokens scored),
            `"accuracy"` (the fraction predicted exactly), `"loss"` (mean
            cross-entropy per masked token, nats) and `"perplexity"` (its
            exponential).
        """
        documents = self.read_data(data)
        dataset = pipeline.make_dataset(
            documents, self.preprocessor, self.preprocessor.sequence_length,
            batch_size=positive_int(f"{_NAME}.evaluate", "batch_size", batch_size),
            seed=seed, shuffle=False, redraw=False, **self._masking_options(),
        )  # fmt: skip
        if limit is not None:
            limit = positive_int(f"{_NAME}.evaluate", "limit", limit)
            dataset = dataset.unbatch().take(limit).batch(batch_size)
        sequences = total = correct = 0
        loss = 0.0
        for inputs, labels, weights in dataset:
            log_probs = tf.nn.log_softmax(tf.cast(self.backbone(inputs, training=False), tf.float32))
            weights = tf.cast(weights, tf.float32).numpy()
            labels = labels.numpy()
            picked = np.take_along_axis(log_probs.numpy(), labels[..., None], -1)[..., 0]
            loss -= float(np.sum(picked * weights))
            correct += float(np.sum((np.argmax(log_probs, -1) == labels) * weights))
            total += float(np.sum(weights))
            sequences += int(labels.shape[0])
        mean = loss / max(total, 1.0)
        return {
            "sequences": sequences,
            "predictions": int(total),
            "accuracy": correct / max(total, 1.0),
            "loss": mean,
            "perplexity": math.exp(min(mean, 700.0)),
        }

    def summarize(self, result, split="validation"):
        return [
            f"{split}: {result['sequences']} sequences, {result['predictions']} masked tokens: "
            f"accuracy {result['accuracy']:.2%}, perplexity {result['perplexity']:.2f}"
        ]

    # -- the training hooks ---------------------------------------------------------------------

    @classmethod
    def read_data(cls, data):
        """A corpus: `pipelines.masked_lm.read_corpus` (documents, each a list of paragraphs)."""
        if isinstance(data, list) and data and all(isinstance(d, list) for d in data):
            return data  # already read
        return pipeline.read_corpus(data)

    @classmethod
    def build_preprocessor(cls, config, data, assets_dir):
        """Learns the WordPiece vocabulary (with `[CLS]`, `[SEP]`) into `assets_dir`."""
        path = os.path.join(assets_dir, VOCABULARY)
        build_wordpiece_vocab(
            (paragraph for document in data for paragraph in document), path,
            config.vocabulary_size, lowercase=config.lowercase,
            extra_reserved_tokens=pipeline.BERT_RESERVED_TOKENS,
        )  # fmt: skip
        return pipeline.MaskedLMPreprocessor(path, config.sequence_length)

    @classmethod
    def load_preprocessor(cls, config, assets_dir):
        return pipeline.MaskedLMPreprocessor.from_assets(
            assets_dir, sequence_length=config.sequence_length
        )

    @classmethod
    def build(cls, config, preprocessor):
        """A new (untrained) masked LM for a `MaskedLMConfig`."""
        task = cls(
            bert_masked_lm(preprocessor.tokenizer.vocabulary_size, **config.encoder_options()),
            preprocessor,
            top_k=config.top_k,
        )
        task.training_options = config
        return task

    def training_network(self):
        """The masked LM, its pooler frozen (the masked-LM loss gives it no gradient)."""
        self.backbone.backbone.pooled_dense.trainable = False
        return self.backbone

    def make_dataset(self, data, batch_size=32, shuffle=False, seed=None):
        """Masked-LM batches of a corpus (`pipelines.masked_lm.make_dataset`).

        Shuffled (training), the masks are re-drawn every epoch; not shuffled (validation),
        every epoch scores the same masks, so `val_loss` compares epochs, not mask draws.
        """
        return pipeline.make_dataset(
            data, self.preprocessor, self.preprocessor.sequence_length, batch_size=batch_size,
            seed=0 if seed is None else seed, shuffle=shuffle, redraw=shuffle,
            **self._masking_options(),
        )  # fmt: skip

    def loss(self, config=None):
        """The cross-entropy over the masked tokens."""
        return masked_loss(0.0)

    def metrics(self, config=None):
        """The masked-token accuracy."""
        return [MaskedTokenAccuracy()]

    # -- the traced path ------------------------------------------------------------------------

    def _serve(self, text):
        text, valid_text = sanitize(text)
        inputs = self.preprocessor.preprocess(text, parse_mask=True)
        status = framed_status(valid_text, inputs)
        token_ids = inputs["token_ids"]
        is_mask = tf.equal(token_ids, self.preprocessor.mask_id)
        positions = tf.ragged.boolean_mask(
            tf.broadcast_to(tf.range(tf.shape(token_ids)[1]), tf.shape(token_ids)), is_mask
        )
        valid = tf.sequence_mask(positions.row_lengths())  # (B, M)
        positions = positions.to_tensor()  # (B, M), 0 where there is no mask
        model_inputs = {**trimmed(inputs), "mask_positions": positions}
        logits = tf.cast(self.backbone(model_inputs, training=False), tf.float32) + self._reserved
        probabilities, ids = tf.math.top_k(tf.nn.softmax(logits), k=self.top_k)  # (B, M, K)
        tokens = tf.where(valid[..., None], tf.gather(self._vocabulary, ids), "")
        probabilities = tf.where(valid[..., None], probabilities, 0.0)
        where = tf.where(valid)  # (N, 2): row, mask number
        at = tf.stack([where[:, 0], tf.cast(tf.gather_nd(positions, where), tf.int64)], 1)
        best = tf.scatter_nd(at, tf.gather_nd(ids[..., 0], where), tf.shape(token_ids, tf.int64))
        filled = tf.where(is_mask, best, token_ids)
        return {
            "sequence": content_text(self.preprocessor, filled),
            "tokens": tokens,
            "probabilities": probabilities,
            "status": status,
        }


def content_text(preprocessor, token_ids):
    """Framed ids `(B, L)` -> the text between `[CLS]` and `[SEP]`s (`tf.string` `(B,)`)."""
    frame = tf.logical_or(tf.equal(token_ids, preprocessor.cls_id),
                          tf.equal(token_ids, preprocessor.sep_id))  # fmt: skip
    return preprocessor.tokenizer.detokenize(tf.where(frame, preprocessor.pad_id, token_ids))


def serve_with_status(task, texts, output):
    """`{"outputs", "status"}` lists from `task.serve` (the `serving_default` function)."""
    texts = text_batch(texts, type(task).__name__)
    if not texts:
        return {"outputs": [], "status": []}
    outputs = task.serve(tf.constant(texts, tf.string, shape=[len(texts)]))
    return {
        "outputs": [value.decode("utf-8") for value in outputs[output].numpy()],
        "status": decode_statuses(outputs["status"]),
    }


def text_batch(texts, owner=_NAME):
    """`texts` (a list of strings or bytes, or a `tf.string` vector) as a list of `str`.

    Bytes that are not UTF-8 stay `bytes`: the traced functions answer them with status
    `invalid_utf8` (`keras_attention.tasks.serving_status`) instead of failing here.
    """
    if isinstance(texts, str | bytes):
        raise ValueError(
            f"{owner}: `texts` must be a batch (wrap one text in a list). Received: texts={texts!r:.80}"
        )
    if tf.is_tensor(texts):
        texts = texts.numpy()
    if texts is None or not hasattr(texts, "__iter__"):
        raise ValueError(
            f"{owner}: `texts` must be a list of strings. Received: texts={texts!r:.80}"
        )
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str | bytes):
            raise ValueError(
                f"{owner}: `texts` must hold strings. Received: texts[{i}]={text!r:.80}"
            )
    return [_as_text(t) for t in texts]


def _as_text(text):
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            return text
    return text


_MASKING = ("mode", "mask_rate", "whole_word")


def _masking(preprocessor, masking):
    """The masking options of `MaskedLM(masking=...)`, checked by `MaskedLMConfig`."""
    if masking is None:
        masking = {}
    if not isinstance(masking, dict) or set(masking) - set(_MASKING):
        raise ValueError(
            f"{_NAME}: `masking` must be a dict with keys among {list(_MASKING)}. "
            f"Received: masking={masking!r}"
        )
    config = MaskedLMConfig(sequence_length=preprocessor.sequence_length, **masking)
    return {name: getattr(config, name) for name in _MASKING}
