"""Data the project generates itself, for demos and tests (no downloads).

Every generator is deterministic for a given `seed` and returns NumPy arrays
with token id `0` reserved for padding (text generators such as `dates`
return Python strings, for `pipelines.text` to tokenize).
"""

import datetime
import os

import numpy as np

from keras_attention.utils import boolean, one_of, positive_int
from keras_attention.utils.files import write_json


def associative_recall(num_examples, min_pairs=4, max_pairs=10, num_keys=20, num_values=10, seed=0):
    """Key/value memories and a query key; the answer is the value stored under it.

    Each example holds between `min_pairs` and `max_pairs` (key, value) pairs
    with distinct keys, padded with `0` to `max_pairs`. The query is one of the
    example's keys; a model answers by attending to the position holding it.

    Args:
        num_examples: number of examples.
        min_pairs: shortest memory. Defaults to `4`.
        max_pairs: longest memory (and padded length). Defaults to `10`.
        num_keys: key ids are `1..num_keys`. Defaults to `20`.
        num_values: value ids are `1..num_values`. Defaults to `10`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, positions)`: `inputs` is a dict of `keys`
        `(N, max_pairs)`, `values` `(N, max_pairs)` and `query` `(N,)`, all
        `int32`; `labels` `(N,)` the answer value; `positions` `(N,)` where it is.

    Example:

    >>> inputs, labels, positions = associative_recall(3, seed=1)
    >>> bool(np.all(inputs["keys"][np.arange(3), positions] == inputs["query"]))
    True
    >>> bool(np.all(inputs["values"][np.arange(3), positions] == labels))
    True
    """
    positive_int("associative_recall", "num_examples", num_examples, minimum=0)
    _check_lengths(min_pairs, max_pairs)
    if num_keys < max_pairs:
        raise ValueError(
            f"`num_keys` must be >= max_pairs={max_pairs}. Received: num_keys={num_keys}"
        )
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_pairs, max_pairs + 1, size=num_examples)
    keys = np.zeros((num_examples, max_pairs), "int32")
    values = np.zeros((num_examples, max_pairs), "int32")
    for i, length in enumerate(lengths):
        keys[i, :length] = rng.choice(num_keys, size=length, replace=False) + 1
        values[i, :length] = rng.integers(1, num_values + 1, size=length)
    positions = (rng.random(num_examples) * lengths).astype("int32")
    rows = np.arange(num_examples)
    inputs = {"keys": keys, "values": values, "query": keys[rows, positions]}
    return inputs, values[rows, positions], positions


def positional_recall(num_examples, min_length=4, max_length=10, num_values=10, seed=0):
    """A memory of tokens and a query position; the answer is the token at that position.

    Args:
        num_examples: number of examples.
        min_length: shortest memory. Defaults to `4`.
        max_length: longest memory (and padded length). Defaults to `10`.
        num_values: token ids are `1..num_values`. Defaults to `10`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, positions)`: `inputs` holds `values`
        `(N, max_length)` and `query` `(N,)` (the position, `0`-based), `int32`.

    Example:

    >>> inputs, labels, positions = positional_recall(4, seed=2)
    >>> bool(np.all(inputs["values"][np.arange(4), inputs["query"]] == labels))
    True
    """
    positive_int("positional_recall", "num_examples", num_examples, minimum=0)
    _check_lengths(min_length, max_length)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    values = rng.integers(1, num_values + 1, size=(num_examples, max_length)).astype("int32")
    values[np.arange(max_length)[None, :] >= lengths[:, None]] = 0
    positions = (rng.random(num_examples) * lengths).astype("int32")
    labels = values[np.arange(num_examples), positions]
    return {"values": values, "query": positions}, labels, positions


