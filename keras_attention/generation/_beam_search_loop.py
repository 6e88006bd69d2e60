"""`beam_search` over a `step_fn` on JAX and PyTorch: `beam.beam_search`'s loop in Python.

The decisions (log-softmax, GNMT's length penalty, `top_k` with the lower index first on ties,
keeping greedy search's hypothesis, the early stop) are TensorFlow's, made in float32 NumPy on
the host; `step_fn` runs on the backend and its state is reordered with `keras.ops.take`
(but for the entries no step has changed, as TensorFlow's loop leaves them).
"""

import keras
import numpy as np

from keras_attention.generation import _greedy_loop, _options
from keras_attention.generation._beam_loop import length_penalty
from keras_attention.generation._output import GenerationOutput


def beam_search(step_fn, state, start_ids, end_id, max_length, beam_width=4,
                length_penalty=0.6, pad_id=0, keep_greedy=True):  # fmt: skip
    """`keras_attention.generation.beam_search` on JAX and PyTorch (see `beam.beam_search`).

    Example:

    >>> import numpy as np
    >>> # Next-token probabilities by previous token (0 pad, 1 end, 2 start, 3, 4).
    >>> with np.errstate(divide="ignore"):
    ...     table = np.log(np.array([[.2, .2, .2, .2, .2], [.2, .2, .2, .2, .2],
    ...                              [.0, .1, .0, .5, .4], [.0, .4, .0, .3, .3],
    ...                              [.0, .9, .0, .1, .0]], "float32"))
    >>> def step_fn(token_ids, state, step):
    ...     return table[np.asarray(token_ids)], state
    >>> out = beam_search(step_fn, (), start_ids=[2], end_id=1, max_length=4, beam_width=2)
    >>> np.asarray(out.tokens).tolist(), round(float(np.exp(np.asarray(out.scores)[0])), 3)
    ([[4, 1, 0, 0]], 0.36)
    """
    name = "beam_search"
    end_id, max_length, width, alpha, pad_id = _options.check_beam_arguments(
        name, end_id, max_length, beam_width, length_penalty, pad_id, keep_greedy
    )
    start_ids = _greedy_loop._start_ids(name, start_ids)
    state = _greedy_loop._check_state(name, state)
    batch_size = start_ids.shape[0]
    state = keras.tree.map_structure(lambda x: keras.ops.repeat(x, width, axis=0), state)
    search = _Search(batch_size, width, max_length, alpha, pad_id)
    token_ids = np.repeat(start_ids, width)
    changed = set()  # state entries some step returned anew (`_reorder_beams`)
    with _greedy_loop._inference():
        for step in range(max_length):
            if not search.go_on():
                break
            old_state = [(x, _version(x)) for x in keras.tree.flatten(state)]
            logits, state = _greedy_loop._call_step_fn(
                name, step_fn, keras.ops.convert_to_tensor(token_ids, "int32"), state,
                keras.ops.convert_to_tensor(step, "int32"), end_id,
            )  # fmt: skip
            log_probs = _greedy_loop._log_softmax(logits).reshape(batch_size, width, -1)
            rows, token_ids = search.advance(log_probs, step, end_id, keep_greedy)
            state = _reorder_beams(old_state, state, rows, changed)
    return search.best()


def _version(tensor):
    """PyTorch's count of a tensor's in-place writes (`None` on JAX, whose arrays never change)."""
    return getattr(tensor, "_version", None)


def _reorder_beams(old_flat, new_state, rows, changed):
    """`new_state` with its rows taken by `rows`, except entries no step has changed.

    TensorFlow's loop does the same (`_common.reorder_beams`): an entry every step returned as
    it came in (the same tensor: the memory, its projection, cross-attention keys and values)
    holds the same values in every beam of an example, so taking its rows would copy it.
    `old_flat` holds `(tensor, _version(tensor))` of the state the step was given: a PyTorch
    tensor the step wrote into in place (`cache[:, step] = ...`) comes back as the same object
    with a new version, and counts as changed. `changed` (the flat indices of entries some step
    returned anew) is kept across steps: an entry changed once is reordered from then on.
    """
    flat = []
    new_flat = keras.tree.flatten(new_state)
    for index, ((old, version), new) in enumerate(zip(old_flat, new_flat, strict=True)):
        if new is not old or _version(new) != version:
            changed.add(index)
        flat.append(keras.ops.take(new, rows, axis=0) if index in changed else new)
    return keras.tree.pack_sequence_as(new_state, flat)


