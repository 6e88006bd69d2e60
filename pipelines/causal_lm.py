"""tf.data pipeline for a GPT-style causal language model (next-token prediction).

`make_dataset` reads a corpus with `pipelines.masked_lm.read_corpus` (one
paragraph per line, WikiText headings, `.gz`), tokenizes it once, frames every
document as `[START] tokens [END]` (its paragraphs run together), lays all
documents end to end as one stream and cuts the stream into windows of
`sequence_length + 1` tokens that step by `sequence_length`: each window gives
the inputs (its first `sequence_length` tokens) and the labels (its last
`sequence_length`, the inputs shifted by one), so every token of the stream
but the first is predicted exactly once and only the last window is padded.

`CausalLMPreprocessor` does the framing of single texts with TensorFlow ops
(so it runs in `tf.data`, a `tf.function` and a SavedModel): prompts for
generation (`[START]` + the last tokens, left-aligned), texts for scoring
(`[START] tokens [END]`), and detokenization of generated ids. The reserved
ids are those of `pipelines.text`: `[PAD]` = 0, `[START]` = 2, `[END]` = 3.
"""

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_attention.utils import boolean, positive_int
from pipelines.masked_lm import (
    MIN_SEQUENCE_LENGTH,
    MaskedLMPreprocessor,
    _check_rank,
    _quiet,
    read_corpus,
    tokenize_documents,
)
from pipelines.text import END_ID, PAD_ID, START_ID
from pipelines.translation import _as_tokenizer


