"""`generate` on TensorFlow: a `tf.while_loop` (in cache-length phases under XLA), traced per model and options; `sample_next`."""

import weakref

import tensorflow as tf

from keras_attention.generation import _common, _options
from keras_attention.generation.beam import length_penalty as _penalty
from keras_attention.generation.sampling import _gumbel_argmax, _in_token_order
from keras_attention.layers.multi_head_attention import fast_decoding
from keras_attention.utils import describe, positive_int

_NAME = _options.NAME


def generate(model, token_ids, padding_mask, options, sampling, max_new_tokens, traced):
    """`keras_attention.generation.generate` on TensorFlow, after its options are checked.

    `sampling` is `(temperature, top_k, top_p, seed)` as given; `traced` is the
    table of the traced loops, `{model: {key: tf.function}}` with weak keys.
    """
    temperature, top_k, top_p, seed = sampling
    token_ids, padding_mask = _check_prompts(token_ids, padding_mask, options)
    sampling = _sampling_tensors(temperature, top_k, top_p, seed)
    sampling += (_max_new_tokens(max_new_tokens, options["max_length"]),)
    if tf.inside_function():
        return _generate(model, token_ids, padding_mask, options, *sampling)
    # The model's variables in the key: a model given LoRA weights or quantized since is traced
    # again (a function traced before would run the old layers).
    structure = tuple((v.path, str(v.dtype), tuple(v.shape)) for v in model.variables)
    key = (tuple(sorted(options.items())), structure)
    functions = traced.setdefault(model, {})
    if key not in functions:
        model_ref = weakref.ref(model)  # the function must not keep the model (the table's key)

        def run(token_ids, padding_mask, temperature, top_k, top_p, seed, max_new_tokens):
            return _generate(model_ref(), token_ids, padding_mask, options, temperature, top_k,
                             top_p, seed, max_new_tokens)  # fmt: skip

        functions[key] = tf.function(run, jit_compile=options["jit_compile"], reduce_retracing=True)
    return functions[key](token_ids, padding_mask, *sampling)


def sample_next(logits, seed, temperature=1.0, top_k=0, top_p=1.0):
    """One token per row from logits, with temperature, top-k and top-p as tensors.

    The serving-side sampler of `generate` (`sampler="sample"`): every
    argument may be a run-time scalar tensor. `temperature <= 0` is greedy;
    `top_k <= 0` keeps every token; `top_p >= 1` (or `<= 0`) keeps every
    token. The draw is Gumbel-max over the kept tokens sorted by logit, with
    Philox noise from the int32 `(2,)` `seed`.

    Args:
        logits: float32 `(batch_size, vocabulary_size)`.
        seed: int32 `(2,)`, the seed pair of the draw.
        temperature, top_k, top_p: scalars (Python or tensors).

    Returns:
        int32 `(batch_size,)` token ids.

    Example:

    >>> import tensorflow as tf
    >>> logits = tf.math.log(tf.constant([[0.1, 0.6, 0.3]]))
    >>> int(sample_next(logits, tf.constant([1, 0]), temperature=0.0)[0])  # greedy
    1
    >>> int(sample_next(logits, tf.constant([1, 0]), top_k=1)[0])
    1
    """
    _options.require_tensorflow("sample_next", "Use generate(..., sampler='greedy')")
    logits = tf.cast(logits, tf.float32)
    temperature = tf.cast(temperature, tf.float32)
    top_k = tf.cast(top_k, tf.int32)
    top_p = tf.cast(top_p, tf.float32)
    # One branch runs: greedy requests skip the sort of the vocabulary.
    return tf.cond(
        temperature > 0.0,
        lambda: _filtered_draw(logits, seed, temperature, top_k, top_p),
        lambda: tf.argmax(logits, axis=-1, output_type=tf.int32),
    )


def _filtered_draw(logits, seed, temperature, top_k, top_p):
    """`sample_next` for a positive `temperature`."""
    vocabulary_size = tf.shape(logits)[-1]
    scaled = logits / temperature
    values, indices = tf.math.top_k(scaled, k=vocabulary_size)  # sorted, lower id first on ties
    ranks = tf.range(vocabulary_size)
    keep = tf.logical_or(top_k <= 0, ranks < top_k)[None, :]  # (1, V)
    values = tf.where(keep, values, float("-inf"))
    mass_before = tf.cumsum(tf.nn.softmax(values), axis=-1, exclusive=True)
    # `top_p` outside (0, 1), NaN included, keeps every token.
    in_range = tf.logical_and(top_p > 0.0, top_p < 1.0)
    nucleus = tf.logical_or(tf.logical_not(in_range), mass_before < top_p)
    kept = tf.logical_and(tf.broadcast_to(keep, tf.shape(values)), nucleus)
    # The noise is drawn per token id, not per rank: logits that differ in rounding only (XLA
    # against eager) and swap two ranks would otherwise swap those tokens' noise.
    kept = _in_token_order(kept, indices, vocabulary_size)
    return _gumbel_argmax(tf.where(kept, scaled, float("-inf")), seed)