class _Search:
    """The hypotheses of `beam_search`: tokens `(B, K, L)`, lengths, scores, finished flags."""

    def __init__(self, batch_size, width, max_length, alpha, pad_id):
        self.width, self.max_length, self.alpha, self.pad_id = width, max_length, alpha, pad_id
        self.tokens = np.full((batch_size, width, max_length), pad_id, "int32")
        self.lengths = np.zeros((batch_size, width), "int32")
        # The `width` copies of the start are one hypothesis: only the first one may expand.
        first_only = np.where(np.arange(width) == 0, 0.0, -np.inf).astype("float32")
        self.scores = np.tile(first_only, (batch_size, 1))
        self.finished = np.zeros((batch_size, width), bool)
        self.greedy_beam = np.zeros(batch_size, "int64")

    def go_on(self):
        """Whether an unfinished hypothesis could still beat the best finished one."""
        best_finished = np.max(
            np.where(self.finished, self.scores / length_penalty(self.lengths, self.alpha), -np.inf),
            axis=-1, keepdims=True,
        )  # fmt: skip
        reachable = np.where(
            self.finished, -np.inf, self.scores / length_penalty(self.max_length, self.alpha)
        )
        return bool(np.any(reachable > best_finished))

    def advance(self, log_probs, step, end_id, keep_greedy):
        """One step from `log_probs` `(B, K, V)`: the parents' flat rows and the next tokens."""
        batch_size, width, vocab_size = log_probs.shape
        # A finished hypothesis has one continuation, itself (column `end_id`, log-prob 0).
        only_end = np.where(np.arange(vocab_size) == end_id, 0.0, -np.inf).astype("float32")
        log_probs = np.where(self.finished[..., None], only_end, log_probs)
        candidates = (self.scores[..., None] + log_probs).reshape(batch_size, -1)  # (B, K * V)
        candidate_lengths = self.lengths + np.logical_not(self.finished).astype("int32")
        ranking = candidates.reshape(batch_size, width, -1) / length_penalty(
            candidate_lengths, self.alpha
        )[..., None]
        chosen = np.argsort(-ranking.reshape(batch_size, -1), axis=-1, kind="stable")[:, :width]
        if keep_greedy:
            chosen = self._keep_greedy(chosen, log_probs)
        parents, next_ids = chosen // vocab_size, (chosen % vocab_size).astype("int32")
        parent_finished = np.take_along_axis(self.finished, parents, axis=-1)
        self.scores = np.take_along_axis(candidates, chosen, axis=-1)
        self.lengths = np.take_along_axis(candidate_lengths, parents, axis=-1)
        next_ids = np.where(parent_finished, self.pad_id, next_ids).astype("int32")
        self.finished = parent_finished | (next_ids == end_id)
        self.tokens = np.take_along_axis(self.tokens, parents[..., None], axis=1)
        self.tokens[:, :, step] = next_ids
        rows = (parents + np.arange(batch_size)[:, None] * width).reshape(-1)
        return rows, next_ids.reshape(-1)

    def _keep_greedy(self, chosen, log_probs):
        """Greedy search's continuation replaces the last kept candidate if it was dropped."""
        vocab_size = log_probs.shape[-1]
        batch = np.arange(len(chosen))
        greedy_next = np.argmax(log_probs[batch, self.greedy_beam], axis=-1)
        greedy_choice = (self.greedy_beam * vocab_size + greedy_next)[:, None]  # (B, 1)
        kept = np.any(chosen == greedy_choice, axis=-1, keepdims=True)
        last = np.arange(self.width) == self.width - 1
        chosen = np.where(np.logical_not(kept) & last, greedy_choice, chosen)
        self.greedy_beam = np.argmax(chosen == greedy_choice, axis=-1)
        return chosen

    def best(self):
        """The `GenerationOutput` of each example's best hypothesis by normalised score."""
        normalized = self.scores / length_penalty(self.lengths, self.alpha)
        best = np.argmax(normalized, axis=-1)
        batch = np.arange(len(best))
        fields = (self.tokens, self.lengths, self.scores, normalized)
        return GenerationOutput(*(keras.ops.convert_to_tensor(x[batch, best]) for x in fields))
