"""tf.data pipelines for text classification and token classification (tagging).

`read_labeled_texts` reads `sentence<TAB>label` files (SST-2, GLUE-style TSV),
`read_tagged_words` reads CoNLL-style `word<TAB>tag` files; both name the file
and the 1-based line of a bad line. `make_dataset` and `make_token_dataset`
turn them into batches for a BERT-style encoder with a
`pipelines.masked_lm.MaskedLMPreprocessor` (the same framing as
pre-training), each batch cut to its longest sequence.
"""

import numbers
import os
import re

import numpy as np
import tensorflow as tf

from keras_attention.utils import boolean, positive_int
from pipelines.text import read_lines

DOCSTART = "-DOCSTART-"
_TEXT_COLUMNS = ("sentence", "text")


def read_labeled_texts(path_or_rows, labels=None):
    """Reads labelled texts: a `sentence<TAB>label` file, or `(text, label)` pairs.

    In a file (UTF-8, plain or gzip) the label is the last tab-separated
    field and the text is the rest of the line. A first line whose last field
    is `label` is a header and is skipped; the text is then the column it
    names `sentence` or `text` (other columns, e.g. a source or a title, are
    left out), or else its one column besides an `index`, `id` or `idx`
    column (GLUE's layout). A header with a sentence-pair column (GLUE's
    `question`, `sentence1`, `premise`, ...) or with several unnamed text
    columns is refused, as is `index<TAB>sentence` with no `label` (SST-2's
    unlabelled `test.tsv`): one text per row is classified, and rows must
    have the header's number of fields. Blank lines are skipped; texts and
    labels are stripped of surrounding whitespace.

    Args:
        path_or_rows: str or `os.PathLike`, the file; or a list of
            `(text, label)` pairs (labels may be ints).
        labels: optional list of the labels a model knows (its classes): a
            row with any other label is refused, its file and line named (or
            its index). Defaults to `None` (any label).

    Returns:
        `(texts, labels)`: two lists of `str`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line without a tab, an empty text or label, a label not
            in `labels`, a header with no or two text columns, a line whose
            fields do not match its header's, a line that is not UTF-8, a file
            without rows (the file and 1-based line named), or a bad pair
            (its index named).

    Example:

    >>> read_labeled_texts([("a fine film", 1), ("dull", 0)])
    (['a fine film', 'dull'], ['1', '0'])
    """
    known = None if labels is None else {str(label) for label in labels}
    if not isinstance(path_or_rows, str | os.PathLike):
        return labeled_rows(path_or_rows, known)
    path = os.fspath(path_or_rows)
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise ValueError(f"'{path}': the file holds no rows.")
    texts, labels = [], []
    header = None  # (number of fields, the text column) when the first line is a header
    first = next(number for number, line in enumerate(lines, start=1) if line.strip())
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if number == first and (header := _header(path, fields, number)) is not None:
            continue
        where = f"'{path}', line {number}"
        if len(fields) < 2:
            raise ValueError(f"{where}: expected `text<TAB>label`, found no tab: {line[:80]!r}")
        if header is not None and len(fields) != header[0]:
            raise ValueError(
                f"{where}: expected the header's {header[0]} tab-separated fields, found "
                f"{len(fields)}: {line[:80]!r}"
            )
        text = (fields[header[1]] if header is not None else "\t".join(fields[:-1])).strip()
        label = fields[-1].strip()
        if not label:
            raise ValueError(f"{where}: the label is empty: {line[:80]!r}{_trailing_tab(fields)}")
        if not text:
            raise ValueError(f"{where}: the text is empty: {line[:80]!r}")
        check_known(where, label, known, received=f": {line[:80]!r}")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise ValueError(f"'{path}': the file holds a header but no rows.")
    return texts, labels


_INDEX_COLUMNS = ("index", "id", "idx")
# The second text of GLUE's pair tasks (QNLI, RTE, MNLI, QQP, MRPC, WNLI) and of common layouts.
_PAIR_COLUMNS = ("question", "question1", "question2", "sentence1", "sentence2", "premise",
                 "hypothesis", "text_a", "text_b", "#1 string", "#2 string")  # fmt: skip
