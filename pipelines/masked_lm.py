"""tf.data pipeline for BERT masked-language-model pre-training.

`read_corpus` reads plain-text or WikiText corpora into documents of
paragraphs. `MaskedLMPreprocessor` frames text as BERT inputs
(`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, fixed width), parses a literal
`[MASK]` for fill-in-the-blank queries, tokenizes pre-split words for token
classification and draws masked-LM corruption, with TensorFlow ops only (so
it runs in `tf.data`, a `tf.function` and a SavedModel). `make_dataset`
tokenizes a corpus once, packs it into full sequences, and re-draws the masks
every epoch, deterministically for a seed.

BERT vocabularies carry two more reserved tokens, `[CLS]` and `[SEP]`, after
the five of `pipelines.text` (so `[CLS]` = 5 and `[SEP]` = 6): build them with
`build_wordpiece_vocab(..., extra_reserved_tokens=BERT_RESERVED_TOKENS)`.
"""

import math
import numbers
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from tqdm.auto import tqdm

from keras_attention.utils import boolean, number, one_of, optional_positive_int, positive_int
from pipelines.text import MASK, PAD_ID, UNK_ID, load_tokenizer, read_lines
from pipelines.translation import _as_tokenizer

CLS, SEP = "[CLS]", "[SEP]"
BERT_RESERVED_TOKENS = (CLS, SEP)
MODES = ("packed", "pairs")
VOCABULARY = "vocabulary.txt"
MIN_SEQUENCE_LENGTH = 8

_TOKENIZE_BATCH = 4096
# WikiText: ` = Title = ` starts an article, ` = = Section = = ` (and deeper) is dropped.
_HEADING = re.compile(r"=( =)* .*? =( =)*")
_TOP_HEADING = re.compile(r"= (?!= ).*(?<! =) =")
# WikiText's escaped in-word punctuation: `1 @,@ 000`, `role @-@ playing`, `3 @.@ 5`.
_WIKITEXT_JOINER = re.compile(r" ?@([-,.])@ ?")
_WIKITEXT_UNK = re.compile(r"(?:^|\s)<unk>(?=\s|$)")
_SPACES = re.compile(r"\s+")


def read_corpus(files_or_texts, progress=None):
    """Reads a pre-training corpus into documents, each a list of paragraphs.

    Input is one file path, a list of paths (plain text or gzip, read with
    `pipelines.text.read_lines`), or a list of strings. Every line of a file
    (every string of a list) is one paragraph; blank ones are skipped and
    runs of whitespace collapse to one space.

    WikiText files are understood: a top-level heading ` = Title = ` starts
    a new document (the heading itself is not text), section headings
    ` = = Section = = ` are dropped, the escaped in-word punctuation `@-@`,
    `@,@`, `@.@` becomes `-`, `,`, `.` again, and the `<unk>` token that
    WikiText writes for its rare words is dropped: the word is not there,
    and the tokenizer would spell it `<`, `unk`, `>` (text is never turned
    into the reserved `[UNK]`). A plain file without headings is one
    document; so is a list of strings.

    A list is taken as paths when it holds `os.PathLike` objects or strings
    naming existing files, as documents when it holds lists of paragraphs
    (what `read_corpus` returns), else as texts.

    Args:
        files_or_texts: a path, a list of paths, a list of strings or a list
            of documents (lists of strings).
        progress: bool, tqdm bars while reading. Defaults to `None`: only on
            a terminal.

    Returns:
        A list of documents, each a non-empty list of `str` paragraphs.

    Raises:
        FileNotFoundError: a file does not exist (the message names it).
        ValueError: a line is not valid UTF-8 (the file and the 1-based line
            are named), a list item is not a string, one file of several
            holds no text (it is named), or there is no text at all.

    Example:

    >>> read_corpus([" = Cats = ", " = = Life = = ", " A 3 @.@ 5 kg cat @-@ like <unk> . ",
    ...              "", " = Dogs = ", " Dogs bark . "])
    [['A 3.5 kg cat-like .'], ['Dogs bark .']]
    """
    documents = []
    sources = _corpus_sources(files_or_texts, progress)
    for name, lines in sources:
        found = _documents(lines)
        if not found and name is not None and len(sources) > 1:
            raise ValueError(
                f"{name!r} holds no text (every line is blank or a heading); remove it from "
                "`files_or_texts` if that is intended"
            )
        documents.extend(found)
    if not documents:
        raise ValueError(
            f"`files_or_texts` holds no text. Received: files_or_texts={_short(files_or_texts)}"
        )
    return documents


