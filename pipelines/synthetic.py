"""Data the project generates itself, for demos and tests (no downloads).

Every generator is deterministic for a given `seed` and returns NumPy arrays
with token id `0` reserved for padding.
"""

import numpy as np


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
    _check_lengths(min_length, max_length)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, max_length + 1, size=num_examples)
    values = rng.integers(1, num_values + 1, size=(num_examples, max_length)).astype("int32")
    values[np.arange(max_length)[None, :] >= lengths[:, None]] = 0
    positions = (rng.random(num_examples) * lengths).astype("int32")
    labels = values[np.arange(num_examples), positions]
    return {"values": values, "query": positions}, labels, positions


def _check_lengths(shortest, longest):
    if not 1 <= shortest <= longest:
        raise ValueError(
            f"lengths must satisfy 1 <= min <= max. Received: min={shortest}, max={longest}"
        )
