"""Beam search with GNMT's length penalty, batched, in one `tf.while_loop`."""

import tensorflow as tf

from keras_attention.generation import _common, _options


def length_penalty(lengths, alpha):
    """GNMT's length penalty `((5 + length) / 6) ** alpha`, in float32.

    Args:
        lengths: int or float tensor of sequence lengths.
        alpha: non-negative float; `0` gives `1` (no penalty).

    Returns:
        A float32 tensor shaped like `lengths`.

    Example:

    >>> import numpy as np
    >>> np.asarray(length_penalty([1, 7], 1.0))
    array([1., 2.], dtype=float32)

    References:
        Wu et al., 2016, "Google's Neural Machine Translation System", eq. 14.
    """
    lengths = tf.cast(lengths, tf.float32)
    return tf.pow((5.0 + lengths) / 6.0, alpha)


_penalty = length_penalty  # `beam_search`'s argument `length_penalty` shadows the function


def beam_search(
    step_fn,
    state,
    start_ids,
    end_id,
    max_length,
    beam_width=4,
    length_penalty=0.6,
    pad_id=0,
    keep_greedy=True,
):
    """Decodes a batch with beam search, ranking hypotheses by a length-penalised log-probability.

    Every example keeps `beam_width` hypotheses. A hypothesis with summed
    log-probability `s` over `n` tokens (the end token counted) is ranked by
    `s / ((5 + n) / 6) ** length_penalty` (GNMT). At each step every kept
    hypothesis is extended by every token of the vocabulary, except that a
    finished one (it emitted `end_id`) has a single continuation, itself: it
    emits `pad_id` with log-probability 0 and keeps its length. The
    `beam_width` best of these candidates by that normalised score are kept,
    so finished hypotheses compete with unfinished ones by their normalised
    scores (an unfinished one with its current length). With
    `keep_greedy=True` the hypothesis greedy search follows is never dropped:
    if it is not among the best, it replaces the last kept candidate, so the
    result's normalised score is at least greedy search's (plain top-k pruning
    can fall below greedy). After `max_length` steps the kept hypothesis with
    the best normalised score is returned. The search stops earlier, with the
    same result, once no unfinished hypothesis can beat the best finished one:
    log-probabilities are `<= 0`, so an unfinished hypothesis with score `s`
    can at best reach `s / ((5 + max_length) / 6) ** length_penalty` (in
    particular it stops when every kept hypothesis has finished).
    `beam_width=1` is greedy search.

    The `beam_width` hypotheses of an example are rows of one batch of
    `batch_size * beam_width` for `step_fn` (example-major: row
    `b * beam_width + k`): `state` is repeated `beam_width` times along axis 0
    once, and every step gathers each state tensor along axis 0 by the
    hypotheses' parents, whatever its rank (RNN states, `(batch, heads,
    max_length, dim)` KV caches), except the tensors `step_fn` returns as
    they came in (the same tensor object, e.g. `{**state, "cache": new}`):
    encoder outputs, cross-attention keys and values, source masks stay the
    same in every beam of an example, so they are not copied at every step
    (1.03-1.04x at beam 5 for a Multi30K-size RNN translator,
    `benchmarks/decoder_bench.py`). The loop is a
    `tf.while_loop`, so it runs eagerly, inside a `tf.function` (also with
    `jit_compile=True` and an unknown batch size) and in a SavedModel. On JAX
    and PyTorch `keras_attention.generation.beam_search` is the Python loop
    of `_beam_search_loop` instead, with the same decisions (and the same
    tensors left unreordered).

    Args:
        step_fn: `step_fn(token_ids, state, step) -> (logits, new_state)`, as
            for `greedy_search`, called on `batch_size * beam_width` rows.
        state: the initial state of the `batch_size` examples, a nested
            structure of tensors with a leading batch axis (may be `()`).
        start_ids: int `(batch_size,)`, the start token of each example.
        end_id: int, the end token.
        max_length: positive int, the number of tokens to generate at most.
        beam_width: positive int, the hypotheses kept per example. Defaults to
            `4`.
        length_penalty: non-negative float, GNMT's `alpha`; `0` ranks by the
            log-probability alone. Defaults to `0.6`.
        pad_id: int, the token written after the end token. Defaults to `0`.
        keep_greedy: bool, keep greedy search's hypothesis in the beam so the
            result scores at least greedy. Defaults to `True`.

    Returns:
        A `GenerationOutput` for the best hypothesis of each example: `tokens`
        int32 `(batch_size, max_length)` (start token excluded, end token
        included, `pad_id` after it), `lengths` int32 `(batch_size,)`,
        `scores` float32 `(batch_size,)` (the log-probability) and
        `normalized_scores` float32 `(batch_size,)` (the length-penalised score
        it was ranked by).

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
    >>> out = beam_search(step_fn, (), start_ids=[2], end_id=1, max_length=4, beam_width=2)
    >>> out.tokens.numpy(), np.exp(out.scores.numpy()).round(3)  # greedy: [3, 1], 0.2
    (array([[4, 1, 0, 0]], dtype=int32), array([0.36], dtype=float32))

    References:
        Wu et al., 2016, "Google's Neural Machine Translation System: Bridging
        the Gap between Human and Machine Translation", section 7 (beam search,
        length normalisation).
    """
    name = "beam_search"
    _options.require_tensorflow(name, "Use greedy_search")
    end_id, max_length, width, alpha, pad_id = _options.check_beam_arguments(
        name, end_id, max_length, beam_width, length_penalty, pad_id, keep_greedy
    )
    start_ids = _common.check_start_ids(name, start_ids)
    state = _common.check_state(name, state)

    batch_size = tf.shape(start_ids)[0]
    example_offsets = tf.range(batch_size)[:, None] * width  # (B, 1); rows `b * width + k`
    state = tf.nest.map_structure(lambda x: tf.repeat(x, width, axis=0), state)
    neg_inf = tf.constant(float("-inf"), tf.float32)
    # The `width` copies of the start are one hypothesis: only the first one may expand.
    first_only = tf.where(tf.range(width) == 0, 0.0, neg_inf)  # (K,)

    changed = set()  # state entries some step returned anew (`_common.reorder_beams`)

    def body(step, token_ids, tokens, lengths, scores, finished, greedy_beam, state):
        logits, new_state = _common.call_step_fn(name, step_fn, token_ids, state, step, end_id)
        vocab_size = tf.shape(logits)[-1]
        log_probs = tf.reshape(tf.nn.log_softmax(logits), [-1, width, vocab_size])  # (B, K, V)
        # A finished hypothesis has one continuation, itself (column `end_id`, log-prob 0).
        only_end = tf.where(tf.range(vocab_size) == end_id, 0.0, neg_inf)  # (V,)
        log_probs = tf.where(finished[..., None], only_end, log_probs)
        candidate_scores = scores[..., None] + log_probs  # (B, K, V)
        candidate_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)  # (B, K)
        ranking = candidate_scores / _penalty(candidate_lengths, alpha)[..., None]
        flat_scores = tf.reshape(candidate_scores, [-1, width * vocab_size])  # (B, K * V)
        _, chosen = tf.math.top_k(tf.reshape(ranking, [-1, width * vocab_size]), k=width)
        if keep_greedy:
            chosen, greedy_beam = _keep_greedy(chosen, log_probs, greedy_beam, width)
        parents = chosen // vocab_size  # (B, K)
        next_ids = chosen % vocab_size
        parent_finished = tf.gather(finished, parents, batch_dims=1)
        scores = tf.gather(flat_scores, chosen, batch_dims=1)
        lengths = tf.gather(candidate_lengths, parents, batch_dims=1)
        next_ids = tf.where(parent_finished, pad_id, next_ids)
        finished = tf.logical_or(parent_finished, tf.equal(next_ids, end_id))
        tokens = _common.write_column(tf.gather(tokens, parents, batch_dims=1), next_ids, step)
        rows = tf.reshape(parents + example_offsets, [-1])  # (B * K,)
        new_state = _common.reorder_beams(state, new_state, rows, changed)
        next_ids = tf.reshape(next_ids, [-1])
        return step + 1, next_ids, tokens, lengths, scores, finished, greedy_beam, new_state

    def cond(step, token_ids, tokens, lengths, scores, finished, greedy_beam, state):
        # Log-probabilities are <= 0, so an unfinished hypothesis can at best keep its score
        # and reach length `max_length`: go on while one could still beat the best finished.
        best_finished = tf.reduce_max(
            tf.where(finished, scores / _penalty(lengths, alpha), neg_inf), axis=-1, keepdims=True
        )  # (B, 1)
        reachable = tf.where(finished, neg_inf, scores / _penalty(max_length, alpha))  # (B, K)
        return tf.reduce_any(reachable > best_finished)

    loop_vars = (
        tf.constant(0, tf.int32),
        tf.repeat(start_ids, width),
        tf.fill([batch_size, width, max_length], tf.constant(pad_id, tf.int32)),
        tf.zeros([batch_size, width], tf.int32),
        tf.tile(first_only[None], [batch_size, 1]),
        tf.zeros([batch_size, width], tf.bool),
        tf.zeros([batch_size], tf.int32),
        state,
    )
    invariants = tf.nest.map_structure(_common.batch_free_shape, loop_vars)
    invariants = (tf.TensorShape([]),) + invariants[1:]
    _, _, tokens, lengths, scores, _, _, _ = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants, maximum_iterations=max_length
    )
    return _best_hypotheses(tokens, lengths, scores, alpha)


