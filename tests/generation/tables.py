"""Tiny step functions built from logits tables, and NumPy references of the decoders.

A `TableModel` gives the logits of row `b` at step `t` after previous token `y` as
`tables[b, t, y]`, plus, with `history=True`, `sum_p mix[p, token_p]` over the tokens fed so far
(the start token included). That history lives in the state as a rank-4 tensor
`(batch, heads, max_length, dim)` like a KV cache, so a decoder that gathers the state wrongly
gives logits (and scores) that the NumPy reference does not reproduce.
"""

import numpy as np
import tensorflow as tf

PAD, END, START = 0, 1, 2


def log_softmax(x):
    x = np.asarray(x, "float64")
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def gnmt_penalty(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


class TableModel:
    """`step_fn` over logits tables `(batch, max_length, vocab, vocab)`, optionally with history."""

    def __init__(self, tables, history=False, seed=0, heads=2, dim=3):
        self.tables = np.asarray(tables, "float32")
        self.batch, self.max_length, self.vocab, _ = self.tables.shape
        self.mix = None
        if history:
            rng = np.random.default_rng(seed + 1000)
            self.mix = rng.normal(0, 1.5, (self.max_length, self.vocab, self.vocab))
            self.mix = self.mix.astype("float32")
        self.heads, self.dim = heads, dim
        self.calls = 0

    def initial_state(self, rows=None):
        rows = np.arange(self.batch) if rows is None else np.asarray(rows)
        state = {"row": rows.astype("int32")}
        if self.mix is not None:
            shape = (len(rows), self.heads, self.max_length, self.dim)
            state["history"] = np.full(shape, -1.0, "float32")  # -1: nothing written yet
        return state

    def step_fn(self, token_ids, state, step):
        self.calls += 1
        tables = tf.constant(self.tables)
        steps = tf.fill(tf.shape(token_ids), step)
        logits = tf.gather_nd(tables, tf.stack([state["row"], steps, token_ids], axis=-1))
        new_state = dict(state)
        if self.mix is not None:
            written = tf.equal(tf.range(self.max_length), step)[None, None, :, None]
            value = tf.cast(token_ids, tf.float32)[:, None, None, None]
            history = tf.where(written, value, state["history"])  # (B, heads, L, dim)
            fed = tf.one_hot(tf.cast(history[:, 0, :, 0], tf.int32), self.vocab)  # (B, L, V)
            logits += tf.einsum("blv,lvw->bw", fed, tf.constant(self.mix))
            new_state["history"] = history
        return logits, new_state

    def log_probs(self, row, prefix):
        """Next-token log-probabilities after `prefix` (start token first), in float64."""
        step = len(prefix) - 1
        logits = self.tables[row, step, prefix[-1]].astype("float64")
        if self.mix is not None:
            logits = logits + sum(self.mix[p, token] for p, token in enumerate(prefix))
        return log_softmax(logits)

    def sequence_score(self, row, start, tokens, end=END):
        """(log-probability, length) of generated `tokens` up to and including `end`."""
        prefix, total = [start], 0.0
        for token in tokens:
            total += self.log_probs(row, prefix)[token]
            prefix.append(int(token))
            if token == end:
                break
        return total, len(prefix) - 1

    def greedy(self, row, start, end=END):
        """The greedy tokens (padded to `max_length`), log-probability and length."""
        prefix, total = [start], 0.0
        for _ in range(self.max_length):
            log_probs = self.log_probs(row, prefix)
            token = int(np.argmax(log_probs))
            total += log_probs[token]
            prefix.append(token)
            if token == end:
                break
        tokens = prefix[1:]
        return tokens + [PAD] * (self.max_length - len(tokens)), total, len(tokens)

    def brute_force(self, row, start, alpha, end=END):
        """The best sequence by `log-prob / gnmt_penalty(length, alpha)` over all sequences.

        Returns (tokens padded to `max_length`, log-probability, length, normalised score).
        """
        best = None
        stack = [([start], 0.0)]
        while stack:
            prefix, total = stack.pop()
            length = len(prefix) - 1
            if length == self.max_length or (length and prefix[-1] == end):
                normalized = total / gnmt_penalty(length, alpha)
                if best is None or normalized > best[3]:
                    tokens = prefix[1:] + [PAD] * (self.max_length - length)
                    best = (tokens, total, length, normalized)
                continue
            log_probs = self.log_probs(row, prefix)
            stack.extend((prefix + [v], total + log_probs[v]) for v in range(self.vocab))
        return best


def hypothesis_count(vocab, max_length):
    """How many hypotheses a beam holds at most: every unfinished one and every finished one."""
    return (vocab - 1) ** max_length + sum((vocab - 1) ** (t - 1) for t in range(1, max_length + 1))


def random_tables(seed, batch=3, max_length=4, vocab=5, spread=False):
    """Random logits; `spread=True` also gives every row its own temperature in `[0, 6)`."""
    rng = np.random.default_rng(seed)
    tables = rng.normal(0, 1.5, (batch, max_length, vocab, vocab))
    if spread:
        tables *= rng.uniform(0, 6, (batch, max_length, vocab, 1))
    return tables.astype("float32")


def numpy(output):
    """A `GenerationOutput` as a dict of NumPy arrays."""
    return {name: np.asarray(value) for name, value in output._asdict().items()}
