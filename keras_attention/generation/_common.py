"""Shared pieces of the TensorFlow decoders: argument checks, the step call, the loop."""

import tensorflow as tf

from keras_attention.generation._output import GenerationOutput


def check_start_ids(fn_name, start_ids):
    """`start_ids` as an int32 `(batch_size,)` tensor."""
    start_ids = tf.convert_to_tensor(start_ids)
    if not start_ids.dtype.is_integer:
        raise ValueError(
            f"{fn_name}: `start_ids` must be integer token ids. "
            f"Received: start_ids.dtype={start_ids.dtype.name}"
        )
    if start_ids.shape.rank != 1:
        raise ValueError(
            f"{fn_name}: `start_ids` must have shape `(batch_size,)`. "
            f"Received: start_ids.shape={start_ids.shape}"
        )
    return tf.cast(start_ids, tf.int32)


def check_state(fn_name, state):
    """`state` with every leaf as a tensor that has a leading batch axis."""
    state = tf.nest.map_structure(tf.convert_to_tensor, state)
    for leaf in tf.nest.flatten(state):
        if leaf.shape.rank == 0:
            raise ValueError(
                f"{fn_name}: every tensor in `state` needs a leading batch axis. "
                f"Received: a tensor of shape {leaf.shape}"
            )
    return state


def call_step_fn(fn_name, step_fn, token_ids, state, step, end_id):
    """Calls `step_fn`, checks what it returns; gives float32 logits and the new state."""
    outputs = step_fn(token_ids, state, step)
    if not (isinstance(outputs, tuple | list) and len(outputs) == 2):
        raise ValueError(
            f"{fn_name}: `step_fn` must return `(logits, new_state)`. Received: {outputs!r}"
        )
    logits, new_state = outputs
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 2 or not logits.dtype.is_floating:
        raise ValueError(
            f"{fn_name}: `step_fn` must return float logits of shape `(batch_size, vocab_size)`. "
            f"Received: logits.shape={logits.shape}, logits.dtype={logits.dtype.name}"
        )
    vocab_size = logits.shape[-1]
    if vocab_size is not None and end_id >= vocab_size:
        raise ValueError(
            f"{fn_name}: `end_id` must be a token of the vocabulary of size {vocab_size}. "
            f"Received: end_id={end_id}"
        )
    try:
        tf.nest.assert_same_structure(state, new_state, check_types=False)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{fn_name}: `step_fn` must return a new state with the structure of `state`. "
            f"Received: {error}"
        ) from error
    new_state = tf.nest.pack_sequence_as(
        state, [tf.convert_to_tensor(x) for x in tf.nest.flatten(new_state)]
    )
    for old, new in zip(tf.nest.flatten(state), tf.nest.flatten(new_state), strict=True):
        if old.dtype != new.dtype:
            raise ValueError(
                f"{fn_name}: `step_fn` must keep the dtypes of `state`. "
                f"Received: {new.dtype.name} for a {old.dtype.name} state tensor"
            )
    return tf.cast(logits, tf.float32), new_state


def reorder_beams(state, new_state, rows, changed):
    """`new_state` with its rows gathered by `rows`, except entries no step has changed.

    An entry every step so far returned as it came in (the same tensor: the
    memory, its projection, a Transformer's cross-attention keys and values,
    the source mask) holds the same values in every beam of an example: the
    state starts as `width` copies of each example's. Gathering it within its
    example would copy it unchanged at every step, so it is left as it is.
    `changed` is a set of the flat indices of entries some step returned
    anew, kept by the caller across steps (a traced loop traces its body
    once; an eager loop calls it at every step, and an entry changed once is
    gathered from then on).
    """
    flat = []
    for index, (old, new) in enumerate(
        zip(tf.nest.flatten(state), tf.nest.flatten(new_state), strict=True)
    ):
        if new is not old:
            changed.add(index)
        flat.append(tf.gather(new, rows, axis=0) if index in changed else new)
    return tf.nest.pack_sequence_as(new_state, flat)


def write_column(buffer, values, step):
    """`buffer[..., step] = values` for a `(..., max_length)` buffer (a select, XLA-friendly)."""
    hit = tf.equal(tf.range(tf.shape(buffer)[-1]), step)  # (max_length,)
    return tf.where(hit, values[..., None], buffer)


def batch_free_shape(tensor):
    """The shape invariant of a loop variable: its shape with any batch size."""
    if tensor.shape.rank is None:
        return tf.TensorShape(None)
    return tf.TensorShape([None]).concatenate(tensor.shape[1:])


def decode_rows(fn_name, step_fn, state, start_ids, end_id, max_length, pad_id, choose):
    """One hypothesis per row: greedy search and sampling.

    `choose(logits, log_probs, step)` picks the next token of every row from the
    float32 logits `(batch_size, vocab_size)` (and their log-softmax).
    """
    batch_size = tf.shape(start_ids)[0]

    def body(step, token_ids, tokens, lengths, scores, finished, state):
        logits, new_state = call_step_fn(fn_name, step_fn, token_ids, state, step, end_id)
        log_probs = tf.nn.log_softmax(logits)  # (B, V)
        next_ids = tf.cast(choose(logits, log_probs, step), tf.int32)
        next_log_probs = tf.gather(log_probs, next_ids, batch_dims=1)  # (B,)
        # A finished row only emits `pad_id`, with log-probability 0.
        next_ids = tf.where(finished, pad_id, next_ids)
        scores += tf.where(finished, 0.0, next_log_probs)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        finished = tf.logical_or(finished, tf.equal(next_ids, end_id))
        tokens = write_column(tokens, next_ids, step)
        return step + 1, next_ids, tokens, lengths, scores, finished, new_state

    def cond(step, token_ids, tokens, lengths, scores, finished, state):
        return tf.reduce_any(tf.logical_not(finished))

    loop_vars = (
        tf.constant(0, tf.int32),
        start_ids,
        tf.fill([batch_size, max_length], tf.constant(pad_id, tf.int32)),
        tf.zeros([batch_size], tf.int32),
        tf.zeros([batch_size], tf.float32),
        tf.zeros([batch_size], tf.bool),
        state,
    )
    invariants = tf.nest.map_structure(batch_free_shape, loop_vars)
    invariants = (tf.TensorShape([]),) + invariants[1:]
    _, _, tokens, lengths, scores, finished, _ = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=max_length
    )
    return GenerationOutput(tokens, lengths, scores, scores)