# What a tagger's `tf.strings.split` splits words on: ASCII whitespace only (a no-break space
# stays inside a word, as "10\xa0000").
_SPLIT = re.compile(r"[ \t\n\v\f\r]+")


def split_words(text):
    """`text` split into words as a tagger splits it in TensorFlow (`tf.strings.split`).

    Example:

    >>> split_words(" New  York\tcity 10\xa0000 ")
    ['New', 'York', 'city', '10\xa0000']
    """
    return [word for word in _SPLIT.split(text) if word]


def _trailing_tab(fields):
    """A hint for a line whose last field is empty: it ends with a tab (a header's too)."""
    if len(fields) < 2 or fields[-1].strip():
        return ""
    hint = ". The line ends with a tab: the label is the last tab-separated field"
    if fields[-2].strip().lower() == "label":
        hint += " (a header line must end with `label`, without a tab after it)"
    return hint


def _header(path, fields, number=1):
    """`(number of fields, text column)` of a header line, `None` for a data line.

    `number` is the line's (the file's first non-blank one)."""
    names = [field.strip().lower() for field in fields]
    where = f"'{path}', line {number}"
    if names[-1] != "label":
        # SST-2's test.tsv: `index<TAB>sentence`, texts without labels.
        if len(names) > 1 and names[-1] in _TEXT_COLUMNS and set(names[:-1]) <= set(_INDEX_COLUMNS):
            raise ValueError(
                f"{where}: the header names no `label` column (its last one): "
                f"{fields!r}. Texts without labels (such as SST-2's test.tsv) can be "
                "classified (`predict`), not trained on or evaluated."
            )
        # `label<TAB>sentence`: a header whose label column is not the last one would make every
        # row's text its label and its label its text.
        used = names[: max(i for i, name in enumerate(names) if name) + 1] if any(names) else []
        if "label" in used[:-1] and set(used) & set(_TEXT_COLUMNS + _PAIR_COLUMNS):
            raise ValueError(
                f"{where}: the header {fields!r} names a `label` column that is not the last "
                "one: the label must be the last tab-separated field (`sentence<TAB>label`)."
            )
        return None
    columns = names[:-1]
    pairs = [fields[i] for i, name in enumerate(columns) if name in _PAIR_COLUMNS]
    named = [i for i, name in enumerate(columns) if name in _TEXT_COLUMNS]
    others = [i for i, name in enumerate(columns) if name not in _INDEX_COLUMNS]
    if pairs:
        raise ValueError(
            f"{where}: the columns {pairs} hold sentence pairs (GLUE's QNLI, RTE, MNLI "
            "layouts): one text per row is classified, pairs are not supported."
        )
    if len(named) == 1:
        return len(fields), named[0]  # other columns (a source, a title) are left out
    if not named and len(others) == 1:
        return len(fields), others[0]
    raise ValueError(
        f"{where}: expected one text column besides `label` (and an optional index), "
        f"found {[fields[i] for i in others]}: name the one to classify `sentence` or `text`."
    )


