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


# -- Transformer blocks -----------------------------------------------------------------------
# Weights are dicts keyed by the variable path below the block, e.g. "self_attention/query/kernel".


def weights_by_path(layer):
    """A layer's weights as NumPy arrays keyed by their path below the layer."""
    return {v.path.split("/", 1)[1]: np.asarray(v, dtype="float64") for v in layer.weights}


def layer_norm(x, gamma, beta, epsilon):
    x = x.astype("float64")
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def multi_head_attention(query, value, w, prefix, mask=None):
    """(output, per-head weights) of `MultiHeadAttention` with keras core's weight layout.

    `mask` is boolean, broadcastable to `(B, Tq, Tv)`; grouped key/value heads are repeated.
    """
    q = np.einsum("btd,dhk->bthk", query, w[f"{prefix}/query/kernel"]) + w[f"{prefix}/query/bias"]
    k = np.einsum("btd,dhk->bthk", value, w[f"{prefix}/key/kernel"]) + w[f"{prefix}/key/bias"]
    v = np.einsum("btd,dhk->bthk", value, w[f"{prefix}/value/kernel"]) + w[f"{prefix}/value/bias"]
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scores = np.einsum("bqhk,bvhk->bhqv", q, k) / np.sqrt(q.shape[-1])
    weights = softmax(scores, None if mask is None else np.asarray(mask)[:, None])
    context = np.einsum("bhqv,bvhk->bqhk", weights, v)
    out_kernel = w[f"{prefix}/attention_output/kernel"]
    output = np.einsum("bqhk,hkd->bqd", context, out_kernel) + w[f"{prefix}/attention_output/bias"]
    return output, weights


def transformer_block(
    x, w, normalize_first, epsilon, self_mask, encoder=None, cross_mask=None, activation=None
):
    """A Transformer encoder block, or a decoder block when `encoder` is given.

    Masks are boolean `(B, Tq, Tv)` (padding, causal and explicit masks already combined).
    Returns `(output, {"self_attention": weights[, "cross_attention": weights]})`.
    """
    activation = activation or (lambda h: np.maximum(h, 0.0))
    x = x.astype("float64")
    sublayers = [
        ("self_attention", lambda h: multi_head_attention(h, h, w, "self_attention", self_mask))
    ]
    if encoder is not None:
        sublayers.append(
            (
                "cross_attention",
                lambda h: multi_head_attention(h, encoder, w, "cross_attention", cross_mask),
            )
        )

    def feedforward(h):
        w1, b1 = (
            w["feedforward_intermediate_dense/kernel"],
            w["feedforward_intermediate_dense/bias"],
        )
        w2, b2 = w["feedforward_output_dense/kernel"], w["feedforward_output_dense/bias"]
        return activation(h @ w1 + b1) @ w2 + b2, None

    sublayers.append(("feedforward", feedforward))
    scores = {}
    for name, sublayer in sublayers:
        gamma, beta = w[f"{name}_layer_norm/gamma"], w[f"{name}_layer_norm/beta"]
        if normalize_first:
            out, weights = sublayer(layer_norm(x, gamma, beta, epsilon))
            x = x + out
        else:
            out, weights = sublayer(x)
            x = layer_norm(x + out, gamma, beta, epsilon)
        if weights is not None:
            scores[name] = weights
    return x, scores


# -- positions ----------------------------------------------------------------------------------