# -- the loops ------------------------------------------------------------------------------------


def _generate(model, token_ids, padding_mask, options, temperature, top_k, top_p, seed,
              max_new_tokens):  # fmt: skip
    max_length = options["max_length"]
    pad_id = options["pad_id"]
    width = tf.shape(token_ids)[1]
    # The output buffer and the prompt flags, padded to `max_length`.
    prompt = tf.pad(padding_mask, [[0, 0], [0, max_length - width]])
    buffer = tf.pad(token_ids, [[0, 0], [0, max_length - width]], constant_values=pad_id)
    buffer = tf.where(prompt, buffer, pad_id)  # whatever the caller left after a prompt: padding
    lengths = tf.reduce_sum(tf.cast(prompt, tf.int32), axis=1)
    start = tf.maximum(tf.reduce_min(tf.concat([lengths, [max_length]], 0)), 1)
    limits = lengths + max_new_tokens  # (B,): a row generates up to here (exclusive)
    rows = token_ids.shape[0]  # known under XLA: heads-first caches pay from 2 rows on
    if rows is not None and options["sampler"] == "beam":
        rows *= options["beam_width"]
    with fast_decoding(model, heads_first=rows != 1):  # 2-D kernels made once (same results)
        return _generate_loop(model, token_ids, options, (temperature, top_k, top_p, seed),
                              prompt, buffer, start, limits)  # fmt: skip


def _generate_loop(model, token_ids, options, sampling, prompt, buffer, start, limits):
    temperature, top_k, top_p, seed = sampling
    batch_size = tf.shape(token_ids)[0]
    windows = _cache_windows(token_ids.shape[1], options)
    cache = model.init_cache(batch_size, windows[0])
    # Prefill on the cleaned prompt: what a caller left after a prompt (any padding value) is
    # never looked up in the embedding.
    prompt_ids = buffer[:, : token_ids.shape[1] or tf.shape(token_ids)[1]]
    logits, cache = model.call_with_cache(prompt_ids, cache, 0)  # its logits are unused
    if logits.shape[-1] is not None and logits.shape[-1] != model.vocabulary_size:
        raise ValueError(
            f"{_NAME}: `model.call_with_cache` must return logits over the vocabulary (of size "
            f"{model.vocabulary_size}), e.g. a causal LM rather than its backbone. Received: "
            f"model={describe(model)} with outputs of shape {tuple(logits.shape)}"
        )
    stop_ids = tf.constant(options["stop_token_ids"] or (-1,), tf.int32)
    if options["sampler"] == "beam":
        tokens, scores = _beam_loop(model, buffer, prompt, start, limits, (cache, windows),
                                    stop_ids, options)  # fmt: skip
    else:
        seed_pair = tf.stack([seed, tf.constant(0, tf.int32)])
        if options["sampler"] == "greedy":

            def choose(logits, index):
                return tf.argmax(logits, axis=-1, output_type=tf.int32)

        else:

            def choose(logits, index):
                step_seed = tf.random.experimental.stateless_fold_in(seed_pair, index, alg="philox")
                return sample_next(logits, step_seed, temperature, top_k, top_p)

        tokens, scores = _row_loop(model, buffer, prompt, start, limits, (cache, windows),
                                   stop_ids, options, choose)  # fmt: skip
    return (tokens, scores) if options["return_scores"] else tokens


def _step(model, buffer, cache, index, options):
    """The logits `(rows, V)` of position `index` (the token at `index - 1` through the model)."""
    previous = tf.gather(buffer, index - 1, axis=1)[:, None]  # (rows, 1)
    logits, cache = model.call_with_cache(previous, cache, index - 1)
    logits = tf.cast(logits[:, 0], tf.float32)
    suppressed = options["suppress_token_ids"]
    if suppressed:
        hit = tf.reduce_any(tf.equal(tf.range(tf.shape(logits)[-1])[:, None], suppressed), axis=1)
        logits = tf.where(hit[None], float("-inf"), logits)
    return logits, cache


