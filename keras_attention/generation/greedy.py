"""Greedy search: the most likely next token at every step."""

import keras

from keras_attention.generation import _greedy_loop
from keras_attention.utils import positive_int


def greedy_search(step_fn, state, start_ids, end_id, max_length, pad_id=0):
    """Decodes a batch by taking the most likely token at every step.

    At step `t` every unfinished sequence gets `argmax(step_fn(...)[0])` (the
    lowest token id on ties); a sequence is finished after its `end_id` and
    then only emits `pad_id` with log-probability 0. On TensorFlow the loop
    is a `tf.while_loop` that stops once every sequence has finished or after
    `max_length` steps, so it runs eagerly, inside a `tf.function` (also with
    `jit_compile=True` and an unknown batch size) and in a SavedModel. On JAX
    and PyTorch it is a Python loop calling `step_fn` eagerly (under
    `torch.no_grad()` on PyTorch), with the same decisions and the same early
    stop; its outputs are tensors of that backend.

    Args:
        step_fn: `step_fn(token_ids, state, step) -> (logits, new_state)`:
            `token_ids` int32 `(batch_size,)` the previous token of each
            sequence (`start_ids` at step 0, `pad_id` for finished ones);
            `state` a nested structure (dict, tuple, list) of tensors with a
            leading batch axis (encoder outputs, masks, RNN states, KV
            caches); `step` an int32 scalar tensor, the 0-based step (the
            cache index). It returns float `logits` `(batch_size, vocab_size)`
            (unnormalised) and `new_state` with the structure, shapes and
            dtypes of `state`.
        state: the initial state, a nested structure of tensors (may be `()`).
        start_ids: int `(batch_size,)`, the start token of each sequence.
        end_id: int, the end token.
        max_length: positive int, the number of tokens to generate at most.
        pad_id: int, the token written after the end token. Defaults to `0`.

    Returns:
        A `GenerationOutput`: `tokens` int32 `(batch_size, max_length)` (start
        token excluded, end token included, `pad_id` after it), `lengths` int32
        `(batch_size,)` (up to and including the end token, `max_length` if
        none), `scores` float32 `(batch_size,)` (the log-probability of the
        tokens) and `normalized_scores` (equal to `scores`).

    Example:

    >>> import numpy as np
    >>> import tensorflow as tf
    >>> # Next-token probabilities by previous token (0 pad, 1 end, 2 start, 3, 4).
    >>> table = tf.math.log(tf.constant([[.2, .2, .2, .2, .2],
    ...                                  [.2, .2, .2, .2, .2],
    ...                                  [.0, .1, .0, .5, .4],
    ...                                  [.0, .4, .0, .3, .3],
    ...                                  [.0, .9, .0, .1, .0]]))
    >>> def step_fn(token_ids, state, step):
    ...     return tf.gather(table, token_ids), state
    >>> out = greedy_search(step_fn, (), start_ids=[2, 4], end_id=1, max_length=4)
    >>> out.tokens.numpy(), out.lengths.numpy()
    (array([[3, 1, 0, 0],
           [1, 0, 0, 0]], dtype=int32), array([2, 1], dtype=int32))
    >>> np.exp(out.scores.numpy()).round(3)
    array([0.2, 0.9], dtype=float32)

    References:
        Sutskever et al., 2014, "Sequence to Sequence Learning with Neural
        Networks" (left-to-right decoding from a trained decoder).
    """
    name = "greedy_search"
    end_id = positive_int(name, "end_id", end_id, minimum=0)
    max_length = positive_int(name, "max_length", max_length)
    pad_id = positive_int(name, "pad_id", pad_id, minimum=0)
    if keras.backend.backend() != "tensorflow":
        return _greedy_loop.greedy_search(name, step_fn, state, start_ids, end_id, max_length,
                                          pad_id)  # fmt: skip
    import tensorflow as tf  # the TensorFlow loop: imported on that backend only

    from keras_attention.generation import _common

    start_ids = _common.check_start_ids(name, start_ids)
    state = _common.check_state(name, state)

    def choose(logits, log_probs, step):
        return tf.argmax(log_probs, axis=-1, output_type=tf.int32)

    return _common.decode_rows(name, step_fn, state, start_ids, end_id, max_length, pad_id, choose)
