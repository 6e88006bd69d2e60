"""Sampling with temperature, top-k and top-p (nucleus) filtering."""

import tensorflow as tf

from keras_attention.generation import _common, _options


def sample(
    step_fn,
    state,
    start_ids,
    end_id,
    max_length,
    top_k=None,
    top_p=None,
    temperature=1.0,
    seed=None,
    pad_id=0,
):
    """Decodes a batch by sampling each next token, optionally from the top-k / top-p tokens only.

    At each step the logits are divided by `temperature`; `top_k` keeps the
    `top_k` most likely tokens; `top_p` then keeps the smallest set of the
    most likely remaining tokens whose probability (renormalised over the
    tokens `top_k` kept) reaches `top_p`, i.e. every token whose more likely
    tokens have less than `top_p` mass together; the next token is drawn from
    the kept tokens with their renormalised probabilities. Ties are broken
    towards the lower token id, so `top_k=1` (or a tiny `top_p`) is greedy
    search. A sequence is finished after its `end_id` and then only emits
    `pad_id`. The loop is a `tf.while_loop` (see `greedy_search`); on JAX and
    PyTorch `keras_attention.generation.sample` is the Python loop of
    `_greedy_loop.sample` instead, the same filtering with NumPy's Philox
    draws (a seed reproduces its tokens there, not TensorFlow's).

    Draws are stateless (Philox, Gumbel-max): step `t` uses the seed pair
    `fold_in((seed, 0), t)`, so a given `seed` reproduces the same tokens (for
    the same batch) eagerly, in a `tf.function`, with XLA and in a SavedModel.
    `seed=None` draws a new seed pair at every call.

    Args:
        step_fn: `step_fn(token_ids, state, step) -> (logits, new_state)`, as
            for `greedy_search`.
        state: the initial state, a nested structure of tensors with a leading
            batch axis (may be `()`).
        start_ids: int `(batch_size,)`, the start token of each sequence.
        end_id: int, the end token.
        max_length: positive int, the number of tokens to generate at most.
        top_k: optional positive int, sample among the `top_k` most likely
            tokens only. Defaults to `None` (all tokens).
        top_p: optional float in `(0, 1]`, nucleus sampling. Defaults to
            `None` (no nucleus filtering; `1.0` is the same).
        temperature: positive float dividing the logits before filtering and
            sampling. Defaults to `1.0`.
        seed: optional int, makes the draws reproducible. Defaults to `None`.
        pad_id: int, the token written after the end token. Defaults to `0`.

    Returns:
        A `GenerationOutput`: `tokens` int32 `(batch_size, max_length)` (start
        token excluded, end token included, `pad_id` after it), `lengths` int32
        `(batch_size,)`, `scores` float32 `(batch_size,)` (the log-probability
        of the tokens under the model, without temperature or filtering) and
        `normalized_scores` (equal to `scores`).

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
    >>> out = sample(step_fn, (), start_ids=[2] * 1000, end_id=1, max_length=6,
    ...              top_p=0.8, seed=7)
    >>> np.unique(out.tokens.numpy()[:, 0])  # the nucleus of .5, .4, .1 at p=0.8
    array([3, 4], dtype=int32)
    >>> bool(np.array_equal(out.tokens.numpy(), sample(
    ...     step_fn, (), [2] * 1000, 1, 6, top_p=0.8, seed=7).tokens.numpy()))
    True

    References:
        Fan et al., 2018, "Hierarchical Neural Story Generation" (top-k);
        Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration"
        (top-p, nucleus sampling).
    """
    name = "sample"
    _options.require_tensorflow(name, "Use greedy_search")
    end_id, max_length, top_k, top_p, temperature, seed, pad_id = _options.check_sample_arguments(
        name, end_id, max_length, top_k, top_p, temperature, seed, pad_id
    )
    start_ids = _common.check_start_ids(name, start_ids)
    state = _common.check_state(name, state)

    if seed is None:
        base_seed = tf.random.uniform([2], minval=-(2**31), maxval=2**31 - 1, dtype=tf.int32)
    else:
        base_seed = tf.constant([seed, 0], tf.int32)

    def choose(logits, log_probs, step):
        step_seed = tf.random.experimental.stateless_fold_in(base_seed, step, alg="philox")
        return _sample_logits(logits, step_seed, top_k, top_p, temperature)

    return _common.decode_rows(name, step_fn, state, start_ids, end_id, max_length, pad_id, choose)


def _sample_logits(logits, seed, top_k=None, top_p=None, temperature=1.0):
    """Draws one token per row from temperature-scaled, top-k / top-p filtered logits.

    Args:
        logits: float32 `(batch_size, vocab_size)`.
        seed: int32 `(2,)` seed pair of the stateless draw.
        top_k, top_p, temperature: as for `sample` (already checked).

    Returns:
        int32 `(batch_size,)` token ids.
    """
    logits = logits / temperature
    if top_k is None and top_p is None:
        return _gumbel_argmax(logits, seed)
    vocab_size = logits.shape[-1]
    if vocab_size is None:  # XLA folds `k` to a constant: it sees static shapes
        vocab_size = tf.shape(logits)[-1]
        k = vocab_size if top_k is None else tf.minimum(top_k, vocab_size)
    else:
        k = vocab_size if top_k is None else min(top_k, vocab_size)
    values, indices = tf.math.top_k(logits, k=k)  # (B, k), sorted, lower id first on ties
    kept = tf.ones_like(indices, tf.bool)
    if top_p is not None:
        probs = tf.nn.softmax(values)
        mass_before = tf.cumsum(probs, axis=-1, exclusive=True)  # 0 for the most likely
        kept = mass_before < top_p
    # The noise is drawn per token id, as without a filter: logits that differ in rounding only
    # (XLA against eager) and swap two ranks would otherwise swap those tokens' noise.
    kept = _in_token_order(kept, indices, tf.shape(logits)[-1])
    return _gumbel_argmax(tf.where(kept, logits, float("-inf")), seed)


def _in_token_order(kept, indices, vocabulary_size):
    """`kept`, a bool `(B, k)` per rank, as a bool `(B, vocabulary_size)` per token id:
    `indices` are the ranked ids (`tf.math.top_k`'s); ids outside the top k are not kept."""
    shape = tf.shape(indices)
    rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
    where = tf.stack([rows, indices], axis=-1)
    counts = tf.scatter_nd(where, tf.cast(kept, tf.int32), [shape[0], vocabulary_size])
    return counts > 0


def _gumbel_argmax(logits, seed):
    """One draw per row from `softmax(logits)`: `argmax(logits + Gumbel noise)`.

    The noise comes from Philox integers turned into floats here, not from
    `stateless_categorical` or float `stateless_uniform`, whose XLA kernels
    draw differently from the TensorFlow ones: this way a seed gives the same
    tokens with and without `jit_compile`.
    """
    bits = tf.random.stateless_uniform(
        tf.shape(logits), seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # 23 bits: `(m + 0.5) * 2**-23` is exact in float32, so the uniform is in (0, 1), never 0
    # or 1, and the noise is finite. (With 24 bits, `2**24 - 0.5` rounds to `2**24`: a uniform
    # of 1, an infinite noise, once in 2**24 draws: a token drawn whatever its probability, and
    # NaN beside a logit of -inf.)
    mantissa = tf.cast(tf.bitwise.right_shift(bits, tf.constant(9, tf.uint32)), tf.float32)
    uniform = (mantissa + 0.5) * (2.0**-23)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