def _penalize(logits, seen, penalty):
    """CTRL's repetition penalty on the logits of the `seen` tokens."""
    if penalty == 1.0:
        return logits
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)


def _seen_tokens(buffer, prompt, vocabulary_size, penalty, start):
    """`(rows, V)` bool: the tokens of each prompt; `(rows, 0)` without a penalty (nothing tracked)."""
    if penalty == 1.0:
        return _zeros([tf.shape(buffer)[0], 0], tf.bool, start)
    hits = tf.one_hot(tf.where(prompt, buffer, -1), vocabulary_size, on_value=True,
                      off_value=False, dtype=tf.bool)  # fmt: skip
    return tf.reduce_any(hits, axis=1)


def _mark_seen(seen, tokens, vocabulary_size, penalty):
    if penalty == 1.0:
        return seen
    return tf.logical_or(seen, tf.one_hot(tokens, vocabulary_size, on_value=True,
                                          off_value=False, dtype=tf.bool))  # fmt: skip


def _row_loop(model, buffer, prompt, start, limits, cache, stop_ids, options, choose):
    """Greedy search and sampling: one hypothesis per row."""
    max_length, pad_id = options["max_length"], options["pad_id"]
    penalty = options["repetition_penalty"]
    vocabulary_size = model.vocabulary_size
    batch_size = tf.shape(buffer)[0]

    def body(index, buffer, done, scores, seen, cache):
        done = tf.logical_or(done, index >= limits)  # past `max_new_tokens`: ended
        logits, cache = _step(model, buffer, cache, index, options)
        logits = _penalize(logits, seen, penalty)
        chosen = choose(logits, index)
        forced = tf.gather(prompt, index, axis=1)
        emitted = tf.logical_not(tf.logical_or(forced, done))
        if options["return_scores"]:  # (a loop variable: XLA would not prune it)
            log_probs = tf.nn.log_softmax(logits)
            scores += tf.where(emitted, tf.gather(log_probs, chosen, batch_dims=1), 0.0)
        chosen = tf.where(forced, tf.gather(buffer, index, axis=1), tf.where(done, pad_id, chosen))
        buffer = _common.write_column(buffer, chosen, index)
        stopped = tf.reduce_any(tf.equal(chosen[:, None], stop_ids[None, :]), axis=1)
        done = tf.logical_or(done, tf.logical_and(emitted, stopped))
        seen = _mark_seen(seen, chosen, vocabulary_size, penalty)
        return index + 1, buffer, done, scores, seen, cache

    def cond(index, buffer, done, scores, seen, cache):
        active = tf.logical_and(tf.logical_not(done), index < limits)
        return tf.logical_and(index < max_length, tf.reduce_any(active))

    loop_vars = (
        start,
        buffer,
        _zeros([batch_size], tf.bool, start),
        _zeros([batch_size], tf.float32, start),
        _seen_tokens(buffer, prompt, vocabulary_size, penalty, start),
        cache[0],
    )
    _, buffer, _, scores, _, _ = _phased_loop(model, cond, body, loop_vars, cache[1], max_length)
    return buffer, scores