class MaskedLMPreprocessor(tf.Module):
    """Turns text into fixed-width BERT inputs, and draws masked-LM corruption.

    `preprocess` frames one text as `[CLS] a [SEP]` or a pair as
    `[CLS] a [SEP] b [SEP]` (segment ids `0` up to the first `[SEP]`, `1`
    after), truncated to `sequence_length` tokens (a pair loses tokens from
    the longer text first: tensorflow-text's `RoundRobinTrimmer`, like
    keras_hub's `MultiSegmentPacker`) and padded with `[PAD]`. Every output
    is `int32` `(batch_size, sequence_length)`. `preprocess_words` does the
    same for pre-split words and says which word each piece comes from (token
    classification). `mask` draws BERT's corruption with stateless random ops.

    All methods are TensorFlow ops (tensorflow-text), so they run in
    `tf.data`, in a `tf.function` traced with `tf.string` inputs and in a
    SavedModel.

    Args:
        tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `build_wordpiece_vocab`; the vocabulary must
            hold `[CLS]` and `[SEP]` (see the module docstring).
        sequence_length: int `>= 8`, the width of every output. Defaults to
            `128`.
        name: optional module name.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]",
    ...          "the", "cat", "sat", "on", "mat", "##s"]
    >>> preprocessor = MaskedLMPreprocessor(TextTokenizer(vocab), sequence_length=8)
    >>> x = preprocessor.preprocess(["the [MASK] sat", "cats"], parse_mask=True)
    >>> x["token_ids"].numpy().tolist()
    [[5, 7, 4, 9, 6, 0, 0, 0], [5, 8, 12, 6, 0, 0, 0, 0]]
    >>> x["padding_mask"].numpy().tolist()[1]
    [1, 1, 1, 1, 0, 0, 0, 0]
    >>> x = preprocessor.preprocess(["the cat sat on the mat"], ["the cat"])
    >>> x["token_ids"].numpy().tolist(), x["segment_ids"].numpy().tolist()
    ([[5, 7, 8, 9, 6, 7, 8, 6]], [[0, 0, 0, 0, 0, 1, 1, 1]])
    >>> x["truncated"].numpy().tolist()
    [True]
    >>> preprocessor.decode_ids([5, 8, 12]).numpy().tolist()
    [b'[CLS]', b'cat', b'##s']
    """

    def __init__(self, tokenizer, sequence_length=128, name=None):
        super().__init__(name=name)
        owner = type(self).__name__
        self.tokenizer = _as_tokenizer(tokenizer, "tokenizer")
        self.sequence_length = positive_int(
            owner, "sequence_length", sequence_length, minimum=MIN_SEQUENCE_LENGTH
        )
        vocabulary = self.tokenizer.vocabulary
        missing = [token for token in BERT_RESERVED_TOKENS if token not in vocabulary]
        if missing:
            raise ValueError(
                f"{owner}: the vocabulary must hold {list(BERT_RESERVED_TOKENS)}; build it with "
                "`build_wordpiece_vocab(..., extra_reserved_tokens=BERT_RESERVED_TOKENS)`. "
                f"Received: a vocabulary without {missing}"
            )
        self.cls_id = self.tokenizer.token_to_id(CLS)
        self.sep_id = self.tokenizer.token_to_id(SEP)
        self.mask_id = self.tokenizer.token_to_id(MASK)
        self.pad_id = PAD_ID
        self.vocabulary_size = self.tokenizer.vocabulary_size
        # Random replacement tokens are drawn from [num_reserved, vocabulary_size).
        self.num_reserved = max(len(self.tokenizer.reserved_tokens), self.cls_id + 1, self.sep_id + 1)
        if self.vocabulary_size <= self.num_reserved:
            raise ValueError(
                f"{owner}: the vocabulary holds only reserved tokens. "
                f"Received: vocabulary_size={self.vocabulary_size}"
            )
        self._vocabulary = tf.constant(vocabulary, tf.string)
        self._is_continuation = tf.constant([token.startswith("##") for token in vocabulary])

    # -- framing --------------------------------------------------------------------------------

    def preprocess(self, texts, second_texts=None, parse_mask=False):
        """Texts (or text pairs) -> fixed-width BERT inputs.

        Args:
            texts: `tf.string` `(batch_size,)` (or a scalar, or a list).
            second_texts: optional `tf.string` of the same shape, the second
                segment of each pair. Defaults to `None`.
            parse_mask: bool (Python). `True`: the literal text `[MASK]`
                (in any case: `[mask]` too) becomes the `[MASK]` id (for
                fill-in-the-blank queries);
                `False`: it is ordinary text (`[`, `mask`, `]`). Defaults to
                `False`.

        Returns:
            A dict of `(batch_size, sequence_length)` `int32` tensors
            `token_ids`, `padding_mask` (1 real, 0 padding), `segment_ids`,
            and `truncated`, `bool` `(batch_size,)`: whether tokens were
            cut. Empty strings give `[CLS] [SEP]`; an empty batch gives
            `(0, sequence_length)` tensors. A scalar input gives unbatched
            outputs.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        if second_texts is not None:
            second_texts = tf.convert_to_tensor(second_texts, tf.string)
            if second_texts.shape.rank != texts.shape.rank:
                raise ValueError(
                    "`second_texts` must have the shape of `texts` (one second segment per "
                    f"text). Received: texts.shape={texts.shape}, "
                    f"second_texts.shape={second_texts.shape}"
                )
        if texts.shape.rank == 0:
            second = None if second_texts is None else second_texts[tf.newaxis]
            outputs = self.preprocess(texts[tf.newaxis], second, parse_mask)
            return {key: value[0] for key, value in outputs.items()}
        _check_rank(texts, "texts")
        first = self._tokenize(texts, parse_mask)
        if second_texts is None:
            budget = self.sequence_length - 2
            segments = [first[:, :budget]]
            lengths = first.row_lengths()
        else:
            _check_rank(second_texts, "second_texts")
            second_texts = _same_batch(texts, second_texts)
            second = self._tokenize(second_texts, parse_mask)
            budget = self.sequence_length - 3
            segments = tf_text.RoundRobinTrimmer(budget).trim([first, second])
            lengths = first.row_lengths() + second.row_lengths()
        token_ids, segment_ids = tf_text.combine_segments(segments, self.cls_id, self.sep_id)
        outputs = self._to_dense(token_ids, segment_ids)
        outputs["truncated"] = lengths > budget
        return outputs

    def preprocess_words(self, words):
        """Pre-split words `(batch_size, None)` -> BERT inputs with each piece's word.

        Each word is tokenized on its own (a word with punctuation inside,
        `"U.S."`, gives several pieces, all of that word; an empty word gives
        none and is absent). When the pieces do not fit in
        `sequence_length - 2`, the trailing words that do not fit whole are
        dropped (`truncated` is then `True`).

        Args:
            words: a `tf.RaggedTensor` of `tf.string` `(batch_size, None)`, or
                a list of lists of strings.

        Returns:
            The dict of `preprocess` plus `word_ids`, `int32`
            `(batch_size, sequence_length)`: the index of the word each piece
            comes from, `-1` at `[CLS]`, `[SEP]` and padding; and
            `first_piece`, `int32`: `1` at the first piece of each word.

        Example:

        >>> from pipelines.text import TextTokenizer
        >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]",
        ...          "the", "cat", "##s", "sat"]
        >>> preprocessor = MaskedLMPreprocessor(TextTokenizer(vocab), sequence_length=8)
        >>> x = preprocessor.preprocess_words(tf.ragged.constant([["the", "cats", "sat"]]))
        >>> x["token_ids"].numpy().tolist(), x["word_ids"].numpy().tolist()
        ([[5, 7, 8, 9, 10, 6, 0, 0]], [[-1, 0, 1, 1, 2, -1, -1, -1]])
        >>> x["first_piece"].numpy().tolist()
        [[0, 1, 1, 0, 1, 0, 0, 0]]
        """
        if not isinstance(words, tf.RaggedTensor):
            if isinstance(words, tf.Tensor):
                words = tf.RaggedTensor.from_tensor(words)
            else:
                lengths = [len(sentence) for sentence in words]
                flat = [word for sentence in words for word in sentence]
                words = tf.RaggedTensor.from_row_lengths(
                    tf.constant(flat, tf.string, shape=[len(flat)]), tf.constant(lengths, tf.int64)
                )
        if words.dtype != tf.string or words.shape.rank != 2:
            raise ValueError(
                "`words` must be a tf.RaggedTensor of strings of shape (batch_size, None). "
                f"Received: dtype={words.dtype.name}, shape={words.shape}"
            )
        batch_size = words.nrows()
        budget = self.sequence_length - 2
        pieces = self.tokenizer.tokenize(words.flat_values)  # (num_words, None)
        piece_counts = pieces.row_lengths()  # (num_words,)
        sentence_of_word = words.value_rowids()  # (num_words,)
        starts = tf.cumsum(piece_counts, exclusive=True)
        starts = tf.concat([starts, [tf.reduce_sum(piece_counts)]], 0)
        sentence_start = tf.gather(starts, words.row_splits[:-1])  # first piece of each sentence
        word_end = tf.cumsum(piece_counts) - tf.gather(sentence_start, sentence_of_word)
        keep_word = word_end <= budget
        truncated = tf.math.unsorted_segment_max(
            tf.cast(~keep_word, tf.int32), sentence_of_word, batch_size
        ) > 0
        word_index = tf.range(tf.size(sentence_of_word, tf.int64), dtype=tf.int64) - tf.gather(
            words.row_splits, sentence_of_word
        )
        word_of_piece = pieces.value_rowids()  # (num_pieces,)
        keep = tf.gather(keep_word, word_of_piece)
        first = tf.equal(
            tf.range(tf.size(word_of_piece, tf.int64), dtype=tf.int64),
            tf.gather(pieces.row_splits, word_of_piece),
        )

        def regroup(values):  # per-piece values -> (batch_size, None), kept pieces only
            return tf.RaggedTensor.from_value_rowids(
                tf.boolean_mask(values, keep),
                tf.boolean_mask(tf.gather(sentence_of_word, word_of_piece), keep),
                nrows=batch_size,
            )

        token_ids, segment_ids = tf_text.combine_segments(
            [regroup(pieces.flat_values)], self.cls_id, self.sep_id
        )
        outputs = self._to_dense(token_ids, segment_ids)
        outputs["truncated"] = truncated
        width = [None, self.sequence_length]
        edge = tf.fill(tf.stack([tf.cast(batch_size, tf.int32), 1]), -1)
        word_ids = tf.concat(
            [edge, regroup(tf.cast(tf.gather(word_index, word_of_piece), tf.int32)), edge], axis=1
        )
        outputs["word_ids"] = word_ids.to_tensor(-1, shape=width)
        first_piece = tf.concat([0 * edge, regroup(tf.cast(first, tf.int32)), 0 * edge], axis=1)
        outputs["first_piece"] = first_piece.to_tensor(0, shape=width)
        return outputs

    def decode_ids(self, token_ids):
        """Token ids (any shape) -> their tokens, `tf.string` of the same shape (a `tf.gather`)."""
        return tf.gather(self._vocabulary, tf.cast(token_ids, tf.int32))

    # -- masking --------------------------------------------------------------------------------

    def mask(self, token_ids, seed, mask_rate=0.15, max_predictions=None, whole_word=False):
        """Draws BERT's masked-LM corruption of a batch, deterministically for `seed`.

        In each sequence, `min(max_predictions, max(1, floor(mask_rate * n + u)))`
        of its `n` selectable tokens are chosen uniformly, `u` uniform in
        `[0, 1)` (stochastic rounding, so that exactly `mask_rate` of the
        tokens are chosen on average at any length, where BERT's `round`
        chooses 4 of 30 tokens, 13%, at 15%). Selectable are all tokens but
        `[PAD]`, `[CLS]`, `[SEP]` and the other reserved tokens except
        `[UNK]`. Of the chosen, 80% become `[MASK]`, 10% a random
        non-reserved token, 10% stay (decided per token). With
        `whole_word=True` words are chosen instead (a piece starting with `##`
        continues the previous one), in random order: a word whose pieces do
        not fit in what is left of the count is skipped and smaller words
        are still tried, as in BERT (the first word that fits in
        `max_predictions` is always taken); a word is never split.

        Stateless random ops (`tf.random.stateless_*` keyed on `seed`) are
        used rather than keras_hub's `MaskedLMMaskGenerator`: that layer draws
        with stateful ops (tensorflow-text's `RandomItemSelector`), which give
        other masks each time a dataset is rebuilt, it may pick a reserved
        token as the random replacement, and it has no whole-word masking.

        Args:
            token_ids: integer `(batch_size, sequence_length)`, e.g. the
                `token_ids` of `preprocess`.
            seed: integer `(2,)` tensor, the stateless random seed.
            mask_rate: float in `(0, 1)`. Defaults to `0.15`.
            max_predictions: int, the width of the mask outputs. Defaults to
                `None`: `ceil(sequence_length * mask_rate)` (20 for 128 at
                15%, BERT's value).
            whole_word: bool. Defaults to `False`.

        Returns:
            `(token_ids, mask_positions, mask_ids, mask_weights)`: the
            corrupted ids `int32` `(batch_size, sequence_length)`; `int32`
            `(batch_size, max_predictions)` chosen positions (ascending, `0`
            after the last), the original ids there (`0` after the last), and
            `float32` weights (`1` for a chosen position, `0` for filler).
        """
        mask_rate, max_predictions = _check_masking(
            "mask", mask_rate, max_predictions, whole_word, self.sequence_length
        )
        token_ids, seed = _check_mask_inputs(token_ids, seed, max_predictions)
        length = tf.shape(token_ids)[1]
        select_seed, decide_seed, token_seed, round_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
        )
        selectable = (token_ids >= self.num_reserved) | tf.equal(token_ids, UNK_ID)
        if whole_word:
            continuation = tf.gather(self._is_continuation, token_ids)
            previous = tf.pad(selectable[:, :-1], [[0, 0], [1, 0]])
            starts = selectable & ~(continuation & previous)
        else:
            starts = selectable
        word_index = tf.maximum(tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1, 0)
        word_scores = tf.random.stateless_uniform(tf.shape(token_ids), select_seed)
        scores = tf.where(selectable, tf.gather(word_scores, word_index, batch_dims=1), -1.0)
        count = tf.reduce_sum(tf.cast(selectable, tf.float32), axis=1)
        # Stochastic rounding: E[target] = mask_rate * count exactly, at any sequence length.
        jitter = tf.random.stateless_uniform(tf.shape(count), round_seed)
        target = tf.minimum(
            tf.cast(max_predictions, tf.float32),
            tf.maximum(1.0, tf.floor(count * mask_rate + jitter)),
        )
        if whole_word:
            words = _words_that_fit(word_index, selectable, word_scores, target, max_predictions)
            chosen = selectable & tf.gather(words, word_index, batch_dims=1)
        else:  # one piece per word: the `target` best-scored pieces (the best one always)
            drawn = tf.reduce_sum(
                tf.cast(selectable[:, tf.newaxis, :]
                        & (scores[:, tf.newaxis, :] >= scores[:, :, tf.newaxis]), tf.float32),
                axis=2,
            )  # fmt: skip
            best = tf.equal(scores, tf.reduce_max(scores, axis=1, keepdims=True))
            chosen = selectable & ((drawn <= target[:, tf.newaxis]) | best)
            chosen &= tf.cumsum(tf.cast(chosen, tf.int32), axis=1) <= max_predictions
        # The chosen positions, ascending: the largest `length - position` first.
        key = tf.where(chosen, length - tf.range(length)[tf.newaxis, :], 0)
        mask_positions = length - tf.math.top_k(key, k=max_predictions, sorted=True).values
        valid = mask_positions < length
        mask_positions = tf.where(valid, mask_positions, 0)
        mask_ids = tf.where(valid, tf.gather(token_ids, mask_positions, batch_dims=1), 0)
        decide = tf.random.stateless_uniform(tf.shape(token_ids), decide_seed)
        random_ids = tf.random.stateless_uniform(
            tf.shape(token_ids), token_seed, self.num_reserved, self.vocabulary_size, tf.int32
        )
        corrupted = tf.where(
            decide < 0.8,
            self.mask_id,
            tf.where(decide < 0.9, random_ids, token_ids),
        )
        token_ids = tf.where(chosen, corrupted, token_ids)
        return token_ids, mask_positions, mask_ids, tf.cast(valid, tf.float32)

    # -- files ----------------------------------------------------------------------------------

    def save_assets(self, directory):
        """Writes the tokenizer into `directory/vocabulary.txt` (+ sidecar); returns the 2 paths."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        return self.tokenizer.save(os.path.join(directory, VOCABULARY))

    @classmethod
    def from_assets(cls, directory, **config):
        """A preprocessor from the tokenizer `save_assets` wrote and its `get_config()`."""
        return cls(load_tokenizer(os.path.join(os.fspath(directory), VOCABULARY)), **config)

    def get_config(self):
        """`{"sequence_length": ...}` (the tokenizer is an asset)."""
        return {"sequence_length": self.sequence_length}

    # -- helpers --------------------------------------------------------------------------------

    def _tokenize(self, texts, parse_mask):
        """`(batch_size,)` strings -> ragged `int32` ids; with `parse_mask`, `[MASK]` -> mask id."""
        if not parse_mask:
            return self.tokenizer.tokenize(texts)
        texts = tf.strings.regex_replace(texts, r"(?i)\[mask\]", MASK)  # [mask], [Mask] too
        parts = tf.strings.split(texts, sep=MASK)  # (batch, parts): text between the [MASK]s
        ids = self.tokenizer.tokenize(parts.flat_values)  # (num_parts, None)
        position = tf.range(tf.size(parts.flat_values, tf.int64), dtype=tf.int64)
        last = tf.equal(position, tf.gather(parts.row_splits[1:] - 1, parts.value_rowids()))
        follow = 1 - tf.cast(last, tf.int64)  # a [MASK] follows every part but the last
        masks = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.cast(tf.reduce_sum(follow), tf.int32)], self.mask_id), follow
        )
        joined = tf.concat([ids, masks], axis=1)
        return tf.RaggedTensor.from_row_splits(joined, parts.row_splits).merge_dims(1, 2)

    def _to_dense(self, token_ids, segment_ids):
        shape = [None, self.sequence_length]
        return {
            "token_ids": token_ids.to_tensor(self.pad_id, shape=shape),
            "padding_mask": tf.ones_like(token_ids).to_tensor(0, shape=shape),
            "segment_ids": segment_ids.to_tensor(0, shape=shape),
        }


