"""NumPy implementations of the score functions of the seed table, for the layer tests."""

import numpy as np


def softmax(scores, mask=None):
    """Masked softmax over the last axis; fully masked rows give zeros."""
    scores = scores.astype("float64")
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(scores - top)
    if mask is not None:
        e = np.where(mask, e, 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def concat_scores(s, h, W, v, b=None):
    """vᵀ tanh(W [s; h] + b), literally concatenating every (s_j, h_i) pair."""
    B, Tq, _ = s.shape
    Tk = h.shape[1]
    pairs = np.concatenate(
        [
            np.broadcast_to(s[:, :, None, :], (B, Tq, Tk, s.shape[-1])),
            np.broadcast_to(h[:, None, :, :], (B, Tq, Tk, h.shape[-1])),
        ],
        axis=-1,
    )
    hidden = pairs @ W + (0.0 if b is None else b)
    return np.tanh(hidden) @ v


def additive_scores(s, h, W, U, v, b=None):
    """vᵀ tanh(W s + U h + b) (Bahdanau et al. 2015, eq. 6 of the appendix)."""
    hidden = (s @ W)[:, :, None, :] + (h @ U)[:, None, :, :] + (0.0 if b is None else b)
    return np.tanh(hidden) @ v


def bilinear_scores(s, h, W):
    """hᵀ W s with W of shape (dk, dq)."""
    return np.einsum("bki,ij,bqj->bqk", h, W, s)


def dot_scores(s, h):
    return np.einsum("bqd,bkd->bqk", s, h)


def scaled_dot_scores(s, h):
    return dot_scores(s, h) / np.sqrt(h.shape[-1])


def location_scores(s, W, b, value_length):
    """W s + b, one score per source position, the first `value_length` of them."""
    scores = s @ W + (0.0 if b is None else b)
    return scores[:, :, :value_length]


def attend(scores, value, mask=None):
    """(context, weights) for raw scores and a boolean mask broadcastable to the scores."""
    weights = softmax(scores, mask)
    return weights @ value.astype("float64"), weights