def key_sentence_documents(
    num_examples,
    num_classes=4,
    min_sentences=3,
    max_sentences=6,
    min_words=4,
    max_words=8,
    num_filler=40,
    distractor_rate=0.5,
    mention_rate=0.15,
    seed=0,
):
    """Documents whose label is decided by one key sentence among distractors.

    Each document has between `min_sentences` and `max_sentences` sentences
    of `min_words` to `max_words` filler words. Exactly one sentence, the key
    sentence (at a random position), holds the marker word directly followed
    by the class word of the label: "... key <class> ...". Everything else
    decides nothing:

    - every other sentence is, with probability `distractor_rate`, a
      distractor holding the same pattern negated, "... not key <class> ..."
      with a random class (the label's too);
    - every filler word (of any sentence) is, with probability
      `mention_rate`, replaced by a random class word (a mention).

    So a bag of words sees markers and class words of several classes; only
    the word order tells the key sentence apart, and the label's class word
    may well be outnumbered. Since the marker is shared by all classes, a
    model that finds the key sentence finds it for every class.

    Token ids: `0` padding, `1` the negation, `2` the marker, `3 ..
    2 + num_filler` filler words, and `3 + num_filler + c` the class word of
    class `c`. The vocabulary size is `3 + num_filler + num_classes`.
    Sentences are padded with `0` to `max_words` on the right, documents with
    all-`0` sentences to `max_sentences`.

    Args:
        num_examples: number of documents.
        num_classes: number of labels, `>= 2`. Defaults to `4`.
        min_sentences: fewest sentences of a document. Defaults to `3`.
        max_sentences: most sentences (and padded length). Defaults to `6`.
        min_words: fewest words of a sentence, `>= 3` (a distractor needs
            three). Defaults to `4`.
        max_words: most words (and padded length). Defaults to `8`.
        num_filler: number of filler words, `>= 1`. Defaults to `40`.
        distractor_rate: probability in `[0, 1]` that a non-key sentence is
            a distractor. Defaults to `0.5`.
        mention_rate: probability in `[0, 1]` that a filler word is replaced
            by a class word. Defaults to `0.15`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(ids, labels, key_sentences)`: `ids` `(N, max_sentences, max_words)`,
        `labels` `(N,)` in `[0, num_classes)` and `key_sentences` `(N,)`, the
        index of each document's key sentence; all `int32`.

    Example:

    >>> ids, labels, key = key_sentence_documents(5, num_classes=3, num_filler=10, seed=3)
    >>> ids.shape
    (5, 6, 8)
    >>> sentence = ids[0, key[0]]
    >>> marker = int(np.flatnonzero(sentence == 2)[0])
    >>> bool(sentence[marker + 1] == 3 + 10 + labels[0])  # the class word after the marker
    True
    """
    positive_int("key_sentence_documents", "num_examples", num_examples, minimum=0)
    _check_lengths(min_sentences, max_sentences)
    _check_lengths(min_words, max_words)
    for name, value, low in (
        ("num_classes", num_classes, 2),
        ("min_words", min_words, 3),
        ("num_filler", num_filler, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}. Received: {name}={value!r}")
    for name, value in (("distractor_rate", distractor_rate), ("mention_rate", mention_rate)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value!r}")
    rng = np.random.default_rng(seed)
    first_class_word = 3 + num_filler
    ids = np.zeros((num_examples, max_sentences, max_words), "int32")
    labels = rng.integers(0, num_classes, size=num_examples).astype("int32")
    num_sentences = rng.integers(min_sentences, max_sentences + 1, size=num_examples)
    key_sentences = (rng.random(num_examples) * num_sentences).astype("int32")
    for i in range(num_examples):
        for s in range(num_sentences[i]):
            length = rng.integers(min_words, max_words + 1)
            sentence = rng.integers(3, first_class_word, size=length)  # filler words
            mentions = rng.random(length) < mention_rate
            sentence[mentions] = first_class_word + rng.integers(0, num_classes, mentions.sum())
            if s == key_sentences[i]:
                position = rng.integers(0, length - 1)
                sentence[position : position + 2] = (2, first_class_word + labels[i])
            elif rng.random() < distractor_rate:
                position = rng.integers(1, length - 1)
                cls = rng.integers(0, num_classes)
                sentence[position - 1 : position + 2] = (1, 2, first_class_word + cls)
            ids[i, s, :length] = sentence
    return ids, labels, key_sentences


DATE_FORMATS = {
    "day_month_year": "{d} {month} {yyyy}",  # 3 march 2021
    "the_ordinal_of_month": "the {dth} of {month} {yyyy}",  # the 3rd of march 2021
    "month_day_year": "{month} {d}, {yyyy}",  # march 3, 2021
    "month_ordinal_year": "{month} {dth}, {yyyy}",  # march 3rd, 2021
    "ordinal_month_year": "{dth} {month} {yyyy}",  # 3rd march 2021
    "weekday_day_month_year": "{weekday}, {d} {month} {yyyy}",  # wednesday, 3 march 2021
    "weekday_month_ordinal_year": "{weekday} {month} {dth} {yyyy}",  # wednesday march 3rd 2021
    "short_weekday_day_month_year": "{wkd} {d} {mon} {yyyy}",  # wed 3 mar 2021
    "day_short_month_year": "{d} {mon} {yyyy}",  # 3 mar 2021
    "us_numeric": "{mm}/{dd}/{yyyy}",  # 03/03/2021 (month first)
    "european_numeric": "{dd}.{mm}.{yyyy}",  # 03.03.2021 (day first)
}
MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def dates(num_examples, seed=0, min_year=1950, max_year=2049, formats=None):
    """Human-written dates and their ISO 8601 form, e.g. `("the 3rd of march 2021", "2021-03-03")`.

    The translation demo's task: its alignments can be checked at a glance,
    since the year, month and day of the target each come from one source
    word. The dates are drawn uniformly from `min_year-01-01` to
    `max_year-12-31`, each written in a format drawn uniformly from `formats`
    (see `DATE_FORMATS`: day-month-year with plain or ordinal days, month-day
    with a comma, full or three-letter month and weekday names, the US
    `mm/dd/yyyy` and the European `dd.mm.yyyy`). Weekdays are the true ones.
    Sources are lower case; the month is always a word of its own (separated
    by spaces, or by `/` or `.` in the numeric formats), so a WordPiece
    tokenizer gives it its own token(s).

    Args:
        num_examples: non-negative int, number of pairs.
        seed: random seed. Defaults to `0`.
        min_year: first year. Defaults to `1950`.
        max_year: last year. Defaults to `2049`.
        formats: optional list of `DATE_FORMATS` names to draw from. Defaults
            to `None`: all of them.

    Returns:
        A list of `num_examples` `(source, target)` string tuples.

    Example:

    >>> dates(3, seed=0)
    [('wed 24 jan 2035', '2035-01-24'), ('february 11, 2001', '2001-02-11'), ('13 october 1980', '1980-10-13')]
    >>> dates(1, seed=5, formats=["the_ordinal_of_month"])
    [('the 29th of january 2017', '2017-01-29')]
    """
    if (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, int | np.integer)
        or num_examples < 0
    ):
        raise ValueError(
            f"`num_examples` must be a non-negative int. Received: num_examples={num_examples!r}"
        )
    if not 1 <= min_year <= max_year <= 9999:
        raise ValueError(
            "years must satisfy 1 <= min_year <= max_year <= 9999. "
            f"Received: min_year={min_year}, max_year={max_year}"
        )
    names = list(DATE_FORMATS) if formats is None else list(formats)
    unknown = [name for name in names if name not in DATE_FORMATS]
    if not names or unknown:
        raise ValueError(
            f"`formats` must be a non-empty list of names from {sorted(DATE_FORMATS)}. "
            f"Received: formats={formats!r}"
        )
    rng = np.random.default_rng(seed)
    first = datetime.date(min_year, 1, 1).toordinal()
    last = datetime.date(max_year, 12, 31).toordinal()
    pairs = []
    for _ in range(num_examples):  # one draw after the other: dates(n) starts dates(n + k)
        day, choice = rng.integers(first, last + 1), rng.integers(len(names))
        date = datetime.date.fromordinal(int(day))
        month, weekday = MONTH_NAMES[date.month - 1], WEEKDAY_NAMES[date.weekday()]
        source = DATE_FORMATS[names[choice]].format(
            d=date.day,
            dd=f"{date.day:02d}",
            dth=_ordinal(date.day),
            month=month,
            mon=month[:3],
            mm=f"{date.month:02d}",
            yyyy=f"{date.year:04d}",
            weekday=weekday,
            wkd=weekday[:3],
        )
        pairs.append((source, date.isoformat()))
    return pairs


