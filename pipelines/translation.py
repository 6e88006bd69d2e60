"""tf.data pipeline for translation: sentence pairs in, teacher-forcing batches out.

`make_dataset` reads aligned sentence pairs, validates them in Python (so a bad
file fails with its name and line number before any TensorFlow graph runs),
then tokenizes, filters by length, caches, shuffles, buckets by length, pads
and prefetches with `tf.data`.
"""

import os

import numpy as np
import tensorflow as tf

from pipelines.text import END_ID, START_ID, TextTokenizer, load_tokenizer, read_lines

_TOKENIZE_BATCH = 1024


def make_dataset(
    data,
    source_tokenizer,
    target_tokenizer=None,
    *,
    batch_size=64,
    max_source_length=None,
    max_target_length=None,
    shuffle=None,
    seed=None,
    bucket_boundaries=None,
    cache=False,
    prefetch=True,
    drop_remainder=False,
    progress=None,
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

    Pairs whose source tokenizes to nothing (a blank line) are dropped. Long
    pairs are dropped too, never truncated: a pair is kept when its source has
    at most `max_source_length` tokens and its `target_in`/`target_out`
    (target tokens + 1) at most `max_target_length`.

    Args:
        data: the sentence pairs, one of:
            - `(source_file, target_file)`: two paths (str or
              `os.PathLike`) of aligned UTF-8 files, one sentence per line,
              plain or gzip;
            - a path of a UTF-8 TSV file (plain or gzip), one
              `source<TAB>target` pair per line;
            - a list of `(source, target)` string pairs, e.g. from
              `pipelines.synthetic.dates`.
        source_tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        target_tokenizer: the same for the target language. Defaults to
            `None`: the source tokenizer (a shared vocabulary).
        batch_size: positive int. Defaults to `64`.
        max_source_length: optional positive int (see above). Defaults to
            `None`: no limit.
        max_target_length: optional int >= 2 (see above). Defaults to `None`:
            no limit.
        shuffle: optional positive int, the shuffle buffer size (reshuffled
            every epoch). Defaults to `None`: the order of `data`.
        seed: optional int, the shuffle seed. Defaults to `None`.
        bucket_boundaries: optional increasing positive ints: batches are
            formed from pairs whose length `max(len(source), len(target_in))`
            falls in the same bucket `[0, b0), [b0, b1), ..., [bn, inf)` (tf.data
            `bucket_by_sequence_length`), so little padding is computed.
            Defaults to `None`: batches in order.
        cache: `False`, `True` (cache the tokenized pairs in memory) or a file
            path prefix (cache on disk). Defaults to `False`.
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
    _check_positive("batch_size", batch_size)
    if max_source_length is not None:
        _check_positive("max_source_length", max_source_length)
    if max_target_length is not None:
        _check_positive("max_target_length", max_target_length, minimum=2)
    if shuffle is not None:
        _check_positive("shuffle", shuffle)
    if bucket_boundaries is not None:
        bucket_boundaries = _check_boundaries(bucket_boundaries)
    if not (isinstance(prefetch, bool) or _is_int(prefetch) and prefetch > 0):
        raise ValueError(
            f"`prefetch` must be a bool or a positive int. Received: prefetch={prefetch!r}"
        )
    if not isinstance(drop_remainder, bool):
        raise ValueError(
            f"`drop_remainder` must be a bool. Received: drop_remainder={drop_remainder!r}"
        )
    if not isinstance(cache, bool | str | os.PathLike):
        raise ValueError(f"`cache` must be a bool or a file path prefix. Received: cache={cache!r}")
    source_tokenizer = _as_tokenizer(source_tokenizer, "source_tokenizer")
    target_tokenizer = (
        source_tokenizer
        if target_tokenizer is None
        else _as_tokenizer(target_tokenizer, "target_tokenizer")
    )
    sources, targets = read_pairs(data, progress=progress)

    def tokenize(source, target):
        return source_tokenizer.tokenize(source), target_tokenizer.tokenize(target)

    def add_start_end(source, target):
        start = tf.constant([START_ID], tf.int32)
        end = tf.constant([END_ID], tf.int32)
        return (
            {"source": source, "target_in": tf.concat([start, target], 0)},
            tf.concat([target, end], 0),
        )

    def keep(inputs, target_out):
        source_length = tf.shape(inputs["source"])[0]
        target_length = tf.shape(target_out)[0]
        kept = source_length > 0
        if max_source_length is not None:
            kept &= source_length <= max_source_length
        if max_target_length is not None:
            kept &= target_length <= max_target_length
        return kept

    dataset = tf.data.Dataset.from_tensor_slices((sources, targets))
    dataset = (
        dataset.batch(_TOKENIZE_BATCH)
        .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .map(add_start_end, num_parallel_calls=tf.data.AUTOTUNE)
        .filter(keep)
    )
    if cache is not False:
        dataset = dataset.cache("" if cache is True else os.fspath(cache))
    if shuffle is not None:
        dataset = dataset.shuffle(int(shuffle), seed=seed, reshuffle_each_iteration=True)
    if bucket_boundaries is None:
        dataset = dataset.padded_batch(int(batch_size), drop_remainder=drop_remainder)
    else:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=_pair_length,
            bucket_boundaries=bucket_boundaries,
            bucket_batch_sizes=[int(batch_size)] * (len(bucket_boundaries) + 1),
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


def _pair_length(inputs, target_out):
    return tf.maximum(tf.shape(inputs["source"])[0], tf.shape(inputs["target_in"])[0])


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
        or not all(_is_int(b) and b > 0 for b in values)
        or any(a >= b for a, b in zip(values, values[1:], strict=False))
    ):
        raise ValueError(
            "`bucket_boundaries` must be a non-empty list of increasing positive ints. "
            f"Received: bucket_boundaries={boundaries!r}"
        )
    return [int(b) for b in values]


def _check_positive(name, value, minimum=1):
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_path(value):
    return isinstance(value, str | os.PathLike)