def make_dataset(
    files_or_texts,
    tokenizer,
    sequence_length=None,
    *,
    batch_size=32,
    mode="packed",
    mask_rate=0.15,
    max_predictions=None,
    whole_word=False,
    seed=0,
    shuffle=True,
    documents=None,
    progress=None,
    redraw=True,
):
    """Masked-LM pre-training batches from a corpus, masks re-drawn every epoch.

    The corpus (`read_corpus`) is tokenized once, up front (a tqdm bar over
    its paragraphs on a terminal), and laid out as one stream: each
    document's tokens, then `[SEP]` before the next document. The stream is
    cut into chunks that fill every sequence (so only the very last one is
    padded; on WikiText-2 `train.txt` over 99.9% of positions are real at
    `sequence_length=128`):

    - `mode="packed"`: `[CLS] chunk [SEP]`, `sequence_length` tokens,
      `segment_ids` all `0`;
    - `mode="pairs"`: a chunk of `sequence_length - 3` tokens split in two
      consecutive halves, `[CLS] A [SEP] B [SEP]`, segment ids `0` then `1`;
      where a document ends inside the chunk, A and B are split there
      instead (at the end nearest the middle), so a segment holds a
      document boundary only where one row spans three documents.

    The packed sequences are held in memory (the cache: tokenizing and
    packing happen once); each epoch shuffles them (seeded), batches them and
    draws the masks (`MaskedLMPreprocessor.mask`,
    stateless random ops keyed on `seed` and on a per-batch number from
    `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`), then
    prefetches. So iterating the dataset twice gives different masks and
    orders, while a dataset built again with the same `seed` gives identical
    batches, epoch for epoch (under the same `tf.random.set_seed`, if any:
    TensorFlow mixes the global seed into `tf.data`'s seeds). With
    `redraw=False` the per-batch number is the batch's index instead: every
    iteration draws the same masks (held-out data: scores comparable from
    epoch to epoch), whatever the global seed.

    Args:
        files_or_texts: what `read_corpus` reads; `None` when `documents` is
            given.
        tokenizer: a `TextTokenizer` (with `[CLS]`/`[SEP]`), a vocabulary
            path, or a `MaskedLMPreprocessor`.
        sequence_length: int `>= 8`. Defaults to `None`: the preprocessor's,
            else `128`.
        batch_size: positive int. Defaults to `32`.
        mode: one of `MODES`. Defaults to `"packed"`.
        mask_rate: float in `(0, 1)`. Defaults to `0.15`.
        max_predictions: the width of the mask outputs. Defaults to `None`:
            `ceil(sequence_length * mask_rate)`.
        whole_word: bool, mask whole words. Defaults to `False`.
        seed: int. Defaults to `0`.
        shuffle: bool. Defaults to `True`.
        documents: optional, the documents `read_corpus` returned (lists of
            paragraphs), instead of `files_or_texts`. Defaults to `None`.
        progress: bool, tqdm bars. Defaults to `None`: only on a terminal.
        redraw: bool, new masks at every iteration. Defaults to `True`.

    Returns:
        A `tf.data.Dataset` of `(inputs, mask_ids, mask_weights)`: `inputs` a
        dict of `int32` `token_ids`, `padding_mask`, `segment_ids`
        `(batch_size, sequence_length)` and `mask_positions`
        `(batch_size, max_predictions)`; `mask_ids` `int32`
        `(batch_size, max_predictions)`; `mask_weights` `float32` (Keras
        sample weights), `1` at the chosen positions.

    Example:

    >>> import tempfile
    >>> from pipelines.text import build_wordpiece_vocab
    >>> texts = ["the cat sat on the mat .", "a dog ran in the park ."] * 20
    >>> path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = build_wordpiece_vocab(texts, path, 60, extra_reserved_tokens=BERT_RESERVED_TOKENS)
    >>> dataset = make_dataset(texts, path, 14, batch_size=4, mask_rate=0.25)
    >>> inputs, mask_ids, mask_weights = next(iter(dataset))
    >>> inputs["token_ids"].shape, inputs["mask_positions"].shape, mask_weights.dtype.name
    (TensorShape([4, 14]), TensorShape([4, 4]), 'float32')
    >>> mask_weights.numpy().sum(axis=1).tolist()  # 0.25 * 12 = 3 of the 12 tokens
    [3.0, 3.0, 3.0, 3.0]
    """
    name = "make_dataset"
    preprocessor = _preprocessor(tokenizer, sequence_length, name)
    sequence_length = preprocessor.sequence_length
    batch_size = positive_int(name, "batch_size", batch_size)
    one_of(name, "mode", mode, MODES)
    mask_rate, max_predictions = _check_masking(
        name, mask_rate, max_predictions, whole_word, sequence_length
    )
    boolean(name, "shuffle", shuffle)
    boolean(name, "redraw", redraw)
    if shuffle and not redraw:
        raise ValueError(
            f"{name}: `redraw=False` keeps each batch's masks, which needs batches in a fixed "
            "order: pass shuffle=False with it. Received: shuffle=True, redraw=False"
        )
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(
            f"{name}: `seed` must be an integer in [0, 2**63). Received: seed={seed!r}"
        )
    examples = pack_examples(
        files_or_texts, preprocessor, mode=mode, documents=documents, progress=progress
    )
    # The packed sequences stay in memory as tensors (the cache); the pipeline shuffles indices.
    packed = {key: tf.constant(value) for key, value in examples.items()}
    count = len(examples["token_ids"])
    indices = tf.data.Dataset.range(count)
    if shuffle:
        indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if redraw:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    else:
        keys = tf.data.Dataset.range(-(-count // batch_size))
    base = tf.constant(int(seed), tf.int64)

    def corrupt(batch, key):
        inputs = {name: tf.gather(value, batch) for name, value in packed.items()}
        token_ids, positions, mask_ids, weights = preprocessor.mask(
            inputs["token_ids"], tf.stack([base, key]), mask_rate, max_predictions, whole_word
        )
        inputs["token_ids"] = token_ids
        inputs["mask_positions"] = positions
        return inputs, mask_ids, weights

    dataset = tf.data.Dataset.zip(indices.batch(batch_size), keys)
    dataset = dataset.map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def pack_examples(files_or_texts, tokenizer, sequence_length=None, mode="packed", *,
                  documents=None, progress=None):
    """The unmasked sequences `make_dataset` draws its batches from, as NumPy arrays.

    Args:
        files_or_texts, tokenizer, sequence_length, mode, documents, progress:
            as in `make_dataset`.

    Returns:
        A dict of `int32` NumPy arrays `(num_sequences, sequence_length)`:
        `token_ids`, `padding_mask`, `segment_ids`.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]", "a", "b"]
    >>> packed = pack_examples(["a b a", "b b"], TextTokenizer(vocab), 8)
    >>> packed["token_ids"].tolist()  # one document: the two paragraphs run on
    [[5, 7, 8, 7, 8, 8, 6, 0]]
    """
    name = "pack_examples"
    preprocessor = _preprocessor(tokenizer, sequence_length, name)
    one_of(name, "mode", mode, MODES)
    stream = _token_stream(files_or_texts, documents, preprocessor, progress)
    length = preprocessor.sequence_length
    cls_id, sep_id, pad_id = preprocessor.cls_id, preprocessor.sep_id, preprocessor.pad_id
    content = length - 2 if mode == "packed" else length - 3
    if mode == "packed":
        chunks = [(stream[i : i + content], None) for i in range(0, len(stream), content)]
    else:
        chunks = _pair_chunks(stream, content, sep_id)
    rows = len(chunks)
    token_ids = np.full([rows, length], pad_id, np.int32)
    segment_ids = np.zeros([rows, length], np.int32)
    padding_mask = np.zeros([rows, length], np.int32)
    for row, (chunk, split) in enumerate(chunks):
        if mode == "packed":
            pieces = [[cls_id], chunk, [sep_id]]
            segments = [len(chunk) + 2]
        else:
            a, b = chunk[:split], chunk[split:]
            pieces = [[cls_id], a, [sep_id], b, [sep_id]]
            segments = [len(a) + 2, len(b) + 1]
        sequence = np.concatenate(pieces)
        token_ids[row, : len(sequence)] = sequence
        padding_mask[row, : len(sequence)] = 1
        segment_ids[row, segments[0] : len(sequence)] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask, "segment_ids": segment_ids}


def packing_efficiency(files_or_texts, tokenizer, sequence_length=None, mode="packed", *,
                       documents=None, progress=None):
    """The fraction of real (not `[PAD]`) positions in the sequences `make_dataset` packs.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]", "a", "b"]
    >>> packing_efficiency(["a b a", "b b"], TextTokenizer(vocab), 8)
    0.875
    """
    packed = pack_examples(
        files_or_texts, tokenizer, sequence_length, mode, documents=documents, progress=progress
    )
    return float(packed["padding_mask"].mean())


def tokenize_documents(documents, tokenizer, progress=None):
    """Each document's paragraphs tokenized and run together: a list of `int32` NumPy arrays.

    Paragraphs are tokenized in batches (a tqdm bar over paragraphs on a
    terminal).
    """
    tokenizer = tokenizer.tokenizer if isinstance(tokenizer, MaskedLMPreprocessor) else tokenizer
    paragraphs = [paragraph for document in documents for paragraph in document]
    ids, lengths = [], []
    with tqdm(total=len(paragraphs), desc="tokenizing", unit=" paragraphs",
              disable=_quiet(progress)) as bar:
        for start in range(0, len(paragraphs), _TOKENIZE_BATCH):
            batch = tokenizer.tokenize(paragraphs[start : start + _TOKENIZE_BATCH])
            ids.append(batch.flat_values.numpy())
            lengths.append(batch.row_lengths().numpy())
            bar.update(len(lengths[-1]))
    flat = np.concatenate(ids).astype(np.int32) if ids else np.zeros([0], np.int32)
    paragraph_ends = np.cumsum(np.concatenate(lengths)) if lengths else np.zeros([0], np.int64)
    document_ends = np.cumsum([len(document) for document in documents])
    ends = [int(paragraph_ends[i - 1]) if i else 0 for i in document_ends]
    return np.split(flat, ends[:-1]) if ends else []


# -- private helpers ------------------------------------------------------------------------------


def _token_stream(files_or_texts, documents, preprocessor, progress):
    """The documents' tokens, `[SEP]` between documents: one `int32` NumPy array."""
    if documents is None:
        documents = read_corpus(files_or_texts, progress)
    else:
        if files_or_texts is not None:
            raise ValueError(
                "Pass either `files_or_texts` or `documents`, not both. "
                f"Received: files_or_texts={_short(files_or_texts)}"
            )
        if not isinstance(documents, list | tuple) or not all(
            isinstance(document, list | tuple)
            and all(isinstance(paragraph, str) for paragraph in document)
            for document in documents
        ):
            raise ValueError(
                "`documents` must be a list of documents, each a list of str paragraphs. "
                f"Received: documents={_short(documents)}"
            )
    token_lists = [ids for ids in tokenize_documents(documents, preprocessor, progress) if len(ids)]
    if not token_lists:
        raise ValueError(
            "The corpus holds no tokens. "
            f"Received: files_or_texts={_short(files_or_texts)}, documents={_short(documents)}"
        )
    separator = np.array([preprocessor.sep_id], np.int32)
    pieces = [piece for ids in token_lists for piece in (ids, separator)][:-1]
    return np.concatenate(pieces)


def _pair_chunks(stream, content, sep_id):
    """`(tokens, split)` per pairs-mode row: A is `tokens[:split]`, B the rest.

    A row's `content` tokens are split in two halves, except where a document
    boundary (the stream's `[SEP]`) lies inside the row's next `content + 1`
    tokens with text on both sides: the row then takes those tokens, the
    boundary becomes the `[SEP]` between A and B (the one nearest the middle,
    if several), and no segment holds it. A boundary at a row's start is
    dropped. A short last chunk is halved too (B is empty only for a last
    chunk of one token).
    """
    chunks, start, half = [], 0, (content + 1) // 2
    boundaries = np.flatnonzero(stream == sep_id)
    while start < len(stream):
        if stream[start] == sep_id:
            start += 1
            continue
        window = stream[start : start + content + 1]
        first, last = np.searchsorted(boundaries, [start + 1, start + len(window) - 1])
        inside = boundaries[first:last] - start  # boundaries with text on both sides
        if len(inside):
            split = int(inside[np.argmin(np.abs(inside - half))])
            tokens = np.concatenate([window[:split], window[split + 1 :]])
            start += len(window)
            if tokens[-1] == sep_id:  # a boundary in the window's last slot: the next row's
                tokens = tokens[:-1]
        else:
            tokens = window[:content]
            split = min(half, (len(tokens) + 1) // 2)
            start += len(tokens)
        chunks.append((tokens, split))
    return chunks


def _preprocessor(tokenizer, sequence_length, owner):
    if isinstance(tokenizer, MaskedLMPreprocessor):
        if sequence_length is not None and sequence_length != tokenizer.sequence_length:
            raise ValueError(
                f"{owner}: `sequence_length` differs from the preprocessor's "
                f"({tokenizer.sequence_length}). Received: sequence_length={sequence_length!r}"
            )
        return tokenizer
    if sequence_length is None:
        sequence_length = 128
    positive_int(owner, "sequence_length", sequence_length, minimum=MIN_SEQUENCE_LENGTH)
    return MaskedLMPreprocessor(tokenizer, sequence_length)


def _check_mask_inputs(token_ids, seed, max_predictions):
    """`mask`'s `token_ids` as int32 and `seed` as int64, checked (errors name the argument)."""
    token_ids = tf.convert_to_tensor(token_ids)
    if not token_ids.dtype.is_integer:
        raise ValueError(
            f"mask: `token_ids` must hold integer ids. Received: dtype={token_ids.dtype.name}"
        )
    if token_ids.shape.rank != 2:
        raise ValueError(
            "mask: `token_ids` must have rank 2 `(batch_size, sequence_length)`. "
            f"Received: shape={token_ids.shape}"
        )
    width = token_ids.shape[1]
    if width is not None and width < max_predictions:
        raise ValueError(
            f"mask: `token_ids` has {width} positions, fewer than max_predictions="
            f"{max_predictions}. Received: shape={token_ids.shape}"
        )
    seed = tf.convert_to_tensor(seed)
    known_bad = seed.shape.rank is not None and (
        seed.shape.rank != 1 or seed.shape[0] not in (2, None)
    )  # a traced seed of unknown rank is left to the random op
    if not seed.dtype.is_integer or known_bad:
        raise ValueError(
            "mask: `seed` must be an integer tensor of shape (2,) (a stateless random seed). "
            f"Received: dtype={seed.dtype.name}, shape={seed.shape}"
        )
    return tf.cast(token_ids, tf.int32), seed


def _words_that_fit(word_index, selectable, word_scores, target, max_predictions):
    """Whole-word masking: `bool (batch, L)` by word index, the words chosen.

    Words are taken in the order of their scores, as BERT does: a word whose
    pieces do not fit in what is left of `target` is skipped and smaller ones
    are still tried. The first word that fits in `max_predictions` is always
    taken, even past `target`; a word is never split.
    """
    length = tf.shape(word_index)[1]
    # Pieces per word: (batch, L) by word index; 0 past the last word.
    sizes = tf.reduce_sum(
        tf.one_hot(word_index, length, dtype=tf.float32)
        * tf.cast(selectable, tf.float32)[:, :, tf.newaxis],
        axis=1,
    )
    order = tf.argsort(tf.where(sizes > 0, word_scores, -1.0), axis=1, direction="DESCENDING")
    sorted_sizes = tf.gather(sizes, order, batch_dims=1)
    limit = float(max_predictions)

    def step(state, size):  # one word per row, in score order
        left, taken_any, _ = state
        fits = (size > 0) & ((size <= left) | (~taken_any & (size <= limit)))
        return left - tf.where(fits, size, 0.0), taken_any | fits, fits

    no = tf.zeros_like(target, tf.bool)
    _, _, taken = tf.scan(step, tf.transpose(sorted_sizes), initializer=(target, no, no))
    # Back from score order to word order.
    return tf.gather(tf.transpose(taken), tf.argsort(order, axis=1), batch_dims=1)


def _check_masking(owner, mask_rate, max_predictions, whole_word, sequence_length):
    mask_rate = number(owner, "mask_rate", mask_rate, low=0.0, high=1.0, low_open=True,
                       high_open=True)
    boolean(owner, "whole_word", whole_word)
    if max_predictions is None:
        max_predictions = max(1, math.ceil(round(sequence_length * mask_rate, 6)))
    max_predictions = optional_positive_int(owner, "max_predictions", max_predictions)
    if max_predictions > sequence_length:
        raise ValueError(
            f"{owner}: `max_predictions` must be at most sequence_length={sequence_length}. "
            f"Received: max_predictions={max_predictions}"
        )
    return mask_rate, max_predictions


def _corpus_sources(files_or_texts, progress):
    """`(file name or None, lines)` for each file, or one pair for the given strings."""
    if isinstance(files_or_texts, str | os.PathLike):
        return [(os.fspath(files_or_texts), read_lines(files_or_texts, progress))]
    if not isinstance(files_or_texts, list | tuple):
        raise ValueError(
            "`files_or_texts` must be a path, a list of paths or a list of strings. "
            f"Received: files_or_texts={_short(files_or_texts)}"
        )
    items = list(files_or_texts)
    if items and all(isinstance(item, list | tuple) for item in items):  # documents already read
        for i, document in enumerate(items):
            for j, paragraph in enumerate(document):
                if not isinstance(paragraph, str):
                    raise ValueError(
                        "`files_or_texts` as documents must hold lists of strings. "
                        f"Received: files_or_texts[{i}][{j}]={paragraph!r}"
                    )
        return [(None, list(document)) for document in items]
    paths = any(isinstance(item, os.PathLike) for item in items) or any(
        isinstance(item, str) and "\n" not in item and os.path.isfile(item) for item in items
    )
    if paths:
        for i, item in enumerate(items):
            if not isinstance(item, str | os.PathLike):
                raise ValueError(
                    f"`files_or_texts` must hold paths. Received: files_or_texts[{i}]={item!r}"
                )
        found = next(i for i, item in enumerate(items) if isinstance(item, os.PathLike)
                     or os.path.isfile(item))  # fmt: skip
        for i, item in enumerate(items):
            if not os.path.exists(item):
                raise FileNotFoundError(
                    f"`files_or_texts[{i}]`: no such file: {os.fspath(item)!r} (the list is read "
                    f"as paths since files_or_texts[{found}]={os.fspath(items[found])!r} is one; "
                    "to train on lines of text, pass them as one document: [lines])"
                )
        return [(os.fspath(item), read_lines(item, progress)) for item in items]
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(
                f"`files_or_texts` must hold strings. Received: files_or_texts[{i}]={item!r}"
            )
    if items and all(_looks_like_a_path(item) for item in items):
        raise FileNotFoundError(
            f"`files_or_texts[0]`: no such file: {items[0]!r} (every item looks like a path and "
            "none exists; to train on such lines as text, pass them as one document: "
            "[lines])"
        )
    return [(None, items)]


def _looks_like_a_path(text):
    """One word with a folder separator or a text file's extension (`x.txt`, `x.gz`)."""
    if not text or any(c.isspace() for c in text):
        return False
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(c in text for c in separators) or text.lower().endswith(_PATH_SUFFIXES)


_PATH_SUFFIXES = (".txt", ".gz", ".raw", ".tokens", ".tsv", ".csv", ".jsonl")


def _documents(lines):
    """Lines -> documents of cleaned paragraphs (WikiText headings split documents)."""
    documents, current = [], []
    for line in lines:
        text = _SPACES.sub(" ", line).strip()
        if _HEADING.fullmatch(text):
            if _TOP_HEADING.fullmatch(text) and current:
                documents.append(current)
                current = []
            continue
        text = _WIKITEXT_JOINER.sub(r"\1", text)
        text = _SPACES.sub(" ", _WIKITEXT_UNK.sub(" ", text)).strip()
        if text:
            current.append(text)
    if current:
        documents.append(current)
    return documents


def _same_batch(texts, second_texts):
    """`second_texts`, checked to hold one string per text (a pair per row)."""
    message = (
        "`second_texts` must hold one string per text in `texts` (a pair per row). "
        f"Received: texts.shape={texts.shape}, second_texts.shape={second_texts.shape}"
    )
    sizes = texts.shape[0], second_texts.shape[0]
    if None not in sizes:
        if sizes[0] != sizes[1]:
            raise ValueError(message)
        return second_texts
    check = tf.debugging.assert_equal(
        tf.shape(texts)[0], tf.shape(second_texts)[0], message=message
    )
    with tf.control_dependencies([check]):
        return tf.identity(second_texts)


def _check_rank(texts, name):
    if texts.shape.rank != 1:
        raise ValueError(
            f"`{name}` must be a vector of strings (or a scalar). Received: shape={texts.shape}"
        )


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _quiet(progress):
    return None if progress is None else not progress