def number_lists(num_examples, min_length=4, max_length=10, num_values=100, seed=0):
    """Lists of distinct numbers and the pointers that sort them, for pointer networks.

    Each list holds between `min_length` and `max_length` distinct integers
    drawn uniformly from `1..num_values` (the number `n` is token id `n`),
    padded with `0` to `max_length` on the right. The answer is the
    permutation that sorts the list in ascending order: `pointers[i, t]` is
    the position (in the list) of its `t`-th smallest number, so
    `values[i, pointers[i, :length]]` is sorted. The numbers are distinct, so
    the answer is unique. Steps past a list's length hold `0`, like padding;
    the steps that count are those where `values > 0` (the lists are padded
    on the right, so step `t` is real when position `t` is).

    Args:
        num_examples: number of lists.
        min_length: shortest list. Defaults to `4`.
        max_length: longest list (and padded length). Defaults to `10`.
        num_values: numbers are drawn from `1..num_values`, at least
            `max_length` of them. Defaults to `100`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(values, pointers)`, both `int32` `(N, max_length)`.

    Example:

    >>> values, pointers = number_lists(3, min_length=5, max_length=5, num_values=9, seed=0)
    >>> bool(np.all(np.diff(np.take_along_axis(values, pointers, axis=1), axis=1) > 0))
    True
    >>> values, pointers = number_lists(2, min_length=2, max_length=4, seed=1)
    >>> [row[p[row > 0]].tolist() == sorted(row[row > 0]) for row, p in zip(values, pointers)]
    [True, True]
    """
    positive_int("number_lists", "num_examples", num_examples, minimum=0)
    _check_lengths(min_length, max_length)
    if num_values < max_length:
        raise ValueError(
            f"`num_values` must be >= max_length={max_length} (the numbers of a list are "
            f"distinct). Received: num_values={num_values}"
        )
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    # The first `max_length` of a random permutation of 1..num_values: distinct numbers.
    values = np.argsort(rng.random((num_examples, num_values)), axis=1)[:, :max_length] + 1
    padded = np.arange(max_length)[None, :] >= lengths[:, None]
    values[padded] = 0
    pointers = np.argsort(np.where(padded, num_values + 1, values), axis=1, kind="stable")
    pointers[padded] = 0
    return values.astype("int32"), pointers.astype("int32")