def read_tagged_words(path_or_rows, tags=None):
    """Reads token-classification data: CoNLL-style `word<TAB>tag` lines, sentences apart.

    One word per line, its tag in the last column (tab-separated, or
    whitespace-separated when the line has no tab, as in CoNLL-2003's
    `EU NNP B-NP B-ORG`); a blank line ends a sentence; `-DOCSTART-` lines
    are skipped.

    Args:
        path_or_rows: str or `os.PathLike`, the file (UTF-8, plain or gzip);
            or a list of sentences, each a list of `(word, tag)` pairs.
        tags: optional list of the tags a model knows: a word with any other
            tag is refused, its file and line named (or its indices).
            Defaults to `None` (any tag).

    Returns:
        `(sentences, tags)`: aligned lists of lists of `str`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line without a tag, an empty word, a word with a space
            in it (a tagger splits its input on whitespace), a tag not in
            `tags`, a line that is not UTF-8, no sentence at all (the file and
            1-based line named), or a bad pair (its indices named).

    Example:

    >>> read_tagged_words([[("EU", "B-ORG"), ("rejects", "O")], [("Peter", "B-PER")]])
    ([['EU', 'rejects'], ['Peter']], [['B-ORG', 'O'], ['B-PER']])
    """
    known = None if tags is None else {str(tag) for tag in tags}
    if not isinstance(path_or_rows, str | os.PathLike):
        return tagged_rows(path_or_rows, known)
    path = os.fspath(path_or_rows)
    sentences, tags = [], []
    words, word_tags = [], []
    for number, line in enumerate(read_lines(path), start=1):
        if line.startswith(DOCSTART):
            continue
        if not line.strip():
            if words:
                sentences.append(words)
                tags.append(word_tags)
                words, word_tags = [], []
            continue
        # Without a tab, fields are split at ASCII spaces only, as the tagger splits words (a
        # no-break space stays inside a word: `10\xa0000`).
        fields = [field.strip() for field in line.split("\t")] if "\t" in line else split_words(line)
        if len(fields) < 2 or not fields[-1]:
            raise ValueError(
                f"'{path}', line {number}: expected `word<TAB>tag`, found no tag: {line[:80]!r}"
            )
        _check_word(f"'{path}', line {number}", fields[0], fields[-1], known, repr(line[:80]))
        words.append(fields[0])
        word_tags.append(fields[-1])
    if words:
        sentences.append(words)
        tags.append(word_tags)
    if not sentences:
        raise ValueError(f"'{path}': the file holds no tagged words.")
    return sentences, tags


def label_vocabulary(labels):
    """The sorted unique labels: numerically when every label is a number, else as strings.

    Lists of lists (the tags of `read_tagged_words`) are flattened.

    Example:

    >>> label_vocabulary(["1", "0", "10", "2", "1"])
    ['0', '1', '2', '10']
    >>> label_vocabulary([["O", "B-PER"], ["I-PER", "O"]])
    ['B-PER', 'I-PER', 'O']
    """
    flat = [
        str(label)
        for item in labels
        for label in (item if isinstance(item, list | tuple) else [item])
    ]
    unique = set(flat)
    try:
        return sorted(unique, key=lambda label: (float(label), label))
    except ValueError:
        return sorted(unique)


