"""tf.data pipeline for translation: sentence pairs in, teacher-forcing batches out.

`TranslationPreprocessor` holds the two tokenizers and frames examples, for
training (`[START]`/`[END]`, length filter) and for inference (tokenize,
truncate, pad; detokenize the generated ids), from one definition.
`make_dataset` reads aligned sentence pairs, validates them in Python (so a bad
file fails with its name and line number before any TensorFlow graph runs),
then tokenizes, frames and filters them with a preprocessor, caches, shuffles,
buckets by length, pads and prefetches with `tf.data`.
"""

import hashlib
import json
import numbers
import os

import tensorflow as tf

from keras_attention.utils import boolean, optional_positive_int, positive_int, renamed_argument
from pipelines.text import END_ID, START_ID, TextTokenizer, load_tokenizer, read_lines

_TOKENIZE_BATCH = 1024
SOURCE_VOCABULARY = "source_vocab.txt"
TARGET_VOCABULARY = "target_vocab.txt"


class TranslationPreprocessor:
    """Turns sentence pairs into translator inputs, and generated ids back into text.

    One definition of the framing serves training and inference:

    - training (`frame`, `keep`; what `make_dataset` maps): the source's
      token ids as they are (no `[START]`/`[END]`), `target_in` = `[START]` +
      the target's ids, `target_out` = the target's ids + `[END]`; a pair is
      kept when its source has between 1 and `source_sequence_length` tokens
      and its target at least one token, its `target_out` at most
      `target_sequence_length` (long pairs are dropped, never truncated; a
      blank target would teach the model to say nothing);
    - inference (`generate_preprocess`): a source longer than
      `source_sequence_length` tokens keeps its first `source_sequence_length`
      tokens (training never saw longer ones), and the batch is padded with
      `0` to its longest source, at least one position (an empty string is an
      all-padding source); `generate_postprocess` detokenizes generated ids
      (cut at `[END]`).

    Everything is TensorFlow ops (tensorflow-text), so it runs in `tf.data`, in
    a `tf.function` and inside a SavedModel.

    Args:
        source_tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        target_tokenizer: the same for the target language. Defaults to
            `None`: the source tokenizer (a shared vocabulary).
        source_sequence_length: optional positive int (see above). Defaults
            to `None`: no limit.
        target_sequence_length: optional int >= 2 (see above); also the
            longest generation of a `Translator` using this preprocessor.
            Defaults to `None`: no limit.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> tokenizer = TextTokenizer(["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-",
    ...                            "march", "3", "2021", "03"], lowercase=True)
    >>> preprocessor = TranslationPreprocessor(tokenizer, source_sequence_length=2)
    >>> inputs, target_out = preprocessor.frame(
    ...     *preprocessor.tokenize(tf.constant(["march 3"]), tf.constant(["2021-03"])))
    >>> inputs["source"].to_list(), inputs["target_in"].to_list(), target_out.to_list()
    ([[6, 7]], [[2, 8, 5, 9]], [[8, 5, 9, 3]])
    >>> source, source_ids = preprocessor.generate_preprocess(tf.constant(["3 march 2021", ""]))
    >>> source_ids.numpy().tolist()  # truncated to 2 tokens, padded
    [[7, 6], [0, 0]]
    >>> preprocessor.generate_postprocess(tf.constant([[8, 5, 9, 3, 7]])).numpy().tolist()
    [b'2021-03']
    """

    def __init__(
        self,
        source_tokenizer,
        target_tokenizer=None,
        source_sequence_length=None,
        target_sequence_length=None,
    ):
        owner = type(self).__name__
        self.source_tokenizer = _as_tokenizer(source_tokenizer, "source_tokenizer")
        self.target_tokenizer = (
            self.source_tokenizer
            if target_tokenizer is None
            else _as_tokenizer(target_tokenizer, "target_tokenizer")
        )
        self.source_sequence_length = optional_positive_int(
            owner, "source_sequence_length", source_sequence_length
        )
        self.target_sequence_length = optional_positive_int(
            owner, "target_sequence_length", target_sequence_length, minimum=2
        )

    # -- training -------------------------------------------------------------------------------

    def tokenize(self, sources, targets):
        """Source and target strings `(batch_size,)` -> their token ids (ragged)."""
        return self.source_tokenizer.tokenize(sources), self.target_tokenizer.tokenize(targets)

    def frame(self, source_ids, target_ids):
        """Token ids -> `({"source", "target_in"}, target_out)`, with `[START]` and `[END]`.

        Works on one example (ids `(S,)`, `(T,)`) or on a ragged batch.
        """
        if isinstance(target_ids, tf.RaggedTensor):
            shape = [target_ids.nrows(out_type=tf.int32), 1]
        else:
            shape = tf.concat([tf.shape(target_ids)[:-1], [1]], 0)
        start = tf.fill(shape, tf.constant(START_ID, tf.int32))
        end = tf.fill(shape, tf.constant(END_ID, tf.int32))
        return (
            {"source": source_ids, "target_in": tf.concat([start, target_ids], -1)},
            tf.concat([target_ids, end], -1),
        )

    def keep(self, inputs, target_out):
        """Whether a framed example fits the lengths (a scalar bool; see the class)."""
        source_length = tf.shape(inputs["source"])[0]
        kept = (source_length > 0) & (tf.shape(target_out)[0] > 1)  # [END] alone: no target
        if self.source_sequence_length is not None:
            kept &= source_length <= self.source_sequence_length
        if self.target_sequence_length is not None:
            kept &= tf.shape(target_out)[0] <= self.target_sequence_length
        return kept

    # -- inference ------------------------------------------------------------------------------

    def generate_preprocess(self, texts):
        """Strings `(batch_size,)` -> `(source, source_ids)`.

        `source`: the truncated token ids (ragged); `source_ids`: the same,
        padded with `0` to `(batch_size, max(1, S))`.
        """
        source = self.source_tokenizer.tokenize(texts)
        if self.source_sequence_length is not None:
            source = source[:, : self.source_sequence_length]
        source_ids = source.to_tensor()  # (B, S), 0-padded
        # At least one position, so a batch of empty strings still has a (fully masked) source.
        missing = tf.maximum(1 - tf.shape(source_ids)[1], 0)
        return source, tf.pad(source_ids, [[0, 0], [0, missing]])

    def generate_postprocess(self, token_ids):
        """Generated target ids `(batch_size, L)` -> strings `(batch_size,)`, cut at `[END]`."""
        return self.target_tokenizer.detokenize(token_ids)

    # -- files ----------------------------------------------------------------------------------

    def save_assets(self, directory):
        """Writes both tokenizers (`TextTokenizer.save`) into `directory`; returns the 4 paths."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        return [
            *self.source_tokenizer.save(os.path.join(directory, SOURCE_VOCABULARY)),
            *self.target_tokenizer.save(os.path.join(directory, TARGET_VOCABULARY)),
        ]

    @classmethod
    def from_assets(cls, directory, **config):
        """A preprocessor from the tokenizers `save_assets` wrote and its `get_config()`."""
        directory = os.fspath(directory)
        return cls(
            load_tokenizer(os.path.join(directory, SOURCE_VOCABULARY)),
            load_tokenizer(os.path.join(directory, TARGET_VOCABULARY)),
            **config,
        )

    def get_config(self):
        """The lengths (the tokenizers are assets)."""
        return {
            "source_sequence_length": self.source_sequence_length,
            "target_sequence_length": self.target_sequence_length,
        }


def make_dataset(
    data,
    source_tokenizer,
    target_tokenizer=None,
    *,
    batch_size=64,
    source_sequence_length=None,
    target_sequence_length=None,
    shuffle=None,
    seed=None,
    bucket_boundaries=None,
    tokens_per_batch=None,
    cache=False,
    prefetch=True,
    drop_remainder=False,
    progress=None,
    **kwargs,
):
    """A `tf.data.Dataset` of padded teacher-forcing batches for a translation model.

    Each element is `({"source": source, "target_in": target_in}, target_out)`,
    all `int32` and padded with `0` (`[PAD]`) to the longest sequence of the
    batch:

    - `source` `(batch_size, S)`: the source sentence's token ids (no
      `[START]`/`[END]`).
    - `target_in` `(batch_size, T)`: `[START]` then the target's ids, the
      decoder's input.
    - `target_out` `(batch_size, T)`: the target's ids then `[END]`, the labels;
      `target_in[:, 1:]` equals `target_out[:, :-1]` on the unpadded part.

    The framing is `TranslationPreprocessor`'s (the one a `Translator` serves
    with). Pairs whose source tokenizes to nothing (a blank line) are
    dropped. Long pairs are dropped too, never truncated: a pair is kept when
    its source has at most `source_sequence_length` tokens and its
    `target_in`/`target_out` (target tokens + 1) at most
    `target_sequence_length`.

    Args:
        data: the sentence pairs, one of:
            - `(source_file, target_file)`: two paths (str or
              `os.PathLike`) of aligned UTF-8 files, one sentence per line,
              plain or gzip;
            - a path of a UTF-8 TSV file (plain or gzip), one
              `source<TAB>target` pair per line;
            - a list of `(source, target)` string pairs, e.g. from
              `pipelines.synthetic.dates`.
        source_tokenizer: a `TranslationPreprocessor` (then
            `target_tokenizer` must be `None`, and its lengths are used unless
            given here), a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        target_tokenizer: the same for the target language. Defaults to
            `None`: the source tokenizer (a shared vocabulary).
        batch_size: positive int. Defaults to `64`.
        source_sequence_length: optional positive int (see above). Defaults
            to `None`: no limit. (`max_source_length` is its deprecated name.)
        target_sequence_length: optional int >= 2 (see above). Defaults to
            `None`: no limit. (`max_target_length` is its deprecated name.)
        shuffle: optional positive int, the shuffle buffer size (reshuffled
            every epoch). Defaults to `None`: the order of `data`.
        seed: optional int, the shuffle seed. Defaults to `None`.
        bucket_boundaries: optional increasing positive ints: batches are
            formed from pairs whose length `max(len(source), len(target_in))`
            falls in the same bucket `[0, b0), [b0, b1), ..., [bn, inf)` (tf.data
            `bucket_by_sequence_length`), so little padding is computed.
            Defaults to `None`: batches in order.
        tokens_per_batch: optional positive int, with `bucket_boundaries`:
            token-based batching. Each bucket's batches hold
            `tokens_per_batch // L` pairs, `L` the bucket's longest pair
            (`boundary - 1`; for the last bucket the longer of
            `source_sequence_length` and `target_sequence_length`, which must
            then be given), so every batch holds about the same number of
            padded tokens and short sentences come in large batches
            (`batch_size` is then unused). Defaults to `None`: `batch_size`
            pairs per batch.
        cache: `False`, `True` (cache the tokenized pairs in memory) or a file
            path prefix (cache on disk, in files `<prefix>-<16 hex digits>*`
            named by a digest of the pairs, the vocabularies and the lengths,
            so other data never replays this cache). Defaults to `False`.
        prefetch: `True` (autotuned), `False`, or a positive int buffer size.
            Defaults to `True`.
        drop_remainder: bool, drop a last smaller batch (per bucket).
            Defaults to `False`.
        progress: bool, tqdm bars while reading files. Defaults to `None`:
            only on a terminal.

    Returns:
        A `tf.data.Dataset`.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: bad arguments; an empty file; files with different line
            counts (both named with their counts); a line that is not UTF-8
            or a TSV line without exactly one tab (file and 1-based line
            named).

    Example:

    >>> import tempfile
    >>> from pipelines import synthetic, text
    >>> pairs = synthetic.dates(200, seed=0)
    >>> vocab_path = os.path.join(tempfile.mkdtemp(), "dates.txt")
    >>> _ = text.build_wordpiece_vocab([s for pair in pairs for s in pair], vocab_path, 300)
    >>> dataset = make_dataset(pairs, vocab_path, batch_size=8)
    >>> inputs, target_out = next(iter(dataset))
    >>> sorted(inputs), inputs["source"].dtype.name, target_out.shape[0]
    (['source', 'target_in'], 'int32', 8)
    >>> pairs[:2]
    [('wed 24 jan 2035', '2035-01-24'), ('february 11, 2001', '2001-02-11')]
    >>> tokenizer = text.load_tokenizer(vocab_path)
    >>> tokenizer.detokenize(target_out[:2]).numpy().tolist()
    [b'2035-01-24', b'2001-02-11']
    >>> tokenizer.detokenize(inputs["source"][:2]).numpy().tolist()
    [b'wed 24 jan 2035', b'february 11, 2001']

    References:
        - Williams and Zipser, 1989, "A Learning Algorithm for Continually
          Running Fully Recurrent Neural Networks" (teacher forcing).
        - Sutskever et al., 2014, "Sequence to Sequence Learning with Neural
          Networks" (https://arxiv.org/abs/1409.3215).
    """
    name = "make_dataset"
    source_sequence_length = renamed_argument(
        name, kwargs, "max_source_length", "source_sequence_length", source_sequence_length
    )
    target_sequence_length = renamed_argument(
        name, kwargs, "max_target_length", "target_sequence_length", target_sequence_length
    )
    if kwargs:
        raise TypeError(f"{name}() got unexpected arguments {sorted(kwargs)}")
    positive_int(name, "batch_size", batch_size)
    _check_shuffle(name, shuffle, seed)
    if bucket_boundaries is not None:
        bucket_boundaries = _check_boundaries(bucket_boundaries)
    if tokens_per_batch is not None:
        positive_int(name, "tokens_per_batch", tokens_per_batch)
    if not isinstance(prefetch, bool):
        positive_int(name, "prefetch", prefetch)
    boolean(name, "drop_remainder", drop_remainder)
    if not isinstance(cache, bool | str | os.PathLike) or (
        not isinstance(cache, bool) and not os.fspath(cache)
    ):  # "" would be a disk cache named `-<digest>` in the working folder
        raise ValueError(
            f"`cache` must be a bool or a non-empty file path prefix. Received: cache={cache!r}"
        )
    preprocessor = _as_preprocessor(
        source_tokenizer, target_tokenizer, source_sequence_length, target_sequence_length
    )
    sources, targets = read_pairs(data, progress=progress)

    dataset = tf.data.Dataset.from_tensor_slices((sources, targets))
    dataset = (
        dataset.batch(_TOKENIZE_BATCH)
        .map(preprocessor.tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .map(preprocessor.frame, num_parallel_calls=tf.data.AUTOTUNE)
        .filter(preprocessor.keep)
    )
    if cache is not False:
        dataset = dataset.cache(_cache_path(cache, sources, targets, preprocessor))
    if shuffle is not None:
        dataset = dataset.shuffle(int(shuffle), seed=seed, reshuffle_each_iteration=True)
    if bucket_boundaries is None:
        if tokens_per_batch is not None:
            raise ValueError(
                "make_dataset: `tokens_per_batch` sizes the batches of each length bucket, so it "
                "needs `bucket_boundaries`. Received: bucket_boundaries=None, "
                f"tokens_per_batch={tokens_per_batch}"
            )
        dataset = dataset.padded_batch(int(batch_size), drop_remainder=drop_remainder)
    else:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=_pair_length,
            bucket_boundaries=bucket_boundaries,
            bucket_batch_sizes=_bucket_batch_sizes(
                batch_size, bucket_boundaries, tokens_per_batch, preprocessor
            ),
            drop_remainder=drop_remainder,
        )
    if prefetch is not False:
        dataset = dataset.prefetch(tf.data.AUTOTUNE if prefetch is True else int(prefetch))
    return dataset


def read_pairs(data, progress=None):
    """Reads and validates sentence pairs: `(sources, targets)`, two lists of `str`.

    `data` takes the forms `make_dataset` accepts. Raises the errors listed
    there.

    Example:

    >>> read_pairs([("3 march 2021", "2021-03-03"), ("may 1, 1999", "1999-05-01")])
    (['3 march 2021', 'may 1, 1999'], ['2021-03-03', '1999-05-01'])
    """
    if isinstance(data, str | os.PathLike):
        return _read_tsv(data, progress)
    if isinstance(data, tuple | list) and len(data) == 2 and all(_is_path(d) for d in data):
        return _read_aligned(data[0], data[1], progress)
    if isinstance(data, tuple | list):
        return _check_pairs(data)
    raise ValueError(
        "`data` must be a `(source_file, target_file)` pair of paths, a TSV path, or a list "
        f"of (source, target) string pairs. Received: data of type {type(data).__name__}"
    )


def _read_aligned(source_file, target_file, progress):
    sources = read_lines(source_file, progress)
    targets = read_lines(target_file, progress)
    for path, lines in ((source_file, sources), (target_file, targets)):
        _check_not_empty(path, lines)
    if len(sources) != len(targets):
        raise ValueError(
            f"Misaligned files: '{os.fspath(source_file)}' has {len(sources)} lines but "
            f"'{os.fspath(target_file)}' has {len(targets)} lines; they must have one "
            "sentence per line, in the same order."
        )
    return sources, targets


def _read_tsv(path, progress):
    lines = read_lines(path, progress)
    _check_not_empty(path, lines)
    sources, targets = [], []
    for number, line in enumerate(lines, start=1):
        tabs = line.count("\t")
        if tabs != 1:
            raise ValueError(
                f"'{os.fspath(path)}', line {number}: expected exactly one tab between source "
                f"and target, found {tabs}. Received: line={line[:80]!r}"
            )
        source, target = line.split("\t")
        sources.append(source)
        targets.append(target)
    return sources, targets


def _check_pairs(pairs):
    if not pairs:
        raise ValueError("`data` holds no sentence pairs. Received: data=[]")
    sources, targets = [], []
    for i, pair in enumerate(pairs):
        if not (
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and all(isinstance(s, str) for s in pair)
        ):
            raise ValueError(
                f"`data` must hold (source, target) string pairs. Received: data[{i}]={pair!r}"
            )
        sources.append(pair[0])
        targets.append(pair[1])
    return sources, targets


def _check_not_empty(path, lines):
    if not any(line.strip() for line in lines):
        what = "is empty" if not lines else f"holds only blank lines ({len(lines)})"
        raise ValueError(f"'{os.fspath(path)}' {what}: expected one sentence per line.")


def _bucket_batch_sizes(batch_size, boundaries, tokens_per_batch, preprocessor):
    """Pairs per batch of each bucket: `batch_size`, or `tokens_per_batch` // its longest pair."""
    if tokens_per_batch is None:
        return [int(batch_size)] * (len(boundaries) + 1)
    limits = [preprocessor.source_sequence_length, preprocessor.target_sequence_length]
    if None in limits:
        raise ValueError(
            "make_dataset: `tokens_per_batch` needs `source_sequence_length` and "
            "`target_sequence_length` (the longest pair of the last bucket). Received: "
            f"source_sequence_length={limits[0]}, target_sequence_length={limits[1]}"
        )
    longest = [b - 1 for b in boundaries] + [max(max(limits), boundaries[-1])]
    return [max(1, int(tokens_per_batch) // max(1, n)) for n in longest]


def _pair_length(inputs, target_out):
    return tf.maximum(tf.shape(inputs["source"])[0], tf.shape(inputs["target_in"])[0])


def _as_preprocessor(source_tokenizer, target_tokenizer, source_length, target_length):
    if not isinstance(source_tokenizer, TranslationPreprocessor):
        return TranslationPreprocessor(
            source_tokenizer, target_tokenizer, source_length, target_length
        )
    if target_tokenizer is not None:
        raise ValueError(
            "`target_tokenizer` must be None when `source_tokenizer` is a "
            "TranslationPreprocessor (it holds both tokenizers). "
            f"Received: target_tokenizer={target_tokenizer!r}"
        )
    if source_length is None and target_length is None:
        return source_tokenizer
    config = source_tokenizer.get_config()
    return TranslationPreprocessor(
        source_tokenizer.source_tokenizer,
        source_tokenizer.target_tokenizer,
        source_length if source_length is not None else config["source_sequence_length"],
        target_length if target_length is not None else config["target_sequence_length"],
    )


def _as_tokenizer(tokenizer, name):
    if isinstance(tokenizer, TextTokenizer):
        return tokenizer
    if _is_path(tokenizer):
        return load_tokenizer(tokenizer)
    raise ValueError(
        f"`{name}` must be a pipelines.text.TextTokenizer or a vocabulary path. "
        f"Received: {name}={tokenizer!r}"
    )


def _check_boundaries(boundaries):
    values = list(boundaries) if isinstance(boundaries, tuple | list) else None
    if (
        not values
        or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) and b > 0 for b in values)
        or any(a >= b for a, b in zip(values, values[1:], strict=False))
    ):
        raise ValueError(
            "`bucket_boundaries` must be a non-empty list of increasing positive ints. "
            f"Received: bucket_boundaries={boundaries!r}"
        )
    return [int(b) for b in values]


