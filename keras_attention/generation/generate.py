"""Generation from ragged prompts with a causal LM's KV cache: greedy, sampling, beam search.

`generate` checks its options here, on every backend, then runs the
TensorFlow loops of `_generate_tf` (TensorFlow is imported there, and only on
that backend) or the Python loops of `_greedy_loop` and `_beam_loop` on JAX and
PyTorch.
"""

import weakref

import keras

from keras_attention.generation import _greedy_loop, _options

SAMPLERS = ("greedy", "sample", "beam")
# The traced (TensorFlow) or compiled (JAX) functions of each model, by their static options
# (dropped with the model).
_FUNCTIONS = weakref.WeakKeyDictionary()


def generate(
    model,
    token_ids,
    padding_mask=None,
    max_length=None,
    sampler="greedy",
    *,
    max_new_tokens=None,
    stop_token_ids=(),
    suppress_token_ids=(),
    pad_id=0,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    seed=None,
    beam_width=4,
    length_penalty=0.6,
    repetition_penalty=1.0,
    jit_compile=True,
    return_scores=False,
):
    """Continues a batch of ragged prompts with a causal LM, in one traced loop.

    The prompts are left-aligned rows of `token_ids` (`padding_mask` marks
    their tokens, real tokens first); each row is continued up to
    `max_length` tokens in all. The prompts go through the model in one pass
    (prefill, filling the KV caches); then one position per step, from the
    end of the shortest prompt: at position `t` the token at `t - 1` goes
    through the model against the caches (one decode step, the cache written
    at `t - 1`), and the next token is chosen, except that a row still
    inside its prompt keeps its prompt token. A row ends after one of
    `stop_token_ids` (it is kept) and is filled with `pad_id` after it; the
    loop stops when every row has ended or at `max_length`.

    Samplers (all seeded, all in the one loop):

    - `"greedy"`: the most likely token (the lowest id on ties).
    - `"sample"`: logits divided by `temperature`, then only the `top_k` most
      likely tokens (`0`: all), then only the smallest set of those whose
      probability reaches `top_p` (`1.0`: all), then a draw (Gumbel-max on
      Philox: the same `seed`, the same tokens, eagerly, traced, with XLA and
      in a SavedModel; on JAX and PyTorch the draws come from NumPy's Philox
      generator on the host: the same `seed` gives the same tokens on that
      backend, other tokens than TensorFlow's). `temperature=0` is greedy.
    - `"beam"`: beam search over `beam_width` hypotheses per row, ranked by
      the log-probability of the generated tokens divided by GNMT's length
      penalty `((5 + n) / 6) ** length_penalty` (`n` generated tokens, the
      stop token counted); the best hypothesis is returned. `beam_width=1`
      is greedy.

    `repetition_penalty` (CTRL, Keskar et al. 2019) first divides the
    positive logits (multiplies the negative ones) of every token already in
    the row, prompt included, by it (`1.0`: off).

    On TensorFlow the loop is a `tf.while_loop` inside a `tf.function` kept
    per model and options (compiled with XLA when `jit_compile`); inside a
    caller's `tf.function` (a SavedModel signature) it is traced there
    instead. With XLA and a `max_length` over 64 it runs in phases whose
    caches are 64, 128, 256, ... slots long, then `max_length` (the caches
    grow between phases): a step reads only the slots its phase can reach
    (batch 8, 144 positions: 1.07x tokens/s; each phase compiles its own
    loop body, so the first call takes longer). On JAX and PyTorch every sampler runs in a Python loop over the
    same positions that stops
    when every row has ended, its step compiled with `jax.jit` on JAX when
    `jit_compile` (and run under `torch.no_grad()` on PyTorch); greedy and
    beam search make the same decisions as the TensorFlow loops. The cached loop gives the
    tokens of the uncached model: no position attends to a position after
    it, and every cache slot a step reads was written by the prefill of a
    prompt token or by an earlier step.

    Args:
        model: a causal LM with `init_cache(batch_size, max_length)` and
            `call_with_cache(token_ids, cache, index) -> (logits, cache)`
            (a `GPTCausalLM`).
        token_ids: int `(batch_size, prompt_length)`, the prompts, left
            aligned; every row needs at least one token (a start token).
        padding_mask: bool or int `(batch_size, prompt_length)`, `True` / `1`
            for prompt tokens. Defaults to `token_ids != pad_id`.
        max_length: positive int at least `prompt_length`, the length of the
            output rows (prompt included); at most the model's positions.
        sampler: `"greedy"`, `"sample"` or `"beam"`. Defaults to
            `"greedy"`.
        max_new_tokens: optional positive int (or scalar int tensor): each
            row generates at most this many tokens after its own prompt.
            Defaults to `None` (up to `max_length`).
        stop_token_ids: ints, the tokens that end a row. Defaults to `()`
            (rows run to `max_length`).
        suppress_token_ids: ints, tokens never generated (their logits are
            set to `-inf`; prompt tokens are kept as they are). Defaults to
            `()`.
        pad_id: int, written after a row's stop token. Defaults to `0`.
        temperature, top_k, top_p, seed: for `"sample"` (ints / floats, or
            scalar tensors). `seed=None` draws a new seed at each call.
        beam_width, length_penalty: for `"beam"`. Default to `4`, `0.6`.
        repetition_penalty: float `>= 1`. Defaults to `1.0`.
        jit_compile: bool, compile the loop with XLA (on JAX: the step; on
            PyTorch it is ignored). Defaults to `True`.
        return_scores: bool, also return the log-probability of each row's
            generated tokens (float32 `(batch_size,)`) under the model, after
            `suppress_token_ids` and the repetition penalty: for `"sample"`,
            the model's likelihood of the text it drew, not the probability
            of the draw under `temperature`, `top_k` and `top_p`; for
            `"beam"`, the returned beam's sum before the length penalty.
            Defaults to `False`.

    Returns:
        int32 `(batch_size, max_length)`, a tensor of the Keras backend: the
        prompt, the generated tokens (the stop token included), then
        `pad_id`; with `return_scores`, `(token_ids, scores)`.

    Example:

    >>> import numpy as np
    >>> from keras_attention.models import gpt_causal_lm
    >>> model = gpt_causal_lm(30, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
    ...                       max_sequence_length=12)
    >>> prompts = np.array([[2, 7, 8, 9], [2, 5, 0, 0]])  # ragged: 4 and 2 tokens
    >>> out = generate(model, prompts, prompts != 0, max_length=8, jit_compile=False).numpy()
    >>> out.shape, out[0, :4].tolist(), out[1, :2].tolist()
    ((2, 8), [2, 7, 8, 9], [2, 5])
    >>> beam = generate(model, prompts, prompts != 0, max_length=8, sampler="beam", beam_width=1,
    ...                 jit_compile=False)
    >>> bool(np.array_equal(beam, out))  # beam width 1 is greedy
    True
    """
    options = _options.check_options(
        model, max_length, sampler, stop_token_ids, suppress_token_ids, pad_id, beam_width,
        length_penalty, repetition_penalty, jit_compile, return_scores, SAMPLERS,
    )  # fmt: skip
    sampling = (temperature, top_k, top_p, seed)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from keras_attention.generation import _generate_tf  # imports TensorFlow

        return _generate_tf.generate(
            model, token_ids, padding_mask, options, sampling, max_new_tokens, _FUNCTIONS
        )
    sampling = _options.check_sampling(*sampling)
    return _greedy_loop.generate(model, token_ids, padding_mask, options, max_new_tokens,
                                 _FUNCTIONS, sampling)  # fmt: skip


def __getattr__(name):
    # `sample_next` lived here; it is TensorFlow code, imported on first use.
    if name == "sample_next":
        from keras_attention.generation import _generate_tf

        return _generate_tf.sample_next
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