def make_dataset(texts, labels, preprocessor, label_names, *, batch_size=32, shuffle=True, seed=0):
    """Text-classification batches: `({"token_ids", "padding_mask", "segment_ids"}, label_ids)`.

    Texts are framed `[CLS] text [SEP]` by `preprocessor.preprocess`
    (truncated to its `sequence_length`), then every batch is cut to its
    longest sequence (short sentences train much faster than at the full
    width). Shuffling is seeded and re-drawn every epoch.

    Args:
        texts: list of `str`.
        labels: list of labels (`str`, or anything whose `str` is in
            `label_names`), aligned with `texts`.
        preprocessor: a `pipelines.masked_lm.MaskedLMPreprocessor`.
        label_names: the labels in id order (`label_vocabulary(labels)`).
        batch_size: positive int. Defaults to `32`.
        shuffle: bool. Defaults to `True`.
        seed: int. Defaults to `0`.

    Returns:
        A `tf.data.Dataset` of `(inputs, label_ids)`: `int32`
        `(batch_size, width)` inputs, `width <= sequence_length` the batch's
        longest sequence, and `int32` `(batch_size,)` label ids.

    Example:

    >>> from pipelines.masked_lm import MaskedLMPreprocessor
    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]", "good", "bad"]
    >>> preprocessor = MaskedLMPreprocessor(TextTokenizer(vocab), sequence_length=16)
    >>> dataset = make_dataset(["good good", "bad"], ["1", "0"], preprocessor, ["0", "1"],
    ...                        shuffle=False)
    >>> inputs, label_ids = next(iter(dataset))
    >>> inputs["token_ids"].numpy().tolist(), label_ids.numpy().tolist()
    ([[5, 7, 7, 6], [5, 8, 6, 0]], [1, 0])
    """
    name = "make_dataset"
    _check_preprocessor(name, preprocessor)
    texts = _strings(name, "texts", texts)
    label_ids = _label_ids(name, labels, label_names, len(texts))
    batch_size, shuffle, seed = _check_batching(name, batch_size, shuffle, seed)
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(texts, tf.string, shape=[len(texts)]), tf.constant(label_ids, tf.int32))
    )
    if shuffle:
        dataset = dataset.shuffle(max(len(texts), 1), seed=seed, reshuffle_each_iteration=True)

    def prepare(batch_texts, batch_labels):
        return _inputs(preprocessor.preprocess(batch_texts)), batch_labels

    dataset = dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_token_dataset(sentences, tags, preprocessor, tag_names, *, batch_size=32, shuffle=True,
                       seed=0):
    """Token-classification batches: `(inputs, tag_ids, weights)`, a tag on each word's first piece.

    Sentences are framed by `preprocessor.preprocess_words`; each word's tag
    goes to its first piece with weight `1`, every other position (later
    pieces, `[CLS]`, `[SEP]`, padding, words cut by truncation) gets tag `0`
    and weight `0`. Batches are cut to their longest sequence.

    Args:
        sentences: list of lists of words (`str`).
        tags: aligned list of lists of tags.
        preprocessor: a `pipelines.masked_lm.MaskedLMPreprocessor`.
        tag_names: the tags in id order (`label_vocabulary(tags)`).
        batch_size: positive int. Defaults to `32`.
        shuffle: bool. Defaults to `True`.
        seed: int. Defaults to `0`.

    Returns:
        A `tf.data.Dataset` of `(inputs, tag_ids, weights)`: `int32`
        `(batch_size, width)` inputs and tag ids, `float32` weights.

    Example:

    >>> from pipelines.masked_lm import MaskedLMPreprocessor
    >>> from pipelines.text import TextTokenizer
    >>> vocab = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[CLS]", "[SEP]", "eu",
    ...          "rejects", "re", "##jects"]
    >>> preprocessor = MaskedLMPreprocessor(TextTokenizer(vocab, lowercase=True), 16)
    >>> dataset = make_token_dataset([["EU", "rejects"]], [["B-ORG", "O"]], preprocessor,
    ...                              ["B-ORG", "O"], shuffle=False)
    >>> inputs, tag_ids, weights = next(iter(dataset))
    >>> inputs["token_ids"].numpy().tolist(), tag_ids.numpy().tolist(), weights.numpy().tolist()
    ([[5, 7, 8, 6]], [[0, 0, 1, 0]], [[0.0, 1.0, 1.0, 0.0]])
    """
    name = "make_token_dataset"
    _check_preprocessor(name, preprocessor)
    if not isinstance(sentences, list | tuple) or not isinstance(tags, list | tuple):
        raise ValueError(
            f"{name}: `sentences` and `tags` must be lists of lists. "
            f"Received: sentences={type(sentences).__name__}, tags={type(tags).__name__}"
        )
    if len(sentences) != len(tags):
        raise ValueError(
            f"{name}: `sentences` and `tags` must have the same length. "
            f"Received: len(sentences)={len(sentences)}, len(tags)={len(tags)}"
        )
    tag_index = {tag: i for i, tag in enumerate(_names(name, "tag_names", tag_names))}
    flat_words, flat_ids, lengths = [], [], []
    for i, (words, word_tags) in enumerate(zip(sentences, tags, strict=True)):
        if len(words) != len(word_tags):
            raise ValueError(
                f"{name}: sentence {i} has {len(words)} words but {len(word_tags)} tags. "
                f"Received: sentences[{i}]={list(words)[:10]!r}"
            )
        for j, word in enumerate(words):
            if not isinstance(word, str):
                raise ValueError(
                    f"{name}: words must be strings. Received: sentences[{i}][{j}]={word!r}"
                )
            tag = str(word_tags[j])
            if tag not in tag_index:
                raise ValueError(
                    f"{name}: tag {tag!r} (sentence {i}, word {j}) is not in `tag_names` "
                    f"{list(tag_index)[:20]}. Received: tags[{i}][{j}]={word_tags[j]!r}"
                )
            flat_ids.append(tag_index[tag])
        flat_words.extend(words)
        lengths.append(len(words))
    batch_size, shuffle, seed = _check_batching(name, batch_size, shuffle, seed)
    lengths = tf.constant(lengths, tf.int64, shape=[len(lengths)])
    words = tf.RaggedTensor.from_row_lengths(
        tf.constant(flat_words, tf.string, shape=[len(flat_words)]), lengths
    )
    word_tags = tf.RaggedTensor.from_row_lengths(
        tf.constant(flat_ids, tf.int32, shape=[len(flat_ids)]), lengths
    )
    dataset = tf.data.Dataset.from_tensor_slices((words, word_tags))
    if shuffle:
        dataset = dataset.shuffle(max(len(sentences), 1), seed=seed, reshuffle_each_iteration=True)

    def prepare(batch_words, batch_tags):
        outputs = preprocessor.preprocess_words(batch_words)
        first = outputs["first_piece"]
        dense_tags = batch_tags.to_tensor(0)
        # A batch whose sentences are all empty has a (batch, 0) tag table: pad it to gather from.
        dense_tags = tf.pad(dense_tags, [[0, 0], [0, 1]])
        tag_ids = tf.gather(dense_tags, tf.maximum(outputs["word_ids"], 0), batch_dims=1)
        tag_ids = tf.where(first > 0, tag_ids, 0)
        width = _width(outputs["padding_mask"])
        return (
            _inputs(outputs, width),
            tag_ids[:, :width],
            tf.cast(first[:, :width], tf.float32),
        )

    dataset = dataset.ragged_batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