def _is_path(value):
    return isinstance(value, str | os.PathLike)


def _check_shuffle(name, shuffle, seed):
    optional_positive_int(name, "shuffle", shuffle)
    optional_positive_int(name, "seed", seed, minimum=0)
    if seed is not None and shuffle is None:
        raise ValueError(
            f"{name}: `seed` seeds the shuffle, and `shuffle` is None (no shuffle). "
            f"Received: seed={seed!r}, shuffle=None"
        )


def _cache_path(prefix, sources, targets, preprocessor):
    """`<prefix>-<16 hex digits>` (`cache=True`: `""`, in memory): TensorFlow's disk cache
    replays whatever it holds, so its name carries a digest of what it holds."""
    if prefix is True:
        return ""
    digest = hashlib.sha256()
    options = {
        "lengths": preprocessor.get_config(),
        "tokenizers": [
            {"vocabulary": list(tokenizer.vocabulary), **tokenizer.get_config()}
            for tokenizer in (preprocessor.source_tokenizer, preprocessor.target_tokenizer)
        ],
    }
    digest.update(json.dumps(options, sort_keys=True).encode())
    for text in (*sources, *targets):
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        digest.update(len(data).to_bytes(8, "little") + data)
    return f"{os.fspath(prefix)}-{digest.hexdigest()[:16]}"