def _beam_loop(model, buffer, prompt, start, limits, cache, stop_ids, options):
    """Beam search: `beam_width` hypotheses per row, the best returned."""
    max_length, pad_id = options["max_length"], options["pad_id"]
    width, alpha = options["beam_width"], options["length_penalty"]
    penalty = options["repetition_penalty"]
    vocabulary_size = model.vocabulary_size
    batch_size = tf.shape(buffer)[0]
    offsets = tf.range(batch_size)[:, None] * width  # (B, 1): rows `b * width + k`
    neg_inf = tf.constant(float("-inf"), tf.float32)
    vocabulary = tf.range(vocabulary_size)

    def body(index, beams, scores, lengths, finished, seen, cache):
        finished = tf.logical_or(finished, (index >= limits)[:, None])  # past `max_new_tokens`
        flat = tf.reshape(beams, [-1, max_length])  # (B * K, L)
        logits, cache = _step(model, flat, cache, index, options)
        logits = _penalize(logits, seen, penalty)
        log_probs = tf.reshape(tf.nn.log_softmax(logits), [-1, width, vocabulary_size])
        forced = tf.gather(prompt, index, axis=1)  # (B,)
        forced_ids = tf.gather(beams[:, 0], index, axis=1)  # (B,)
        only_forced = tf.where(tf.equal(vocabulary[None], forced_ids[:, None]), 0.0, neg_inf)
        log_probs = tf.where(forced[:, None, None], only_forced[:, None], log_probs)
        only_pad = tf.where(tf.equal(vocabulary, pad_id), 0.0, neg_inf)
        log_probs = tf.where(finished[..., None], only_pad, log_probs)  # a finished one stays
        candidates = scores[..., None] + log_probs  # (B, K, V)
        emitted = tf.logical_and(tf.logical_not(finished), tf.logical_not(forced)[:, None])
        candidate_lengths = lengths + tf.cast(emitted, tf.int32)
        ranking = candidates / _penalty(candidate_lengths, alpha)[..., None]
        _, chosen = tf.math.top_k(tf.reshape(ranking, [-1, width * vocabulary_size]), k=width)
        parents, next_ids = chosen // vocabulary_size, chosen % vocabulary_size  # (B, K)
        scores = tf.gather(tf.reshape(candidates, [-1, width * vocabulary_size]), chosen,
                           batch_dims=1)  # fmt: skip
        lengths = tf.gather(candidate_lengths, parents, batch_dims=1)
        parent_emitted = tf.gather(emitted, parents, batch_dims=1)
        parent_finished = tf.gather(finished, parents, batch_dims=1)
        next_ids = tf.where(parent_finished, pad_id, next_ids)
        stopped = tf.reduce_any(tf.equal(next_ids[..., None], stop_ids), axis=-1)
        finished = tf.logical_or(parent_finished, tf.logical_and(parent_emitted, stopped))
        beams = _common.write_column(tf.gather(beams, parents, batch_dims=1), next_ids, index)
        rows = tf.reshape(parents + offsets, [-1])
        cache = tf.nest.map_structure(lambda x: tf.gather(x, rows, axis=0), cache)
        seen = _mark_seen(tf.gather(seen, rows, axis=0), tf.reshape(next_ids, [-1]),
                          vocabulary_size, penalty)  # fmt: skip
        return index + 1, beams, scores, lengths, finished, seen, cache

    def cond(index, beams, scores, lengths, finished, seen, cache):
        # Log-probabilities are <= 0: go on while an unfinished hypothesis could still beat the
        # best finished one (at best keeping its score up to `max_length` tokens).
        best_finished = tf.reduce_max(
            tf.where(finished, scores / _penalty(lengths, alpha), neg_inf), axis=-1, keepdims=True
        )
        ended = tf.logical_or(finished, (index >= limits)[:, None])
        reachable = tf.where(ended, neg_inf, scores / _penalty(max_length, alpha))
        return tf.logical_and(index < max_length, tf.reduce_any(reachable > best_finished))

    repeat = lambda x: tf.repeat(x, width, axis=0)  # noqa: E731
    loop_vars = (
        start,
        tf.reshape(repeat(buffer), [-1, width, max_length]),
        tf.tile(tf.where(tf.range(width) == 0, 0.0, neg_inf)[None], [batch_size, 1]),
        _zeros([batch_size, width], tf.int32, start),
        _zeros([batch_size, width], tf.bool, start),
        repeat(_seen_tokens(buffer, prompt, vocabulary_size, penalty, start)),
        tf.nest.map_structure(repeat, cache[0]),
    )
    _, beams, scores, lengths, _, _, _ = _phased_loop(model, cond, body, loop_vars, cache[1],
                                                      max_length)  # fmt: skip
    best = tf.argmax(scores / _penalty(lengths, alpha), axis=-1, output_type=tf.int32)
    return tf.gather(beams, best, batch_dims=1), tf.gather(scores, best, batch_dims=1)


_FIRST_WINDOW = 64  # the shortest cache of a phased loop (fewer phases: less to compile)


def _cache_windows(width, options):
    """The cache lengths of the loop's phases: growing powers of two, then `max_length`.

    A step attends to the whole cache it is given, so the loop runs in phases
    whose caches are only as long as the positions they reach (the caches grow
    between phases, by a copy): the steps up to position 64 read 64 slots,
    not `max_length` (up to 1/3 fewer bytes read per token at `max_length`
    144, where reading the caches bounds a batch's step). Only with
    `jit_compile` (each phase compiles its own loop body) and a prompt width
    known while tracing; otherwise one phase of `max_length`.
    """
    max_length = options["max_length"]
    if not options["jit_compile"] or width is None:
        return [max_length]
    window = max(_FIRST_WINDOW, 1 << max(width - 1, 0).bit_length())
    windows = []
    while window < max_length:
        windows.append(window)
        window *= 2
    return windows + [max_length]