# -- private helpers ------------------------------------------------------------------------------


def _inputs(outputs, width=None):
    """The model inputs of a preprocessor's outputs, cut to the batch's longest sequence."""
    if width is None:
        width = _width(outputs["padding_mask"])
    return {
        key: outputs[key][:, :width] for key in ("token_ids", "padding_mask", "segment_ids")
    }


def _width(padding_mask):
    return tf.reduce_max(tf.reduce_sum(padding_mask, axis=1))


def labeled_rows(rows, known=None, name="path_or_rows"):
    """`(texts, labels)` from `(text, label)` pairs, checked as a file's rows are (stripped,
    non-empty, labels in `known` when given); errors name `name` and the pair's index."""
    if not isinstance(rows, list | tuple):
        raise ValueError(
            f"`{name}` must be a path or a list of (text, label) pairs. "
            f"Received: {name}={type(rows).__name__}"
        )
    texts, labels = [], []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, list | tuple)
            or len(row) != 2
            or not isinstance(row[0], str)
            or not row[0].strip()
            or not isinstance(row[1], str | numbers.Number)
            or not str(row[1]).strip()
        ):
            raise ValueError(
                f"`{name}` must hold (text, label) pairs with a non-empty text and label. "
                f"Received: {name}[{i}]={row!r}"
            )
        label = str(row[1]).strip()
        check_known(f"`{name}`", label, known, received=f". Received: {name}[{i}]={row!r}")
        texts.append(row[0].strip())
        labels.append(label)
    if not texts:
        raise ValueError(f"`{name}` holds no rows. Received: {name}=[]")
    return texts, labels


def check_known(where, value, known, what="label", received=""):
    """Raises a `ValueError` when `known` (a set of a model's labels or tags) lacks `value`."""
    if known is not None and value not in known:
        raise ValueError(
            f"{where}: {what} {value!r} is not one of the model's {what}s "
            f"{sorted(known)[:20]}{received}"
        )