class CausalLMPreprocessor(tf.Module):
    """Frames text for a causal language model: prompts, scored texts, generated ids.

    `preprocess_prompts` turns prompts into the left-aligned `[START] tokens`
    a generator continues (keeping the last tokens of a long prompt);
    `preprocess_texts` frames whole texts as `[START] tokens [END]` for
    scoring (perplexity); `detokenize` turns generated ids back into text.
    All three are TensorFlow ops (tensorflow-text), so they run eagerly, in
    `tf.data`, in a `tf.function` traced with `tf.string` inputs and in a
    SavedModel.

    Args:
        tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `build_wordpiece_vocab`.
        sequence_length: int `>= 8`, the longest input the model accepts
            (training windows hold `sequence_length + 1` tokens: the inputs
            and, shifted by one, the labels). Defaults to `128`.
        name: optional module name.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "the", "cat", "sat", "."]
    >>> preprocessor = CausalLMPreprocessor(TextTokenizer(vocab), sequence_length=8)
    >>> x = preprocessor.preprocess_prompts(["the cat sat .", "the"], max_prompt_length=4)
    >>> x["token_ids"].numpy().tolist(), x["truncated"].numpy().tolist()
    ([[2, 6, 7, 8], [2, 5, 0, 0]], [True, False])
    >>> x["padding_mask"].numpy().tolist()[1]
    [True, True, False, False]
    >>> preprocessor.detokenize([[2, 5, 6, 7, 8, 3, 6, 0]]).numpy().tolist()
    [b'the cat sat.']
    """

    def __init__(self, tokenizer, sequence_length=128, name=None):
        super().__init__(name=name)
        owner = type(self).__name__
        self.tokenizer = _as_tokenizer(tokenizer, "tokenizer")
        self.sequence_length = positive_int(
            owner, "sequence_length", sequence_length, minimum=MIN_SEQUENCE_LENGTH
        )
        self.start_id = START_ID
        self.end_id = END_ID
        self.pad_id = PAD_ID
        self.vocabulary_size = self.tokenizer.vocabulary_size

    # -- framing --------------------------------------------------------------------------------

    def preprocess_prompts(self, texts, max_prompt_length=None):
        """Prompts -> left-aligned `[START] tokens`, the last tokens kept when too long.

        A prompt of more than `max_prompt_length - 1` tokens keeps its last
        `max_prompt_length - 1` (cut from the left: the text nearest to what
        comes next is kept), after the `[START]` token, which is always first.

        Args:
            texts: `tf.string` `(batch_size,)` (or a scalar, or a list).
            max_prompt_length: int `>= 1` (Python), the longest prompt,
                `[START]` included. Defaults to `None`: `sequence_length`.

        Returns:
            A dict: `token_ids`, `int32` `(batch_size, P)`, each prompt
            left-aligned and padded on the right with `[PAD]` (0), `P` the
            longest prompt of the batch (at least 1); `padding_mask`, `bool`
            `(batch_size, P)`, `True` at real tokens; `truncated`, `bool`
            `(batch_size,)`, whether tokens were cut. An empty string gives
            `[START]`; an empty batch gives `(0, 1)` tensors; a scalar input
            gives unbatched outputs.
        """
        if max_prompt_length is None:
            max_prompt_length = self.sequence_length
        max_prompt_length = positive_int(
            type(self).__name__, "max_prompt_length", max_prompt_length
        )
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            outputs = self.preprocess_prompts(texts[tf.newaxis], max_prompt_length)
            return {key: value[0] for key, value in outputs.items()}
        _check_rank(texts, "texts")
        token_ids = self.tokenizer.tokenize(texts)  # (batch, None)
        budget = max_prompt_length - 1
        truncated = token_ids.row_lengths() > budget
        token_ids = token_ids[:, -budget:] if budget else token_ids[:, :0]
        outputs = self._to_dense(self._frame(token_ids, end=False), width=None)
        outputs["truncated"] = truncated
        return outputs

    def preprocess_texts(self, texts):
        """Texts -> `[START] tokens [END]`, `(batch_size, sequence_length + 1)`, for scoring.

        The model reads `token_ids[:, :-1]` and is scored on predicting
        `token_ids[:, 1:]` where `padding_mask[:, 1:]` is `True`. A text
        longer than `sequence_length - 1` tokens is cut from the right (the
        `[END]` goes first).

        Args:
            texts: `tf.string` `(batch_size,)` (or a scalar, or a list).

        Returns:
            A dict: `token_ids`, `int32` `(batch_size, sequence_length + 1)`,
            left-aligned, padded with `[PAD]` (0); `padding_mask`, `bool`,
            `True` at real tokens. A scalar input gives unbatched outputs.

        Example:

        >>> from pipelines.text import TextTokenizer
        >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "the", "cat", "sat"]
        >>> preprocessor = CausalLMPreprocessor(TextTokenizer(vocab), sequence_length=8)
        >>> preprocessor.preprocess_texts(["the cat sat"])["token_ids"].numpy().tolist()
        [[2, 5, 6, 7, 3, 0, 0, 0, 0]]
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        if texts.shape.rank == 0:
            outputs = self.preprocess_texts(texts[tf.newaxis])
            return {key: value[0] for key, value in outputs.items()}
        _check_rank(texts, "texts")
        width = self.sequence_length + 1
        framed = self._frame(self.tokenizer.tokenize(texts), end=True)
        return self._to_dense(framed[:, :width], width=width)

    def detokenize(self, token_ids):
        """Token ids `(batch_size, L)` -> `tf.string` `(batch_size,)`.

        `[PAD]` and `[START]` are skipped and each row ends before its first
        `[END]` (`TextTokenizer.detokenize`). A `(L,)` input gives a scalar; a
        `tf.RaggedTensor` is accepted too.
        """
        return self.tokenizer.detokenize(token_ids)

    # -- files ----------------------------------------------------------------------------------

    save_assets = MaskedLMPreprocessor.save_assets
    from_assets = classmethod(MaskedLMPreprocessor.from_assets.__func__)

    def get_config(self):
        """`{"sequence_length": ...}` (the tokenizer is an asset)."""
        return {"sequence_length": self.sequence_length}

    # -- helpers --------------------------------------------------------------------------------

    def _frame(self, token_ids, end):
        """Ragged ids `(batch, None)` -> `[START] ids` (`end=False`) or `[START] ids [END]`."""
        shape = [token_ids.nrows(out_type=tf.int32), 1]
        pieces = [tf.fill(shape, tf.constant(self.start_id, tf.int32)), token_ids]
        if end:
            pieces.append(tf.fill(shape, tf.constant(self.end_id, tf.int32)))
        return tf.concat(pieces, axis=1)

    def _to_dense(self, token_ids, width):
        """Ragged ids -> left-aligned `token_ids` and `bool` `padding_mask`, `width` wide.

        `width=None`: the longest row (at least 1).
        """
        lengths = tf.cast(token_ids.row_lengths(), tf.int32)
        if width is None:
            width = tf.maximum(tf.reduce_max(lengths), 1)  # reduce_max of nothing is int32 min
        shape = tf.stack([token_ids.nrows(out_type=tf.int32), width])
        return {
            "token_ids": token_ids.to_tensor(self.pad_id, shape=shape),
            "padding_mask": tf.sequence_mask(lengths, width),
        }


def make_dataset(
    files_or_texts,
    tokenizer_or_preprocessor,
    sequence_length=None,
    batch_size=32,
    shuffle=False,
    seed=0,
    drop_remainder=False,
    progress=None,
):
    """Packed next-token-prediction batches from a corpus.

    The corpus (`read_corpus`) is tokenized once, up front (a tqdm bar over
    its paragraphs on a terminal); each document becomes
    `[START] tokens [END]` and all documents are laid end to end as one
    stream of `N` tokens. Window `i` is the stream from `i * sequence_length`
    to `(i + 1) * sequence_length` included (`sequence_length + 1` tokens;
    consecutive windows share one token): the inputs are its first
    `sequence_length` tokens, the labels its last `sequence_length`, so
    `labels[:, t] = token_ids[:, t + 1]` across window boundaries too, and
    every token but the first is a label exactly once. Only the last window
    is padded (`packing_efficiency`). Windows cross document boundaries; the
    `[END] [START]` between documents tells the model a new text begins.

    The stream stays in memory as one tensor; each epoch takes the windows in
    order (or shuffled with `seed`, in another order every epoch: iterating
    the dataset twice gives two orders, while a dataset built again with the
    same `seed` repeats them), batches them and prefetches.

    Args:
        files_or_texts: what `read_corpus` reads: a path, a list of paths
            (plain text or gzip), a list of strings (paragraphs of one
            document) or a list of documents (lists of paragraphs).
        tokenizer_or_preprocessor: a `TextTokenizer`, a vocabulary path, or a
            `CausalLMPreprocessor`.
        sequence_length: int `>= 8`, the width of the inputs. Defaults to
            `None`: the preprocessor's, else `128`.
        batch_size: positive int. Defaults to `32`.
        shuffle: bool, shuffle the windows every epoch. Defaults to `False`.
        seed: int `>= 0`, the shuffle seed. Defaults to `0`.
        drop_remainder: bool, drop the last, smaller batch. Defaults to
            `False`.
        progress: bool, tqdm bars. Defaults to `None`: only on a terminal.

    Returns:
        A `tf.data.Dataset` of `(inputs, labels, sample_weight)`: `inputs` a
        dict of `int32` `token_ids` and `padding_mask` (1 real, 0 padding)
        `(batch_size, sequence_length)`; `labels` `int32`
        `(batch_size, sequence_length)`, the next tokens; `sample_weight`
        `float32`, 1 where the label is a real token, 0 on padding.

    Raises:
        ValueError: `sequence_length < 8`, or the corpus holds no text (the
            message names `files_or_texts`, e.g. the empty file).

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "a", "b"]
    >>> documents = [["a b a b a"], ["b a"]]  # [START] a b a b a [END] [START] b a [END]
    >>> dataset = make_dataset(documents, TextTokenizer(vocab), 8, batch_size=2)
    >>> inputs, labels, sample_weight = next(iter(dataset))
    >>> inputs["token_ids"].numpy().tolist()
    [[2, 5, 6, 5, 6, 5, 3, 2], [6, 5, 3, 0, 0, 0, 0, 0]]
    >>> labels.numpy().tolist()
    [[5, 6, 5, 6, 5, 3, 2, 6], [5, 3, 0, 0, 0, 0, 0, 0]]
    >>> inputs["padding_mask"].numpy().tolist()[1], sample_weight.numpy().tolist()[1]
    ([1, 1, 1, 0, 0, 0, 0, 0], [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    """
    name = "make_dataset"
    preprocessor = _preprocessor(tokenizer_or_preprocessor, sequence_length, name)
    length = preprocessor.sequence_length
    batch_size = positive_int(name, "batch_size", batch_size)
    shuffle = boolean(name, "shuffle", shuffle)
    seed = positive_int(name, "seed", seed, minimum=0)
    drop_remainder = boolean(name, "drop_remainder", drop_remainder)
    stream = _token_stream(files_or_texts, preprocessor, progress)
    count = _num_windows(len(stream), length)
    if drop_remainder and count < batch_size:
        raise ValueError(
            f"{name}: the corpus gives {count} window(s) of {length} tokens, fewer than one "
            f"batch, and `drop_remainder=True` would leave no batch at all. Received: "
            f"batch_size={batch_size}, drop_remainder=True"
        )
    # Padded so that every window is whole: (count * length + 1,).
    padded = np.full([count * length + 1], preprocessor.pad_id, np.int32)
    padded[: len(stream)] = stream
    padded = tf.constant(padded)
    offsets = tf.range(length + 1, dtype=tf.int64)  # (length + 1,)

    def window(indices):  # (batch,) window numbers -> the batch
        ids = tf.gather(padded, indices[:, tf.newaxis] * length + offsets)  # (batch, length + 1)
        real = tf.not_equal(ids, preprocessor.pad_id)
        inputs = {"token_ids": ids[:, :-1], "padding_mask": tf.cast(real[:, :-1], tf.int32)}
        return inputs, ids[:, 1:], tf.cast(real[:, 1:], tf.float32)

    dataset = tf.data.Dataset.range(count)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(window, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def packing_efficiency(files_or_texts, tokenizer, sequence_length=None, progress=None):
    """The fraction of the label positions of `make_dataset` that hold a real token.

    `(N - 1) / (num_windows * sequence_length)` for a stream of `N` tokens:
    all positions are real but those of the last window past the stream's
    end, so this is `1` up to less than one window of the whole corpus.

    Args:
        files_or_texts, tokenizer, sequence_length, progress: as in
            `make_dataset` (`tokenizer` may be a `CausalLMPreprocessor`).

    Returns:
        A `float` in `(0, 1]`.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "a", "b"]
    >>> packing_efficiency([["a b a b a"], ["b a"]], TextTokenizer(vocab), 8)  # 10 labels in 16
    0.625
    """
    preprocessor = _preprocessor(tokenizer, sequence_length, "packing_efficiency")
    stream = _token_stream(files_or_texts, preprocessor, progress)
    length = preprocessor.sequence_length
    return (len(stream) - 1) / (_num_windows(len(stream), length) * length)


def count_words(files_or_texts, progress=None):
    """The number of words of a corpus, for word-level perplexity.

    Word-level perplexity is `exp(total negative log-likelihood / words)`,
    whatever the tokenizer, so that models with other vocabularies compare.
    The words counted here are the whitespace-separated words of each
    paragraph as `read_corpus` gives it (WikiText headings dropped, `@-@`
    joined back, `<unk>` dropped), plus one per document for its `[END]`
    (the end a word-level model predicts as a word, and the only one the
    token stream holds: paragraphs of a document follow each other with no
    separator, so counting one per paragraph, as before stop 40, divided by
    ends the model never predicted: 1% more words on WikiText-2, a word
    perplexity about 8% too low on its test set).

    Args:
        files_or_texts: what `read_corpus` reads.
        progress: bool, tqdm bars. Defaults to `None`: only on a terminal.

    Returns:
        An `int`.

    Example:

    >>> count_words([" = Cats = ", " A cat @-@ like cat . ", "", " It purrs <unk> . "])
    8
    """
    documents = read_corpus(files_or_texts, progress)
    paragraphs = [paragraph for document in documents for paragraph in document]
    return len(documents) + sum(
        len(paragraph.split())
        for paragraph in tqdm(paragraphs, desc="counting words", unit=" paragraphs",
                              disable=_quiet(progress))
    )


# -- private helpers ------------------------------------------------------------------------------


def _token_stream(files_or_texts, preprocessor, progress):
    """Every document as `[START] tokens [END]`, end to end: one `int32` NumPy array."""
    documents = read_corpus(files_or_texts, progress)
    start = np.array([preprocessor.start_id], np.int32)
    end = np.array([preprocessor.end_id], np.int32)
    pieces = [
        piece
        for ids in tokenize_documents(documents, preprocessor.tokenizer, progress)
        for piece in (start, ids, end)
    ]
    return np.concatenate(pieces).astype(np.int32)


def _num_windows(num_tokens, sequence_length):
    """Windows of `sequence_length` labels that cover the `num_tokens - 1` labels of a stream."""
    return -(-(num_tokens - 1) // sequence_length)


def _preprocessor(tokenizer, sequence_length, owner):
    """`tokenizer` as a `CausalLMPreprocessor` of `sequence_length` (`None`: its own, else 128)."""
    if not isinstance(tokenizer, CausalLMPreprocessor):
        sequence_length = 128 if sequence_length is None else sequence_length
        positive_int(owner, "sequence_length", sequence_length, minimum=MIN_SEQUENCE_LENGTH)
        return CausalLMPreprocessor(tokenizer, sequence_length)
    if sequence_length not in (None, tokenizer.sequence_length):
        raise ValueError(
            f"{owner}: `sequence_length` must be the preprocessor's, "
            f"{tokenizer.sequence_length}, or None. Received: sequence_length={sequence_length!r}"
        )
    return tokenizer