def _phased_loop(model, cond, body, loop_vars, windows, max_length):
    """`tf.while_loop(cond, body, loop_vars)` in phases, one per cache length of `windows`.

    The cache is the last loop variable; the phase of window `w` runs the steps
    whose index is at most `w` (a step writes position `index - 1`), then the
    cache is padded to the next window.
    """
    for i, window in enumerate(windows):
        if i:
            cache = loop_vars[-1]
            grown = model.init_cache(1, window)  # its shapes: where the positions axis is
            cache = tf.nest.map_structure(_grow, cache, grown)
            loop_vars = (*loop_vars[:-1], cache)

        def phase_cond(index, *rest, window=window):
            return tf.logical_and(index <= window, cond(index, *rest))

        loop_vars = tf.while_loop(
            phase_cond, body, loop_vars, shape_invariants=_invariants(loop_vars),
            maximum_iterations=max_length,
        )  # fmt: skip
    return loop_vars


def _grow(cache, like):
    """`cache` zero-padded at the end of each non-batch axis to the shape of `like`."""
    paddings = [[0, 0]] + [[0, int(n) - int(o)] for o, n in zip(cache.shape[1:], like.shape[1:],
                                                                strict=True)]  # fmt: skip
    return tf.pad(cache, paddings)


def _zeros(shape, dtype, start):
    """Zeros for a loop variable, made from the run-time `start` so they are not a constant.

    A constant that a loop passes through unchanged reaches every phase's loop
    of `_phased_loop`, and from three loops on XLA fails to compile the
    function ("Cannot find body function ..._const_0", TensorFlow 2.21).
    """
    return tf.fill(shape, tf.cast(start < 0, dtype))  # `start >= 1`: zeros


def _invariants(loop_vars):
    invariants = tf.nest.map_structure(_common.batch_free_shape, loop_vars)
    return (tf.TensorShape([]),) + tuple(invariants[1:])


# -- argument checks ------------------------------------------------------------------------------


def _check_prompts(token_ids, padding_mask, options):
    token_ids = tf.convert_to_tensor(token_ids)
    if not token_ids.dtype.is_integer or token_ids.shape.rank != 2:
        raise ValueError(
            f"{_NAME}: `token_ids` must be integer ids of shape `(batch_size, prompt_length)`. "
            f"Received: token_ids.shape={token_ids.shape}, dtype={token_ids.dtype.name}"
        )
    token_ids = tf.cast(token_ids, tf.int32)
    if padding_mask is None:
        padding_mask = tf.not_equal(token_ids, options["pad_id"])
    padding_mask = tf.convert_to_tensor(padding_mask)
    if padding_mask.shape.rank != 2 or (
        padding_mask.shape.is_fully_defined()
        and token_ids.shape.is_fully_defined()
        and padding_mask.shape != token_ids.shape
    ):
        raise ValueError(
            f"{_NAME}: `padding_mask` must have the shape of `token_ids`. Received: "
            f"padding_mask.shape={padding_mask.shape}, token_ids.shape={token_ids.shape}"
        )
    padding_mask = tf.cast(padding_mask, tf.bool)
    width = token_ids.shape[1]
    if width is not None and width > options["max_length"]:
        raise ValueError(
            f"{_NAME}: the prompts are longer than `max_length`. Received: "
            f"token_ids.shape={token_ids.shape}, max_length={options['max_length']}"
        )
    if tf.executing_eagerly():
        _options.check_prompt_values(token_ids.numpy(), padding_mask.numpy(), options)
    return token_ids, padding_mask


def _max_new_tokens(max_new_tokens, max_length):
    """`max_new_tokens` as an int32 scalar tensor (`max_length` when `None`)."""
    if max_new_tokens is None:
        max_new_tokens = max_length
    elif not tf.is_tensor(max_new_tokens):
        max_new_tokens = positive_int(_NAME, "max_new_tokens", max_new_tokens)
    return tf.cast(max_new_tokens, tf.int32)


def _sampling_tensors(temperature, top_k, top_p, seed):
    """`temperature`, `top_k`, `top_p` and `seed` as scalar tensors (`seed=None`: a random one)."""
    temperature, top_k, top_p, seed = _options.check_sampling(temperature, top_k, top_p, seed)
    if seed is None:
        seed = tf.random.uniform([], minval=-(2**31), maxval=2**31 - 1, dtype=tf.int32)
    return (
        tf.cast(temperature, tf.float32),
        tf.cast(top_k, tf.int32),
        tf.cast(top_p, tf.float32),
        tf.cast(seed, tf.int32),
    )