def _check_word(where, word, tag, known, received):
    if not word:
        raise ValueError(f"{where}: the word is empty: {received}")
    if len(split_words(word)) != 1 or split_words(word)[0] != word:
        raise ValueError(
            f"{where}: the word {word!r} holds whitespace: a tagger splits its text on "
            f"whitespace, so it would tag it as {len(split_words(word))} words: {received}"
        )
    check_known(where, tag, known, "tag", f": {received}")


def tagged_rows(rows, known=None, name="path_or_rows"):
    """`(sentences, tags)` from sentences of `(word, tag)` pairs, checked as a file's lines are
    (non-empty, no whitespace inside a word, tags in `known` when given); errors name `name`
    and the pair's indices. Empty sentences are left out."""
    if not isinstance(rows, list | tuple):
        raise ValueError(
            f"`{name}` must be a path or a list of sentences of (word, tag) pairs. "
            f"Received: {name}={type(rows).__name__}"
        )
    sentences, tags = [], []
    for i, sentence in enumerate(rows):
        words, word_tags = [], []
        for j, pair in enumerate(sentence):
            if (
                not isinstance(pair, list | tuple)
                or len(pair) != 2
                or not all(isinstance(field, str) and field.strip() for field in pair)
            ):
                raise ValueError(
                    f"`{name}` must hold sentences of (word, tag) pairs of non-empty strings. "
                    f"Received: {name}[{i}][{j}]={pair!r}"
                )
            _check_word(f"`{name}`", pair[0], pair[1], known, f"Received: {name}[{i}][{j}]={pair!r}")
            words.append(pair[0])
            word_tags.append(pair[1])
        if words:
            sentences.append(words)
            tags.append(word_tags)
    if not sentences:
        raise ValueError(f"`{name}` holds no tagged words. Received: {len(rows)} sentences")
    return sentences, tags


def _strings(owner, name, values):
    if not isinstance(values, list | tuple):
        raise ValueError(
            f"{owner}: `{name}` must be a list of strings. Received: {name}={type(values).__name__}"
        )
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{owner}: `{name}` must hold strings. Received: {name}[{i}]={value!r}")
    return list(values)


def _names(owner, name, values):
    names = [str(value) for value in values] if isinstance(values, list | tuple) else []
    if not names or len(set(names)) != len(names):
        raise ValueError(
            f"{owner}: `{name}` must be a non-empty list of distinct labels. "
            f"Received: {name}={values!r}"
        )
    return names


def _label_ids(owner, labels, label_names, count):
    names = _names(owner, "label_names", label_names)
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(
            f"{owner}: `labels` must hold one label per text. "
            f"Received: {len(labels)} labels for {count} texts"
        )
    index = {name: i for i, name in enumerate(names)}
    ids = np.zeros([len(labels)], np.int32)
    for i, label in enumerate(labels):
        key = str(label)
        if key not in index:
            raise ValueError(
                f"{owner}: label {key!r} (at index {i}) is not in `label_names` {names[:20]}. "
                f"Received: labels[{i}]={label!r}"
            )
        ids[i] = index[key]
    return ids


def _check_preprocessor(owner, preprocessor):
    from pipelines.masked_lm import MaskedLMPreprocessor  # noqa: PLC0415 (no import cycle)

    if not isinstance(preprocessor, MaskedLMPreprocessor):
        raise ValueError(
            f"{owner}: `preprocessor` must be a `pipelines.masked_lm.MaskedLMPreprocessor` (a "
            "tokenizer frames no `[CLS] text [SEP]`: wrap it, MaskedLMPreprocessor(tokenizer)). "
            f"Received: preprocessor={type(preprocessor).__name__}"
        )


def _check_batching(owner, batch_size, shuffle, seed):
    batch_size = positive_int(owner, "batch_size", batch_size)
    boolean(owner, "shuffle", shuffle)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"{owner}: `seed` must be an integer. Received: seed={seed!r}")
    return batch_size, bool(shuffle), int(seed)