def sinusoidal_encoding(positions, dim, max_wavelength=10000):
    """PE(p, 2i) = sin(p / max_wavelength^(2i/dim)), PE(p, 2i+1) = cos(...), float64 `(T, dim)`."""
    encoding = np.zeros((len(positions), dim))
    for t, p in enumerate(positions):
        for j in range(dim):
            angle = p / max_wavelength ** (2 * (j // 2) / dim)
            encoding[t, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return encoding


def rope_paper(x, positions, max_wavelength=10000, scaling_factor=1.0):
    """RoFormer eq. (13)-(15): the block-diagonal rotation R_{Θ,m} applied to x[:, t, ..., :].

    Pairs are neighbours `(x[2i], x[2i+1])`, rotated by `m θ_i`, `θ_i = max_wavelength^(-2i/d)`,
    with `m = position / scaling_factor`. `x` is `(batch, T, ..., d)`, positions `(T,)`.
    """
    x = np.asarray(x, "float64")
    d = x.shape[-1]
    out = np.empty_like(x)
    for t, p in enumerate(positions):
        m = p / scaling_factor
        rotation = np.zeros((d, d))
        for i in range(d // 2):
            angle = m * max_wavelength ** (-2 * i / d)
            c, s = np.cos(angle), np.sin(angle)
            rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
        out[:, t] = x[:, t] @ rotation.T
    return out


def rope_half_split(x, positions, max_wavelength=10000, scaling_factor=1.0):
    """RoPE in the "rotate half" layout: feature `i` pairs with `i + d/2`.

    The paper's rotation of the features permuted to `[x_0, x_{d/2}, x_1, x_{d/2+1}, ...]`.
    """
    d = np.asarray(x).shape[-1]
    interleave = np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], -1).reshape(-1)
    rotated = rope_paper(np.asarray(x)[..., interleave], positions, max_wavelength, scaling_factor)
    return rotated[..., np.argsort(interleave)]


def t5_relative_position_bucket(
    relative_position, bidirectional=True, num_buckets=32, max_distance=128
):
    """mesh_tensorflow.transformer.attention._relative_position_bucket, in NumPy float32.

    `relative_position = memory_position - query_position`. Written from the original:

        ret = 0; n = -relative_position
        if bidirectional: num_buckets //= 2; ret += (n < 0) * num_buckets; n = |n|
        else: n = max(n, 0)
        max_exact = num_buckets // 2
        val_if_large = max_exact + int32(log(float(n) / max_exact)
                                         / log(max_distance / max_exact) * (num_buckets - max_exact))
        ret += n if n < max_exact else min(val_if_large, num_buckets - 1)
    """
    n = -np.asarray(relative_position, "int64")
    ret = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype("int64") * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(n.astype("float32") / np.float32(max_exact))
            / np.float32(np.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    val_if_large = max_exact + np.where(np.isfinite(scaled), scaled, 0).astype("int64")
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(n < max_exact, n, val_if_large)


def t5_relative_position_bias(table, query_length, key_length, query_offset=0, **bucket_kwargs):
    """`table[bucket(j - i)]` as `(1, heads, Tq, Tk)`, with query `i` at `query_offset + i`."""
    query = np.arange(query_length)[:, None] + query_offset
    key = np.arange(key_length)[None, :]
    buckets = t5_relative_position_bucket(key - query, **bucket_kwargs)
    return np.transpose(np.asarray(table)[buckets], (2, 0, 1))[None]


# -- Local attention (Luong et al. 2015, sec. 3.2) --------------------------------------------


def local_p_positions(s, Wp, vp, source_length):
    """p_t = S · sigmoid(v_pᵀ tanh(W_p h_t)); `source_length` is `(B,)` or a number."""
    logits = np.tanh(s.astype("float64") @ Wp) @ vp  # (B, Tq)
    return np.reshape(source_length, (-1, 1)) / (1.0 + np.exp(-logits))


def local_attention_weights(scores, positions, window, mask=None, gaussian=True):
    """Softmax of the scores inside |s - p| <= D (and `mask`), times exp(-(s - p)² / (2 (D/2)²))
    with `gaussian` (local-p; local-m is the softmax alone, Luong et al. 2015 eq. 7)."""
    source = np.arange(scores.shape[-1])
    distance = source - np.asarray(positions, "float64")[..., None]  # (B, Tq, Tv)
    in_window = np.abs(distance) <= window
    if mask is not None:
        in_window = in_window & mask
    sigma = window / 2.0
    if not gaussian:
        return softmax(scores, in_window)
    return softmax(scores, in_window) * np.exp(-(distance**2) / (2.0 * sigma**2))


# -- Monotonic attention (Raffel et al. 2017) -------------------------------------------------


def monotonic_expected_alignments(energies, mask=None, previous=None):
    """Expected alignments of the paper's recurrence, as plain loops in float64.

    `α_{i,j} = p_{i,j} Σ_{k<=j} α_{i-1,k} Π_{l=k}^{j-1} (1 - p_{i,l})`, `p = sigmoid(e)`,
    `p = 0` where `mask` (`(B, Tv)`) is False, `α_0 = [1, 0, ...]` unless `previous` is given.
    `energies` is `(B, Tq, Tv)`; returns `(B, Tq, Tv)`.
    """
    energies = np.asarray(energies, "float64")
    B, Tq, Tv = energies.shape
    p = 1.0 / (1.0 + np.exp(-energies))
    if mask is not None:
        p = np.where(np.asarray(mask, bool)[:, None, :], p, 0.0)
    out = np.zeros((B, Tq, Tv))
    for b in range(B):
        prev = np.eye(Tv)[0] if previous is None else np.asarray(previous[b], "float64")
        for i in range(Tq):
            for j in range(Tv):
                total = 0.0
                for k in range(j + 1):
                    product = 1.0
                    for m in range(k, j):
                        product *= 1.0 - p[b, i, m]
                    total += prev[k] * product
                out[b, i, j] = p[b, i, j] * total
            prev = out[b, i]
    return out


# -- Attention pooling (Yang et al. 2016) -----------------------------------------------------


def attention_pooling(h, W, b, u, mask=None):
    """HAN attention: `u_t = tanh(W h_t + b)`, `a = softmax_t(u_tᵀ u)`, output `Σ_t a_t h_t`.

    `h` is `(B, T, d)`, `W` `(d, units)`, `b` `(units,)` or `None`, `u` `(units,)`, `mask`
    `(B, T)`. Returns `(pooled (B, d), weights (B, T))` in float64.
    """
    h = np.asarray(h, "float64")
    hidden = h @ np.asarray(W, "float64") + (0.0 if b is None else np.asarray(b, "float64"))
    weights = softmax(np.tanh(hidden) @ np.asarray(u, "float64"), mask)
    return np.einsum("bt,btd->bd", weights, h), weights


# -- Recurrent attention decoder (Bahdanau et al. 2015, Luong et al. 2015) --------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_cell(x, h, kernel, recurrent_kernel, bias):
    """Keras `GRUCell` (`reset_after=True`): gates `[z, r, h]`, `bias` of shape `(2, 3 units)`."""
    x, h = np.asarray(x, "float64"), np.asarray(h, "float64")
    x_z, x_r, x_h = np.split(x @ kernel + bias[0], 3, axis=-1)
    h_z, h_r, h_h = np.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
    z, r = _sigmoid(x_z + h_z), _sigmoid(x_r + h_r)
    candidate = np.tanh(x_h + r * h_h)
    return z * h + (1.0 - z) * candidate


def lstm_cell(x, h, c, kernel, recurrent_kernel, bias):
    """Keras `LSTMCell`: gates `[i, f, c, o]`; returns `(h, c)`."""
    x, h, c = (np.asarray(a, "float64") for a in (x, h, c))
    i, f, g, o = np.split(x @ kernel + h @ recurrent_kernel + bias, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def attention_decoder_step(style, x, states, memory, mask, attend, cell, W_c=None, feed=False):
    """One step of `AttentionDecoder`; returns `(output, weights, new_states)` in float64.

    `attend(query (B, units)) -> raw scores (B, S)`; `cell(input, cell_states) -> cell_states`
    (`(h,)` or `(h, c)`); `states` is the full state: the RNN's, then `h~` when `feed` (Luong
    input feeding). Bahdanau: `c = attend(s_{t-1})`, `s_t = RNN([x; c], s_{t-1})`, output
    `s_t`. Luong: `s_t = RNN([x; h~_{t-1}], s_{t-1})`, `c = attend(s_t)`, output
    `h~_t = tanh(W_c [c; s_t])`.
    """
    memory = np.asarray(memory, "float64")

    def context_of(query):
        weights = softmax(attend(query), mask)
        return np.einsum("bs,bsd->bd", weights, memory), weights

    if style == "bahdanau":
        context, weights = context_of(states[0])
        new_states = tuple(cell(np.concatenate([x, context], -1), states))
        return new_states[0], weights, new_states
    cell_states = states[:-1] if feed else states
    cell_input = np.concatenate([x, states[-1]], -1) if feed else x
    new_states = tuple(cell(cell_input, cell_states))
    context, weights = context_of(new_states[0])
    output = np.tanh(np.concatenate([context, new_states[0]], -1) @ W_c)
    return output, weights, new_states + ((output,) if feed else ())


# -- Spatial attention and the doubly stochastic regulariser (Xu et al. 2015) ---------------------


def spatial_attention(
    s, a, W, U, v, b=None, gate_kernel=None, gate_bias=None, mask=None, values=None
):
    """Show, Attend and Tell over flat locations `a (B, L, C)` for states `s (B, Tq, dq)`.

    `e = vᵀ tanh(W s + U a + b)`, `α = softmax(e)` over `L` (boolean `mask` broadcastable to
    `(B, Tq, L)`), `β = sigmoid(s · gate_kernel + gate_bias)` (1 without a gate kernel),
    `z = β Σ_i α_i a_i` (`Σ_i α_i values_i` when `values (B, L, dv)` are given: `a` is then a
    separate key). Returns `(z, α, β)`.
    """
    s, a = np.asarray(s, "float64"), np.asarray(a, "float64")
    weights = softmax(additive_scores(s, a, W, U, v, b), mask)
    if gate_kernel is None:
        gate = np.ones(s.shape[:-1])
    else:
        logits = s @ np.reshape(gate_kernel, (-1,)) + np.reshape(gate_bias, ())
        gate = 1.0 / (1.0 + np.exp(-logits))
    values = a if values is None else np.asarray(values, "float64")
    return gate[..., None] * (weights @ values), weights, gate


def doubly_stochastic_penalty(weights, query_mask=None, location_mask=None, coefficient=1.0):
    """Per example `λ Σ_i (1 - Σ_t α_ti)²` (eq. 14), as loops over flattened locations.

    `weights` is `(B, Tq, *locations)`; masked steps add nothing to `Σ_t`, masked locations
    nothing to `Σ_i`. Returns `(B,)` float64.
    """
    weights = np.asarray(weights, "float64")
    B, Tq = weights.shape[:2]
    weights = weights.reshape(B, Tq, -1)
    out = np.zeros(B)
    for n in range(B):
        for i in range(weights.shape[-1]):
            if location_mask is not None and not np.reshape(location_mask[n], -1)[i]:
                continue
            total = sum(
                weights[n, t, i] for t in range(Tq) if query_mask is None or query_mask[n, t]
            )
            out[n] += (1.0 - total) ** 2
    return coefficient * out