def colored_grid_lookup(
    num_examples,
    min_size=3,
    max_size=5,
    num_colors=10,
    num_properties=8,
    num_queries=2,
    seed=0,
):
    """Grids of coloured cells with properties; a query names a colour, the answer is its property.

    Each example is a `height x width` grid (each side drawn from
    `min_size..max_size`, padded with `0` at the bottom and right to
    `max_size x max_size`) whose cells hold a colour `1..num_colors` and a
    property `1..num_properties`. The `num_queries` query colours are distinct
    and each colours exactly one cell of its grid (the other cells take the
    remaining colours, possibly repeated), so a model answers by attending to
    that cell: the task of `SpatialAttention` over a feature grid.

    Args:
        num_examples: number of examples.
        min_size: smallest side of a grid. Defaults to `3`.
        max_size: largest side of a grid (and the padded side). Defaults to `5`.
        num_colors: colour ids are `1..num_colors`; more than `num_queries`.
            Defaults to `10`.
        num_properties: property ids are `1..num_properties`. Defaults to `8`.
        num_queries: queries per grid, at most `min_size²`. Defaults to `2`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, positions)`: `inputs` is a dict of `colors` and
        `properties` `(N, max_size, max_size)` and `query` `(N, num_queries)`
        (colour ids), all `int32`; `labels` `(N, num_queries)` the properties
        of the queried cells; `positions` `(N, num_queries, 2)` their `(row,
        column)`.

    Example:

    >>> inputs, labels, positions = colored_grid_lookup(3, seed=1)
    >>> rows, cols = positions[..., 0], positions[..., 1]
    >>> n = np.arange(3)[:, None]
    >>> bool(np.all(inputs["colors"][n, rows, cols] == inputs["query"]))
    True
    >>> bool(np.all(inputs["properties"][n, rows, cols] == labels))
    True
    """
    positive_int("colored_grid_lookup", "num_examples", num_examples, minimum=0)
    _check_lengths(min_size, max_size)
    if num_queries < 1 or num_queries > min_size * min_size:
        raise ValueError(
            f"`num_queries` must be in [1, min_size**2={min_size * min_size}]. "
            f"Received: num_queries={num_queries}"
        )
    if num_colors <= num_queries:
        raise ValueError(
            f"`num_colors` must be > num_queries={num_queries}. Received: num_colors={num_colors}"
        )
    if num_properties < 1:
        raise ValueError(
            f"`num_properties` must be >= 1. Received: num_properties={num_properties}"
        )
    rng = np.random.default_rng(seed)
    heights = rng.integers(min_size, max_size + 1, size=num_examples)
    widths = rng.integers(min_size, max_size + 1, size=num_examples)
    colors = np.zeros((num_examples, max_size, max_size), "int32")
    properties = np.zeros((num_examples, max_size, max_size), "int32")
    query = np.zeros((num_examples, num_queries), "int32")
    positions = np.zeros((num_examples, num_queries, 2), "int32")
    for i, (height, width) in enumerate(zip(heights, widths, strict=True)):
        palette = rng.permutation(num_colors) + 1
        query[i] = palette[:num_queries]
        cells = rng.integers(num_queries, num_colors, size=height * width)
        cells = palette[cells]  # colours other than the queried ones
        where = rng.choice(height * width, size=num_queries, replace=False)
        cells[where] = query[i]
        colors[i, :height, :width] = cells.reshape(height, width)
        properties[i, :height, :width] = rng.integers(1, num_properties + 1, (height, width))
        positions[i] = np.stack([where // width, where % width], axis=-1)
    n = np.arange(num_examples)[:, None]
    labels = properties[n, positions[..., 0], positions[..., 1]]
    return {"colors": colors, "properties": properties, "query": query}, labels, positions


# -- alignment tasks: local-m / local-p (`LocalAttention`) and `MonotonicAttention` -------------


def window_max(num_examples, min_length=4, max_length=12, radius=1, num_values=20, seed=0):
    """Sequences of distinct tokens; output step `t` is the largest token within `radius` of `t`.

    A same-length transduction with a known local alignment: `labels[i, t] =
    max(source[i, t - radius : t + radius + 1])` over the sequence's real
    positions, and `positions[i, t]` is where that maximum sits, at most
    `radius` steps from `t`. It is the task of local-m attention
    (`LocalAttention(mode="monotonic")`), whose window is centred on `t` and
    which must learn where inside the window to look. Each sequence holds
    between `min_length` and `max_length` distinct tokens drawn from
    `1..num_values` (token `n` ranks as the number `n`), padded with `0` on
    the right, so the answer's position is unique.

    Args:
        num_examples: number of sequences.
        min_length: shortest sequence. Defaults to `4`.
        max_length: longest sequence (and padded length). Defaults to `12`.
        radius: non-negative int, how far from `t` the answer may lie.
            Defaults to `1`.
        num_values: tokens are drawn from `1..num_values`, at least
            `max_length` of them. Defaults to `20`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, positions)`, all `int32` `(N, max_length)`: `inputs`
        is a dict holding `source`; `labels` is `0` and `positions` is `-1`
        past a sequence's length.

    Example:

    >>> inputs, labels, positions = window_max(2, min_length=5, max_length=6, seed=3)
    >>> real = labels > 0
    >>> bool(np.all(np.take_along_axis(inputs["source"], np.maximum(positions, 0), 1)[real]
    ...             == labels[real]))
    True
    >>> bool(np.all(np.abs(positions - np.arange(6))[real] <= 1))
    True
    """
    positive_int("window_max", "num_examples", num_examples, minimum=0)
    _check_lengths(min_length, max_length)
    positive_int(None, "radius", radius, minimum=0)
    if num_values < max_length:
        raise ValueError(
            f"`num_values` must be >= max_length={max_length} (the tokens of a sequence are "
            f"distinct). Received: num_values={num_values}"
        )
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    source = np.argsort(rng.random((num_examples, num_values)), axis=1)[:, :max_length] + 1
    steps = np.arange(max_length)
    padded = steps[None, :] >= lengths[:, None]  # (N, L)
    source[padded] = 0
    candidates = steps[:, None] + np.arange(-radius, radius + 1)[None, :]  # (L, 2r+1)
    inside = (candidates >= 0) & (candidates < lengths[:, None, None])  # (N, L, 2r+1)
    clipped = np.clip(candidates, 0, max_length - 1)
    tokens = np.where(inside, source[:, clipped], -1)  # (N, L, 2r+1)
    positions = clipped[np.arange(max_length)[None, :], tokens.argmax(-1)]  # (N, L)
    labels = np.take_along_axis(source, positions, axis=1)
    positions[padded] = -1
    labels[padded] = 0
    return {"source": source.astype("int32")}, labels.astype("int32"), positions.astype("int32")


def offset_lookup(num_examples, min_length=8, max_length=16, num_queries=4, num_values=10, seed=0):
    """A token sequence and several offsets into it; each answer is the token at its offset.

    The queries name source positions in random order, so the position a
    query needs is predictable from the query (with the source length) but
    is not its step `t`: the task of local-p attention
    (`LocalAttention(mode="predictive")`), which predicts the centre of its
    window from the query. Tokens are drawn from `1..num_values` (repeats
    allowed), padded with `0` on the right; offsets are `0`-based and fall
    inside the sequence.

    Args:
        num_examples: number of sequences.
        min_length: shortest sequence. Defaults to `8`.
        max_length: longest sequence (and padded length). Defaults to `16`.
        num_queries: positive int, offsets per sequence. Defaults to `4`.
        num_values: token ids are `1..num_values`. Defaults to `10`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, positions)`: `inputs` is a dict of `values`
        `(N, max_length)` and `offsets` `(N, num_queries)`; `labels`
        `(N, num_queries)` the tokens at the offsets; `positions` the source
        positions of the answers (equal to `offsets`); all `int32`.

    Example:

    >>> inputs, labels, positions = offset_lookup(3, seed=2)
    >>> bool(np.all(np.take_along_axis(inputs["values"], positions, 1) == labels))
    True
    >>> bool(np.all(labels > 0))
    True
    """
    positive_int("offset_lookup", "num_examples", num_examples, minimum=0)
    _check_lengths(min_length, max_length)
    positive_int(None, "num_queries", num_queries)
    positive_int(None, "num_values", num_values)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    values = rng.integers(1, num_values + 1, size=(num_examples, max_length)).astype("int32")
    values[np.arange(max_length)[None, :] >= lengths[:, None]] = 0
    offsets = (rng.random((num_examples, num_queries)) * lengths[:, None]).astype("int32")
    labels = np.take_along_axis(values, offsets, axis=1)
    return {"values": values, "offsets": offsets}, labels, offsets.copy()


def run_length_decoding(
    num_examples, min_length=3, max_length=8, max_repeat=3, num_values=8, seed=0
):
    """Run-length decoding: each source token written out as many times as its count says.

    Source position `j` holds a token `source[i, j]` in `1..num_values`
    (adjacent tokens differ, so runs in the output are unambiguous) and a
    count `repeats[i, j]` in `1..max_repeat`; the target is every token
    repeated `count` times, left to right: a monotone alignment with a
    variable stretch, the task of `MonotonicAttention`. `alignments[i, t]` is
    the source position of target step `t`. `decoder_inputs` are the
    teacher-forced decoder inputs: the start token `num_values + 1`, then the
    targets shifted right by one step.

    Args:
        num_examples: number of sequences.
        min_length: shortest source. Defaults to `3`.
        max_length: longest source (and padded source length). Defaults to `8`.
        max_repeat: positive int, the largest count. Defaults to `3`.
        num_values: token ids are `1..num_values`, at least `2`. Defaults to
            `8`.
        seed: random seed. Defaults to `0`.

    Returns:
        `(inputs, labels, alignments)`: `inputs` is a dict of `source` and
        `repeats` `(N, max_length)` and `decoder_inputs` `(N, T)`, with `T =
        max_length * max_repeat`; `labels` `(N, T)` the target tokens;
        `alignments` `(N, T)`, `-1` past the target's end. All `int32`, padded
        with `0` on the right.

    Example:

    >>> inputs, labels, alignments = run_length_decoding(1, min_length=3, max_length=3, seed=15)
    >>> inputs["source"], inputs["repeats"]
    (array([[8, 5, 2]], dtype=int32), array([[3, 1, 2]], dtype=int32))
    >>> labels[0, :7], alignments[0, :7]
    (array([8, 8, 8, 5, 2, 2, 0], dtype=int32), array([ 0,  0,  0,  1,  2,  2, -1], dtype=int32))
    >>> inputs["decoder_inputs"][0, :7]
    array([9, 8, 8, 8, 5, 2, 0], dtype=int32)
    """
    positive_int("run_length_decoding", "num_examples", num_examples, minimum=0)
    _check_lengths(min_length, max_length)
    positive_int(None, "max_repeat", max_repeat)
    positive_int(None, "num_values", num_values, minimum=2)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    # Each step moves 1..num_values-1 places round the vocabulary: adjacent tokens differ.
    first = rng.integers(0, num_values, size=(num_examples, 1))
    moves = rng.integers(1, num_values, size=(num_examples, max_length - 1))
    source = (np.cumsum(np.concatenate([first, moves], axis=1), axis=1) % num_values) + 1
    repeats = rng.integers(1, max_repeat + 1, size=(num_examples, max_length))
    padded = np.arange(max_length)[None, :] >= lengths[:, None]
    source[padded] = 0
    repeats[padded] = 0
    target_length = max_length * max_repeat
    labels = np.zeros((num_examples, target_length), "int32")
    alignments = np.full((num_examples, target_length), -1, "int32")
    for i in range(num_examples):
        aligned = np.repeat(np.arange(max_length), repeats[i])  # padding repeats 0 times
        alignments[i, : len(aligned)] = aligned
        labels[i, : len(aligned)] = source[i, aligned]
    decoder_inputs = np.concatenate(
        [np.full((num_examples, 1), num_values + 1), labels[:, :-1]], axis=1
    )
    decoder_inputs[labels == 0] = 0
    inputs = {
        "source": source.astype("int32"),
        "repeats": repeats.astype("int32"),
        "decoder_inputs": decoder_inputs.astype("int32"),
    }
    return inputs, labels, alignments


def _check_lengths(shortest, longest):
    if not 1 <= shortest <= longest:
        raise ValueError(
            f"lengths must satisfy 1 <= min <= max. Received: min={shortest}, max={longest}"
        )


def _ordinal(day):
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# -- image captioning: scenes of two coloured shapes and their spatial relation ----------------

SCENE_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
}
SCENE_SHAPES = ("circle", "square", "triangle")
SCENE_RELATIONS = {"vertical": ("above", "below"), "horizontal": ("left of", "right of")}
_SCENE_BACKGROUND = (18, 18, 26)


def shape_scenes(num_examples, image_size=32, seed=0, captions_per_image=2):
    """Pictures of two coloured shapes, one above or left of the other, with captions.

    The captioning demo's data: a caption names both objects and their
    spatial relation, so a captioner must find each object (its colour and
    shape) and compare their positions, and its attention can be checked
    against the boxes. Each image is `image_size x image_size` RGB on a dark
    background with mild noise, holding exactly two filled shapes (a colour
    of `SCENE_COLORS`, a shape of `SCENE_SHAPES`; never the same colour and
    shape twice) of side `image_size / 4` to `image_size / 3`, which do not
    overlap and stand in a clear relation:

    - vertical: the first object entirely above the second (at least
      `max(2, image_size // 16)` pixels of background between them), their
      centres at most `max(1, image_size // 16)` pixels apart horizontally
      (plus half a pixel of rounding): `2` pixels at `32`;
    - horizontal: the first entirely left of the second, their vertical
      centres as close.

    The relation, colours and shapes are drawn uniformly, so every
    combination occurs. Each image has two captions: the canonical one, first
    object first (`"a red circle above a blue square"`, `"a red circle left
    of a blue square"`), and the converse (`"a blue square below a red
    circle"`, `"a blue square right of a red circle"`); lower case, single
    spaces, no punctuation. With `captions_per_image=1` only the canonical
    one: which object a caption starts with is then fixed by the picture
    (the upper or left one), so a captioner has to look at that object
    first; with both captions either order is right, and a soft attention
    can spread over both objects for the first words and still be right.

    Args:
        num_examples: non-negative int, number of images.
        image_size: int `>= 16`, the side of the images in pixels. Defaults
            to `32`.
        seed: random seed. Defaults to `0`.
        captions_per_image: `1` (canonical) or `2` (canonical, converse).
            Defaults to `2`.

    Returns:
        A dict of:
        - `"images"`: `uint8` array `(num_examples, image_size, image_size, 3)`;
        - `"captions"`: a list of `num_examples` lists of
          `captions_per_image` strings (canonical, converse);
        - `"objects"`: a list of `num_examples` lists of 2 dicts
          `{"color", "shape", "box"}` in the canonical caption's order, `box`
          being `(y0, x0, y1, x1)` in pixels (ends exclusive).

    Example:

    >>> scenes = shape_scenes(2, seed=0)
    >>> scenes["images"].shape, scenes["images"].dtype.name
    ((2, 32, 32, 3), 'uint8')
    >>> scenes["captions"][1]
    ['a yellow square above a red circle', 'a red circle below a yellow square']
    >>> first, second = scenes["objects"][1]
    >>> first["box"][2] <= second["box"][0]  # the first object ends above the second
    True
    """
    positive_int("shape_scenes", "num_examples", num_examples, minimum=0)
    image_size = positive_int("shape_scenes", "image_size", image_size, minimum=16)
    one_of("shape_scenes", "captions_per_image", captions_per_image, (1, 2))
    rng = np.random.default_rng(seed)
    colors, relations = list(SCENE_COLORS), list(SCENE_RELATIONS)
    smallest, largest = max(3, round(image_size / 4)), max(3, image_size // 3)
    margin, min_gap, max_offset = 1, max(2, image_size // 16), max(1, image_size // 16)
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    captions, objects = [], []
    for i in range(num_examples):
        relation = relations[rng.integers(len(relations))]
        while True:  # two different (colour, shape) pairs, each drawn uniformly
            kinds = [
                (colors[rng.integers(len(colors))], SCENE_SHAPES[rng.integers(3)]) for _ in "ab"
            ]
            if kinds[0] != kinds[1]:
                break
        sizes = rng.integers(smallest, largest + 1, size=2)
        # Along the relation's axis: first object, a gap, second object.
        gap = rng.integers(min_gap, image_size - 2 * margin - sizes.sum() + 1)
        start = rng.integers(margin, image_size - margin - (sizes.sum() + gap) + 1)
        along = (start, start + sizes[0] + gap)
        # Across it: both centres near one line.
        low = margin + largest / 2 + max_offset
        centre = rng.uniform(low, image_size - low)
        offsets = (0, rng.integers(-max_offset, max_offset + 1))
        across = [
            int(np.clip(round(centre + offset - size / 2), margin, image_size - margin - size))
            for offset, size in zip(offsets, sizes, strict=True)
        ]
        noise = rng.integers(-6, 7, size=(image_size, image_size, 3))
        image = np.clip(np.add(_SCENE_BACKGROUND, noise), 0, 255).astype(np.uint8)
        scene = []
        for (color, shape), size, a, b in zip(kinds, sizes, along, across, strict=True):
            y0, x0 = (a, b) if relation == "vertical" else (b, a)
            y0, x0, size = int(y0), int(x0), int(size)
            image[y0 : y0 + size, x0 : x0 + size][_shape_mask(shape, size)] = SCENE_COLORS[color]
            scene.append({"color": color, "shape": shape, "box": (y0, x0, y0 + size, x0 + size)})
        images[i] = image
        first, second = (f"a {o['color']} {o['shape']}" for o in scene)
        forward, backward = SCENE_RELATIONS[relation]
        pair = [f"{first} {forward} {second}", f"{second} {backward} {first}"]
        captions.append(pair[:captions_per_image])
        objects.append(scene)
    return {"images": images, "captions": captions, "objects": objects}


SCENE_IMAGE_FORMATS = ("jpg", "png")


def write_shape_scenes(
    directory, num_examples, image_size=32, seed=0, image_format="jpg", overwrite=False,
    captions_per_image=2,
):
    """Writes `shape_scenes` as an image-captioning dataset looks on disk.

    Files written under `directory`:

    - `images/scene_00000.jpg`, ... (or `.png`): the images, JPEG at quality
      95 without chroma subsampling (the colours of small shapes stay true),
      or PNG, encoded with TensorFlow; file names have 5 digits, more for
      100000 images or more;
    - `captions.json`: COCO captions format, `{"images": [{"id", "file_name",
      "height", "width"}], "annotations": [{"id", "image_id", "caption"}]}`
      with every caption of every image (file names relative to `images/`);
    - `captions.txt`: Flickr8k token format, `scene_00000.jpg#0<TAB>caption`
      (then `#1`);
    - `captions.tsv`: `scene_00000.jpg<TAB>caption`, one line per caption;
    - `objects.json`: file name -> the image's objects (`shape_scenes`'s
      `"objects"`, boxes as lists).

    `pipelines.captioning.read_captions` reads any of the three caption
    files (it finds the images in the `images/` subfolder).

    Args:
        directory: str or `os.PathLike`, created if needed.
        num_examples: non-negative int, number of images.
        image_size: int `>= 16`. Defaults to `32`.
        seed: random seed. Defaults to `0`.
        image_format: `"jpg"` or `"png"` (lossless). Defaults to `"jpg"`.
        overwrite: bool, whether to write into a directory that already holds
            a `captions.json` (files of the same names are replaced; other
            images already in `images/` are left alone). Defaults to `False`.
        captions_per_image: `1` or `2`, as for `shape_scenes`. Defaults to `2`.

    Returns:
        A dict of the paths written: `"images"` (the folder), `"coco"`,
        `"flickr8k"`, `"tsv"` and `"objects"`.

    Raises:
        FileExistsError: `directory` already holds a `captions.json` and
            `overwrite` is `False`.

    Example:

    >>> import tempfile
    >>> paths = write_shape_scenes(tempfile.mkdtemp(), 3, image_format="png")
    >>> sorted(os.listdir(paths["images"]))
    ['scene_00000.png', 'scene_00001.png', 'scene_00002.png']
    >>> with open(paths["flickr8k"]) as f:
    ...     f.readline().rstrip("\\n").split("\\t")
    ['scene_00000.png#0', 'a blue square left of a green circle']
    """
    import tensorflow as tf  # only here: the generators above need NumPy alone

    name = "write_shape_scenes"
    one_of(name, "image_format", image_format, SCENE_IMAGE_FORMATS)
    boolean(name, "overwrite", overwrite)
    directory = os.fspath(directory)
    paths = {
        "images": os.path.join(directory, "images"),
        "coco": os.path.join(directory, "captions.json"),
        "flickr8k": os.path.join(directory, "captions.txt"),
        "tsv": os.path.join(directory, "captions.tsv"),
        "objects": os.path.join(directory, "objects.json"),
    }
    if os.path.exists(paths["coco"]) and not overwrite:
        raise FileExistsError(
            f"'{directory}' already holds a captioning dataset ('{paths['coco']}'); pass "
            "overwrite=True to replace it."
        )
    scenes = shape_scenes(num_examples, image_size, seed, captions_per_image)
    os.makedirs(paths["images"], exist_ok=True)
    digits = max(5, len(str(max(num_examples - 1, 0))))
    coco = {"images": [], "annotations": []}
    flickr, tsv, objects = [], [], {}
    for i, (image, captions, scene) in enumerate(
        zip(scenes["images"], scenes["captions"], scenes["objects"], strict=True)
    ):
        file_name = f"scene_{i:0{digits}d}.{image_format}"
        if image_format == "jpg":
            data = tf.io.encode_jpeg(image, quality=95, chroma_downsampling=False)
        else:
            data = tf.io.encode_png(image)
        with open(os.path.join(paths["images"], file_name), "wb") as f:
            f.write(data.numpy())
        coco["images"].append(
            {"id": i + 1, "file_name": file_name, "height": image_size, "width": image_size}
        )
        for j, caption in enumerate(captions):
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i + 1, "caption": caption}
            )
            flickr.append(f"{file_name}#{j}\t{caption}\n")
            tsv.append(f"{file_name}\t{caption}\n")
        objects[file_name] = [{**o, "box": list(o["box"])} for o in scene]
    for key, lines in (("flickr8k", flickr), ("tsv", tsv)):
        with open(paths[key], "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
    write_json(paths["objects"], objects)
    write_json(paths["coco"], coco)  # last: its presence marks a complete dataset
    return paths


def _shape_mask(shape, size):
    """A `(size, size)` bool mask of a filled circle, square or (upward) triangle."""
    centre = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    if shape == "circle":
        return (y - centre) ** 2 + (x - centre) ** 2 <= (size / 2) ** 2
    if shape == "triangle":  # apex at the top row, base the bottom row
        return np.abs(x - centre) <= (y + 1) / 2
    return np.ones((size, size), bool)


# -- a small English-like grammar: masked-LM pre-training, sentiment and tagging ------------------

_GRAMMAR = {
    "DET": ("the", "a", "every", "this"),
    "NOUN": ("cat", "dog", "bird", "horse", "student", "farmer", "teacher", "robot"),
    "VERB": ("see", "like", "follow", "find", "watch", "help"),
    "PREP": ("near", "behind", "under", "beside"),
    "PLACE": ("river", "house", "tree", "bridge", "garden", "station"),
    "GOOD": ("good", "great", "kind", "happy", "brilliant", "lovely"),
    "BAD": ("bad", "awful", "cruel", "sad", "terrible", "nasty"),
}
# Every noun has the adjectives it can take (so a masked adjective or noun is predictable).
_NOUN_MOOD = {noun: i % 2 for i, noun in enumerate(_GRAMMAR["NOUN"])}
GRAMMAR_TAGS = ("ADJ", "DET", "NEG", "NOUN", "PREP", "PUNCT", "VERB")


def _grammar_sentence(rng):
    """One sentence as `(words, tags, sentiment)`: `"the kind cat sees a sad dog near the river ."`.

    The adjective of the subject decides the sentiment (`not` before the verb
    flips it); a plural subject (`cats`) takes the verb without `s`.
    """
    words, tags = [], []
    good = bool(rng.integers(2))
    plural = bool(rng.integers(2))
    noun = str(rng.choice(_GRAMMAR["NOUN"]))
    words += ["the" if plural else str(rng.choice(_GRAMMAR["DET"]))]
    words += [str(rng.choice(_GRAMMAR["GOOD" if good else "BAD"])), noun + ("s" if plural else "")]
    tags += ["DET", "ADJ", "NOUN"]
    negated = rng.random() < 0.3
    verb = str(rng.choice(_GRAMMAR["VERB"]))
    if negated:
        words += ["do" if plural else "does", "not", verb]
        tags += ["VERB", "NEG", "VERB"]
    else:
        words += [verb if plural else verb + ("es" if verb.endswith("ch") else "s")]
        tags += ["VERB"]
    other = str(rng.choice(_GRAMMAR["NOUN"]))
    mood = "GOOD" if _NOUN_MOOD[other] else "BAD"
    words += [str(rng.choice(_GRAMMAR["DET"])), str(rng.choice(_GRAMMAR[mood])), other]
    tags += ["DET", "ADJ", "NOUN"]
    if rng.random() < 0.5:
        words += [str(rng.choice(_GRAMMAR["PREP"])), "the", str(rng.choice(_GRAMMAR["PLACE"]))]
        tags += ["PREP", "DET", "NOUN"]
    words.append(".")
    tags.append("PUNCT")
    return words, tags, good != negated


def grammar_corpus(num_paragraphs, sentences_per_paragraph=4, seed=0):
    """Paragraphs of a small English-like grammar, the text of the masked-LM demo and tests.

    Sentences like `"the kind cat sees a sad dog near the river ."`: a
    plural subject takes a verb without `s`, `not` needs `does`/`do`, and
    each object noun takes adjectives of one mood, so a masked word is
    predictable from its neighbours (a model that learns the grammar
    predicts most masks; one that does not cannot).

    Args:
        num_paragraphs: non-negative int.
        sentences_per_paragraph: positive int. Defaults to `4`.
        seed: random seed. Defaults to `0`.

    Returns:
        A list of `num_paragraphs` strings.

    Example:

    >>> grammar_corpus(1, sentences_per_paragraph=1, seed=3)[0].endswith(" .")
    True
    """
    positive_int("grammar_corpus", "num_paragraphs", num_paragraphs, minimum=0)
    positive_int("grammar_corpus", "sentences_per_paragraph", sentences_per_paragraph)
    rng = np.random.default_rng(seed)
    return [
        " ".join(" ".join(_grammar_sentence(rng)[0]) for _ in range(sentences_per_paragraph))
        for _ in range(num_paragraphs)
    ]


def grammar_sentiment(num_examples, seed=0):
    """Sentences of `grammar_corpus`'s grammar labelled `"positive"` or `"negative"`.

    The label is the mood of the subject's adjective, flipped by `not`
    (`"the kind cat does not see a dog ."` is negative): a classifier must
    read both words, and ignore the object's adjective.

    Returns:
        A list of `(sentence, label)` string pairs.

    Example:

    >>> sentence, label = grammar_sentiment(1, seed=1)[0]
    >>> label in ("positive", "negative")
    True
    """
    positive_int("grammar_sentiment", "num_examples", num_examples, minimum=0)
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(num_examples):
        words, _, good = _grammar_sentence(rng)
        examples.append((" ".join(words), "positive" if good else "negative"))
    return examples


def grammar_tags(num_examples, seed=0):
    """Sentences of `grammar_corpus`'s grammar with a part-of-speech tag per word.

    Returns:
        `(sentences, tags)`: lists of word lists and of tag lists (tags from
        `GRAMMAR_TAGS`).

    Example:

    >>> sentences, tags = grammar_tags(1, seed=2)
    >>> len(sentences[0]) == len(tags[0]), tags[0][-1]
    (True, 'PUNCT')
    """
    positive_int("grammar_tags", "num_examples", num_examples, minimum=0)
    rng = np.random.default_rng(seed)
    sentences, tags = [], []
    for _ in range(num_examples):
        words, word_tags, _ = _grammar_sentence(rng)
        sentences.append(words)
        tags.append(word_tags)
    return sentences, tags
