"""The decoding every sequence task shares: from a backbone's state to tokens, greedy or beam."""

import numpy as np
import tensorflow as tf

from keras_attention.generation import beam_search, greedy_search
from pipelines.text import END_ID, MASK, PAD_ID, START_ID


def never_generated_ids(vocabulary):
    """The ids decoding never chooses: `[PAD]`, `[START]` and, where the vocabulary has it, `[MASK]`.

    Example:

    >>> never_generated_ids(["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "a"])
    (0, 2, 4)
    """
    ids = [PAD_ID, START_ID]
    if MASK in vocabulary:
        ids.append(list(vocabulary).index(MASK))
    return tuple(sorted(set(ids)))


def never_generated_mask(vocabulary):
    """A boolean `(vocabulary_size,)` constant, `True` at `never_generated_ids(vocabulary)`."""
    return tf.constant(np.isin(np.arange(len(vocabulary)), never_generated_ids(vocabulary)))


def decode(backbone, state, batch_size, max_length, beam_width=1, length_penalty=0.6,
           never_generated=None):  # fmt: skip
    """Generates from `[START]` until `[END]` with the backbone's `call_with_cache`.

    `greedy_search` when `beam_width == 1`, else `beam_search` with GNMT's
    `length_penalty`; tokens where `never_generated` (a boolean
    `(vocabulary_size,)` tensor) is `True` are never chosen.

    Returns:
        `(tokens (batch_size, L) int32, lengths (batch_size,) int32)`, `[END]`
        included in the lengths.
    """
    start_ids = tf.fill([batch_size], tf.constant(START_ID, tf.int32))

    def step_fn(token_ids, state, step):
        logits, state = backbone.call_with_cache(token_ids, state, step)  # (B, V)
        if never_generated is not None:
            logits = tf.where(never_generated, logits.dtype.min, logits)
        return logits, state

    kwargs = {
        "step_fn": step_fn,
        "state": state,
        "start_ids": start_ids,
        "end_id": END_ID,
        "max_length": max_length,
    }
    if beam_width == 1:
        output = greedy_search(**kwargs)
    else:
        output = beam_search(**kwargs, beam_width=beam_width, length_penalty=length_penalty)
    return output.tokens, output.lengths
