"""`generate(sampler="beam")` on JAX and PyTorch: TensorFlow's `_beam_loop` as a Python loop.

The decisions are made in NumPy on the host, as in `_greedy_loop`; only the model step and the
reordering of the KV caches (`keras.ops.take` along the batch axis) run on the backend. The
arithmetic is TensorFlow's (float32 log-softmax, scores, GNMT's length penalty, `top_k` with the
lower index first on ties), so both backends keep the same hypotheses.
"""

import keras
import numpy as np


def length_penalty(lengths, alpha):
    """GNMT's `((5 + length) / 6) ** alpha` in float32 (`generation.length_penalty` in NumPy)."""
    lengths = np.asarray(lengths, "float32")
    return np.power((np.float32(5.0) + lengths) / np.float32(6.0), np.float32(alpha))


def beam_loop(call, buffer, prompt, bounds, cache, options):
    """Beam search from `buffer` after the prefill: `(tokens, scores)` in NumPy, the best beams."""
    start, limits = bounds
    max_length, pad_id = options["max_length"], options["pad_id"]
    width, alpha = options["beam_width"], options["length_penalty"]
    vocabulary_size = options["vocabulary_size"]
    batch_size = buffer.shape[0]
    beams = np.repeat(buffer, width, axis=0).reshape(batch_size, width, max_length)
    scores = np.tile(np.where(np.arange(width) == 0, 0.0, -np.inf).astype("float32"), (batch_size, 1))
    lengths = np.zeros((batch_size, width), "int32")
    finished = np.zeros((batch_size, width), bool)
    seen = _seen(np.repeat(buffer, width, axis=0), np.repeat(prompt, width, axis=0), options)
    cache = keras.tree.map_structure(lambda x: keras.ops.repeat(x, width, axis=0), cache)
    step = _Step(call, options, width)
    for index in range(start, max_length):
        if not _go_on(index, scores, lengths, finished, limits, options):
            break
        finished = finished | (index >= limits)[:, None]  # past `max_new_tokens`: ended
        log_probs, cache = step(beams, seen, cache, index)  # (B, K, V)
        forced = prompt[:, index]  # (B,)
        only_forced = np.where(np.arange(vocabulary_size)[None] == beams[:, 0, index][:, None],
                               0.0, -np.inf).astype("float32")  # fmt: skip
        log_probs = np.where(forced[:, None, None], only_forced[:, None], log_probs)
        only_pad = np.where(np.arange(vocabulary_size) == pad_id, 0.0, -np.inf).astype("float32")
        log_probs = np.where(finished[..., None], only_pad, log_probs)  # a finished one stays
        candidates = scores[..., None] + log_probs  # (B, K, V)
        emitted = np.logical_not(finished) & np.logical_not(forced)[:, None]
        candidate_lengths = lengths + emitted.astype("int32")
        ranking = (candidates / length_penalty(candidate_lengths, alpha)[..., None]).reshape(
            batch_size, width * vocabulary_size
        )
        chosen = np.argsort(-ranking, axis=-1, kind="stable")[:, :width]  # lower index on ties
        parents, next_ids = chosen // vocabulary_size, (chosen % vocabulary_size).astype("int32")
        scores = np.take_along_axis(candidates.reshape(batch_size, -1), chosen, axis=-1)
        lengths = np.take_along_axis(candidate_lengths, parents, axis=-1)
        parent_emitted = np.take_along_axis(emitted, parents, axis=-1)
        parent_finished = np.take_along_axis(finished, parents, axis=-1)
        next_ids = np.where(parent_finished, pad_id, next_ids).astype("int32")
        stopped = np.isin(next_ids, np.asarray(options["stop_token_ids"], "int32"))
        finished = parent_finished | (parent_emitted & stopped)
        beams = np.take_along_axis(beams, parents[..., None], axis=1)
        beams[:, :, index] = next_ids
        rows = (parents + np.arange(batch_size)[:, None] * width).reshape(-1)
        cache = keras.tree.map_structure(lambda x, r=rows: keras.ops.take(x, r, axis=0), cache)
        seen = seen[rows]
        seen[np.arange(len(rows)), next_ids.reshape(-1)] = True
    best = np.argmax(scores / length_penalty(lengths, alpha), axis=-1)
    picked = np.arange(batch_size)
    return beams[picked, best], scores[picked, best]


class _Step:
    """The model's log-probabilities `(B, K, V)` at `index`, suppressed tokens and penalty applied."""

    def __init__(self, call, options, width):
        self.call, self.options, self.width = call, options, width

    def __call__(self, beams, seen, cache, index):
        batch_size, width, max_length = beams.shape
        flat = beams.reshape(batch_size * width, max_length)
        logits, cache = self.call(flat[:, index - 1 : index], cache, index - 1)
        logits = np.array(keras.ops.convert_to_numpy(logits[:, 0]), "float32")  # (B * K, V)
        logits[:, list(self.options["suppress_token_ids"])] = -np.inf
        penalty = self.options["repetition_penalty"]
        if penalty != 1.0:  # CTRL's repetition penalty on the tokens seen
            penalized = np.where(logits > 0, logits / np.float32(penalty),
                                 logits * np.float32(penalty))  # fmt: skip
            logits = np.where(seen, penalized, logits)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return log_probs.reshape(batch_size, width, -1), cache


def _seen(buffer, prompt, options):
    """`(rows, V)` bool: the prompt tokens of each row."""
    seen = np.zeros((buffer.shape[0], options["vocabulary_size"]), bool)
    seen[np.nonzero(prompt)[0], buffer[prompt]] = True
    return seen


def _go_on(index, scores, lengths, finished, limits, options):
    """TensorFlow's loop condition: an unfinished hypothesis could still beat the best finished."""
    max_length, alpha = options["max_length"], options["length_penalty"]
    best_finished = np.max(
        np.where(finished, scores / length_penalty(lengths, alpha), -np.inf),
        axis=-1, keepdims=True,
    )  # fmt: skip
    ended = finished | (index >= limits)[:, None]
    reachable = np.where(ended, -np.inf, scores / length_penalty(max_length, alpha))
    return index < max_length and bool(np.any(reachable > best_finished))