def _best_hypotheses(tokens, lengths, scores, alpha):
    """The `GenerationOutput` of each example's best kept hypothesis by normalised score."""
    normalized = scores / _penalty(lengths, alpha)  # (B, K)
    best = tf.argmax(normalized, axis=-1, output_type=tf.int32)  # (B,)
    return _common.GenerationOutput(
        tf.gather(tokens, best, batch_dims=1),
        tf.gather(lengths, best, batch_dims=1),
        tf.gather(scores, best, batch_dims=1),
        tf.gather(normalized, best, batch_dims=1),
    )


def _keep_greedy(chosen, log_probs, greedy_beam, width):
    """Puts greedy search's continuation back in the beam when top-k pruning dropped it.

    `chosen` `(B, K)` flat candidate indices (`beam * V + token`), `log_probs`
    `(B, K, V)`, `greedy_beam` `(B,)` the beam greedy search follows. If
    greedy's next candidate is not among `chosen`, it replaces the last kept
    one. Returns the new `chosen` and the beam greedy search follows in it.
    """
    vocab_size = tf.shape(log_probs)[-1]
    greedy_log_probs = tf.gather(log_probs, greedy_beam, batch_dims=1)  # (B, V)
    greedy_next = tf.argmax(greedy_log_probs, axis=-1, output_type=tf.int32)
    greedy_choice = (greedy_beam * vocab_size + greedy_next)[:, None]  # (B, 1)
    kept = tf.reduce_any(tf.equal(chosen, greedy_choice), axis=-1, keepdims=True)
    last = tf.range(width) == width - 1  # (K,)
    chosen = tf.where(tf.logical_and(tf.logical_not(kept), last), greedy_choice, chosen)
    return chosen, tf.argmax(tf.equal(chosen, greedy_choice), axis=-1, output_type=tf.int32)
