"""Streaming generation for `CausalLM.stream`: one compiled step per token, text as it comes."""

import numpy as np
import tensorflow as tf

from keras_attention.generation import sample_next


def stream_tokens(task, prompt, options):
    """Yields the text each new token adds to the continuation of `prompt`.

    The same decisions as `keras_attention.generation.generate` on a batch of
    one with the same options: the prompt framed and cut as `CausalLM.generate`
    does, prefilled once, then one cached step per token whose draw uses the
    seed pair `fold_in((seed, 0), position)`; `[END]` stops, the task's
    never-generated tokens are masked. A piece is yielded when the text
    decoded so far extends the text already yielded (word pieces join, and
    punctuation may attach to the word before it).

    Args:
        task: a `CausalLM`.
        prompt: `str`.
        options: the task's checked generation options (`_generation_options`).
    """
    model = task.backbone
    token_ids, padding_mask, _, status = task._prompts(
        tf.constant([prompt]), tf.constant(options["max_new_tokens"])
    )
    if status.numpy()[0] == b"invalid_utf8":  # `generate` answers "" too
        return
    length = int(np.sum(padding_mask.numpy()))
    token_ids = token_ids[:, :length]
    step = _step_function(task)
    cache = model.init_cache(1, task.max_length)
    if length > 1:
        cache = step.prefill(token_ids[:, : length - 1], cache)
    seed = new_seed() if options["seed"] is None else options["seed"]
    temperature = 0.0 if options["sampler"] == "greedy" else options["temperature"]
    arguments = (
        tf.constant([seed, 0], tf.int32),
        tf.constant(temperature, tf.float32),
        tf.constant(options["top_k"], tf.int32),
        tf.constant(options["top_p"], tf.float32),
    )
    token = token_ids[:, length - 1 :]
    generated, emitted = [], ""
    for position in range(length, min(length + options["max_new_tokens"], task.max_length)):
        token, cache = step.decode(token, cache, tf.constant(position, tf.int32), *arguments)
        if int(token[0, 0]) == task.preprocessor.end_id:
            break
        generated.append(int(token[0, 0]))
        text = task.preprocessor.detokenize(tf.constant([generated], tf.int32))[0]
        text = text.numpy().decode("utf-8")
        if text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted) :]
            emitted = text


def new_seed():
    """A random int32 seed (for a sampling call given no seed)."""
    return int(np.random.default_rng().integers(-(2**31), 2**31 - 1))


class _Step:
    """The traced prefill and decode step of a task's model (kept on the task)."""

    def __init__(self, task):
        model = task.backbone
        suppressed = np.zeros([model.vocabulary_size], "float32")
        suppressed[list(task.never_generated_ids)] = -np.inf
        suppressed = tf.constant(suppressed)

        def prefill(token_ids, cache):
            return model.call_with_cache(token_ids, cache, 0)[1]

        def decode(token, cache, position, seed_pair, temperature, top_k, top_p):
            logits, cache = model.call_with_cache(token, cache, position - 1)
            logits = tf.cast(logits[:, -1], tf.float32) + suppressed
            step_seed = tf.random.experimental.stateless_fold_in(seed_pair, position, alg="philox")
            chosen = sample_next(logits, step_seed, temperature, top_k, top_p)
            return chosen[:, None], cache

        self.prefill = tf.function(prefill, reduce_retracing=True)
        self.decode = tf.function(decode, reduce_retracing=True)


def _step_function(task):
    if task._step_function is None:
        task._step_function = _Step(task)
    return task._step_function
