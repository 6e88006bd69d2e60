"""Memory-efficient attention: key chunks, a running softmax, recomputation in the backward pass.

`chunked_attention` never holds the `(batch, heads, Tq, Tv)` score matrix. It
walks over the keys `chunk_size` at a time and keeps, per query, the running
maximum `m`, the running normaliser `l` and the running weighted sum of values
(the online softmax of Milakov & Gimelshein 2018, as in FlashAttention). The
backward pass is written out by hand: it recomputes each chunk's weights from
the saved log-sum-exp instead of storing them, so the memory of forward and
backward grows linearly with the sequence length (`Tq * chunk_size` per chunk)
instead of quadratically.

Masks are built chunk by chunk from their parts (key padding, causal positions,
an explicit mask), with the semantics of `masked_softmax`: masked positions get
exactly zero weight and a fully masked row gives zeros with zero gradient.
Dropout, when asked for, draws its keep decisions from a counter-based hash of
`(seed, batch, head, query, key)`, so the backward pass recomputes the same
decisions and the result does not depend on `chunk_size`.
"""

import keras
from keras import ops

from keras_attention.ops.masking import large_negative

DEFAULT_CHUNK_SIZE = 512
_HALF_DTYPES = ("float16", "bfloat16")


def chunked_attention(
    query,
    key,
    value,
    value_mask=None,
    attention_mask=None,
    bias=None,
    use_causal_mask=False,
    causal_offset=0,
    chunk_size=DEFAULT_CHUNK_SIZE,
    dropout_rate=0.0,
    dropout_seed=None,
):
    """`softmax(query keyᵀ + bias) value` over key chunks, in linear memory.

    The query is used as given: scale it (e.g. by `1/√key_dim`) beforehand.
    Results equal the full computation to float rounding, in values and in
    gradients with respect to `query`, `key`, `value` and `bias`.

    Args:
        query: `(batch_size, Tq, heads, key_dim)`.
        key: `(batch_size, Tv, heads, key_dim)`.
        value: `(batch_size, Tv, heads, value_dim)`.
        value_mask: optional boolean `(batch_size, Tv)`; `False` marks padding.
        attention_mask: optional boolean `(batch_size or 1, Tq, Tv)`.
        bias: optional float tensor added to the scores, broadcastable to
            `(batch_size, heads, Tq, Tv)` and of rank 4 with its last axis `Tv`
            (e.g. a relative position bias `(1, heads, Tq, Tv)`).
        use_causal_mask: bool, query `i` sees key positions `<= i + causal_offset`.
        causal_offset: int or scalar int tensor, the position of the first query.
            Defaults to `0`.
        chunk_size: positive int, keys per chunk. Defaults to `512`.
        dropout_rate: float in `[0, 1)`, dropout on the attention weights.
            Defaults to `0.0` (none).
        dropout_seed: int or scalar int32 tensor; required with dropout. The
            same seed gives the same dropout decisions.

    Returns:
        `(batch_size, Tq, heads, value_dim)` in the dtype of `query`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.standard_normal((2, 9, 3, 4)).astype("float32") for _ in range(3))
    >>> out = chunked_attention(q, k, v, use_causal_mask=True, chunk_size=4)
    >>> scores = np.einsum("bqhd,bkhd->bhqk", q, k) + np.where(np.tri(9, dtype=bool), 0, -np.inf)
    >>> weights = np.exp(scores - scores.max(-1, keepdims=True))
    >>> weights /= weights.sum(-1, keepdims=True)
    >>> bool(np.allclose(out, np.einsum("bhqk,bkhd->bqhd", weights, v), atol=1e-6))
    True
    """
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int. Received: chunk_size={chunk_size}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1). Received: dropout_rate={dropout_rate}")
    if dropout_rate > 0.0 and dropout_seed is None:
        raise ValueError("Dropout needs `dropout_seed`. Received: dropout_seed=None")
    for name, x in (("query", query), ("key", key), ("value", value)):
        if len(x.shape) != 4:
            raise ValueError(
                f"chunked_attention: `{name}` must have rank 4 `(batch_size, length, heads, dim)`. "
                f"Received: {name}.shape={tuple(x.shape)}"
            )
    if bias is not None and len(bias.shape) != 4:
        raise ValueError(
            "chunked_attention: `bias` must have rank 4, broadcastable to "
            f"`(batch_size, heads, Tq, Tv)`. Received: bias.shape={tuple(bias.shape)}"
        )
    out_dtype = keras.backend.standardize_dtype(query.dtype)
    # Half-precision inputs run in float32: the running sums need its range and precision.
    work = "float32" if out_dtype in _HALF_DTYPES else out_dtype
    query, key, value = (ops.cast(x, work) for x in (query, key, value))
    tensors = {"query": query, "key": key, "value": value}
    if bias is not None:
        tensors["bias"] = ops.cast(bias, work)
    if value_mask is not None:
        tensors["value_mask"] = ops.cast(value_mask, "bool")
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        if len(attention_mask.shape) != 3:
            raise ValueError(
                "chunked_attention: `attention_mask` must have rank 3 `(batch_size, Tq, Tv)`. "
                f"Received: attention_mask.shape={tuple(attention_mask.shape)}"
            )
        tensors["attention_mask"] = attention_mask
    tensors["causal_offset"] = ops.convert_to_tensor(causal_offset, "int32")
    tensors["dropout_seed"] = ops.convert_to_tensor(
        0 if dropout_seed is None else dropout_seed, "int32"
    )
    names = tuple(tensors)
    kernel = _Kernel(names, chunk_size, bool(use_causal_mask), float(dropout_rate), work)
    output = _attention_with_custom_gradient(kernel, *tensors.values())
    return ops.cast(output, out_dtype)


def dropout_keep_mask(seed, batch_index, head_index, query_index, key_index, rate):
    """The dropout decisions of `chunked_attention`: `True` keeps a weight.

    A counter-based hash of `(seed, batch, head, query, key)`: the decision for
    one attention weight depends only on its coordinates, not on the chunking.
    The index arguments are int32 tensors broadcastable to one another; the
    number of heads and queries are folded into the coordinates by the caller.

    Example:

    >>> import numpy as np
    >>> keep = dropout_keep_mask(7, 0, 0, np.arange(64)[:, None], np.arange(64)[None, :], 0.25)
    >>> 0.70 < float(np.mean(keep)) < 0.80
    True
    """
    seed = ops.convert_to_tensor(seed, "int32")
    row = _mix(_mix(seed + ops.cast(batch_index, "int32")) + ops.cast(head_index, "int32"))
    x = _mix(_mix(row + ops.cast(query_index, "int32")) ^ ops.cast(key_index, "int32"))
    uniform = ops.cast(ops.bitwise_and(x, 0xFFFFFF), "float32") * (1.0 / (1 << 24))
    return ops.greater_equal(uniform, rate)


class _Kernel:
    """The per-chunk computations shared by the forward and the backward pass."""

    def __init__(self, names, chunk_size, causal, dropout_rate, dtype):
        self.names = names
        self.chunk_size = chunk_size
        self.causal = causal
        self.dropout_rate = dropout_rate
        self.dtype = dtype

    def prepare(self, tensors):
        """Pads the key axis to a multiple of the chunk size and splits it into chunks."""
        t = dict(zip(self.names, tensors, strict=True))
        c = self.chunk_size
        key = t["key"]
        self.value_length = ops.shape(key)[1]
        self.query_length = ops.shape(t["query"])[1]
        self.num_chunks = (self.value_length + c - 1) // c
        pad = self.num_chunks * c - self.value_length
        chunks = {}
        for name in ("key", "value"):  # (B, n, c, H, d)
            x = _pad_axis(t[name], 1, pad)
            shape = ops.shape(x)
            chunks[name] = ops.reshape(x, (shape[0], self.num_chunks, c, shape[2], shape[3]))
        if "bias" in t:  # (Bb, Hb, Tqb, n, c)
            x = _pad_axis(t["bias"], 3, pad)
            s = ops.shape(x)
            chunks["bias"] = ops.reshape(x, (s[0], s[1], s[2], self.num_chunks, c))
        if "value_mask" in t:  # (B, n, c)
            x = _pad_axis(t["value_mask"], 1, pad)
            chunks["value_mask"] = ops.reshape(x, (ops.shape(x)[0], self.num_chunks, c))
        if "attention_mask" in t:  # (Bm, Tqm, n, c)
            x = _pad_axis(t["attention_mask"], 2, pad)
            s = ops.shape(x)
            chunks["attention_mask"] = ops.reshape(x, (s[0], s[1], self.num_chunks, c))
        self.t, self.chunks = t, chunks

    def chunk(self, j):
        """Scores `(B, H, Tq, c)` in the work dtype, the allowed positions, keys and values."""
        t, chunks, c = self.t, self.chunks, self.chunk_size
        key = ops.take(chunks["key"], j, axis=1)  # (B, c, H, d)
        value = ops.take(chunks["value"], j, axis=1)  # (B, c, H, dv)
        scores = ops.einsum("bqhd,bkhd->bhqk", t["query"], key)  # (B, H, Tq, c)
        if "bias" in chunks:
            scores = scores + ops.take(chunks["bias"], j, axis=3)
        key_pos = j * c + ops.arange(c, dtype="int32")  # (c,)
        allowed = ops.reshape(ops.less(key_pos, self.value_length), (1, 1, 1, c))
        if self.causal:
            query_pos = ops.arange(self.query_length, dtype="int32") + t["causal_offset"]
            causal = ops.greater_equal(
                ops.reshape(query_pos, (1, 1, -1, 1)), ops.reshape(key_pos, (1, 1, 1, -1))
            )  # (1, 1, Tq, c)
            allowed = ops.logical_and(allowed, causal)
        if "value_mask" in chunks:
            vm = ops.take(chunks["value_mask"], j, axis=1)  # (B, c)
            allowed = ops.logical_and(allowed, ops.expand_dims(vm, (1, 2)))
        if "attention_mask" in chunks:
            am = ops.take(chunks["attention_mask"], j, axis=2)  # (Bm, Tqm, c)
            allowed = ops.logical_and(allowed, ops.expand_dims(am, 1))
        fill = ops.cast(large_negative(self.dtype), scores.dtype)
        scores = ops.where(allowed, scores, fill)
        return scores, allowed, key, value

    def keep_scale(self, j, shape):
        """`keep / (1 - rate)` for chunk `j`, shaped `(B, H, Tq, c)`."""
        b, h, q = (ops.arange(n, dtype="int32") for n in shape[:3])
        key_pos = j * self.chunk_size + ops.arange(self.chunk_size, dtype="int32")
        keep = dropout_keep_mask(
            self.t["dropout_seed"],
            ops.reshape(b, (-1, 1, 1, 1)),
            ops.reshape(h, (1, -1, 1, 1)),
            ops.reshape(q, (1, 1, -1, 1)),
            ops.reshape(key_pos, (1, 1, 1, -1)),
            self.dropout_rate,
        )
        return ops.where(keep, 1.0 / (1.0 - self.dropout_rate), 0.0)

    def forward(self):
        query, value = self.t["query"], self.t["value"]
        batch, heads = ops.shape(query)[0], ops.shape(query)[2]
        value_dim = ops.shape(value)[3]
        fill = large_negative(self.dtype)
        stats_shape = (batch, heads, self.query_length, 1)

        def body(j, state):
            m, norm, acc = state
            scores, allowed, _, value_chunk = self.chunk(j)
            m_new = ops.maximum(m, ops.max(scores, axis=-1, keepdims=True))
            alpha = ops.exp(m - m_new)
            p = ops.where(allowed, ops.exp(scores - m_new), 0.0)
            norm = norm * alpha + ops.sum(p, axis=-1, keepdims=True)
            if self.dropout_rate > 0.0:
                p = p * ops.cast(self.keep_scale(j, ops.shape(p)), p.dtype)
            acc = acc * alpha + ops.einsum("bhqk,bkhd->bhqd", p, value_chunk)
            return m_new, norm, acc

        state = (
            ops.full(stats_shape, fill, self.dtype),
            ops.zeros(stats_shape, self.dtype),
            ops.zeros((batch, heads, self.query_length, value_dim), self.dtype),
        )
        m, norm, acc = ops.fori_loop(0, self.num_chunks, body, state)
        nonempty = ops.greater(norm, 0.0)
        safe_norm = ops.where(nonempty, norm, 1.0)
        output = ops.where(nonempty, acc / safe_norm, 0.0)  # (B, H, Tq, dv)
        log_sum_exp = ops.where(nonempty, m + ops.log(safe_norm), 0.0)  # (B, H, Tq, 1)
        return output, log_sum_exp

    def backward(self, output, log_sum_exp, grad_output):
        """Gradients for query, key, value and bias, recomputing each chunk's weights."""
        t, c, n = self.t, self.chunk_size, self.num_chunks
        query, key, value = t["query"], t["key"], t["value"]
        d_out = ops.transpose(ops.cast(grad_output, self.dtype), (0, 2, 1, 3))  # (B, H, Tq, dv)
        delta = ops.sum(d_out * output, axis=-1, keepdims=True)  # (B, H, Tq, 1)
        key_shape, value_shape = ops.shape(self.chunks["key"]), ops.shape(self.chunks["value"])
        state = [
            ops.zeros_like(query),  # dq (B, Tq, H, d)
            ops.zeros((n,) + tuple(key_shape[:1]) + tuple(key_shape[2:]), self.dtype),
            ops.zeros((n,) + tuple(value_shape[:1]) + tuple(value_shape[2:]), self.dtype),
        ]
        if "bias" in self.chunks:
            bias_shape = ops.shape(self.chunks["bias"])  # (Bb, Hb, Tqb, n, c)
            state.append(ops.zeros((n,) + tuple(bias_shape[:3]) + (c,), self.dtype))
        bias_static = None if "bias" not in t else tuple(t["bias"].shape[:3])

        def body(j, state):
            d_query, d_key, d_value = state[:3]
            scores, allowed, key_chunk, value_chunk = self.chunk(j)
            p = ops.where(allowed, ops.exp(scores - log_sum_exp), 0.0)  # (B, H, Tq, c)
            d_p = ops.einsum("bhqd,bkhd->bhqk", d_out, value_chunk)
            if self.dropout_rate > 0.0:
                scale = ops.cast(self.keep_scale(j, ops.shape(p)), p.dtype)
                dropped, d_p = p * scale, d_p * scale
            else:
                dropped = p
            d_value = ops.slice_update(
                d_value,
                (j, 0, 0, 0, 0),
                ops.expand_dims(ops.einsum("bhqk,bhqd->bkhd", dropped, d_out), 0),
            )
            d_scores = p * (d_p - delta)  # (B, H, Tq, c)
            d_query = d_query + ops.einsum("bhqk,bkhd->bqhd", d_scores, key_chunk)
            d_key = ops.slice_update(
                d_key,
                (j, 0, 0, 0, 0),
                ops.expand_dims(ops.einsum("bhqk,bqhd->bkhd", d_scores, query), 0),
            )
            new_state = [d_query, d_key, d_value]
            if len(state) == 4:
                d_bias = _sum_to(d_scores, bias_static)
                new_state.append(
                    ops.slice_update(state[3], (j, 0, 0, 0, 0), ops.expand_dims(d_bias, 0))
                )
            return new_state

        state = ops.fori_loop(0, n, body, state)
        grads = {"query": state[0]}
        for name, full, buf in (("key", key, state[1]), ("value", value, state[2])):
            s = ops.shape(buf)  # (n, B, c, H, d) -> (B, n * c, H, d) -> (B, Tv, H, d)
            merged = ops.reshape(ops.transpose(buf, (1, 0, 2, 3, 4)), (s[1], n * c, s[3], s[4]))
            grads[name] = merged[:, : ops.shape(full)[1]]
        if len(state) == 4:
            s = ops.shape(state[3])  # (n, Bb, Hb, Tqb, c) -> (Bb, Hb, Tqb, n * c)
            merged = ops.reshape(
                ops.transpose(state[3], (1, 2, 3, 0, 4)), (s[1], s[2], s[3], n * c)
            )
            grads["bias"] = merged[..., : self.value_length]
        return tuple(grads.get(name) for name in self.names)


def _attention_with_custom_gradient(kernel, *tensors):
    @ops.custom_gradient
    def attention(*tensors):
        # The forward pass is cut from any outer tape: its per-chunk scores are never kept.
        kernel.prepare([ops.stop_gradient(x) for x in tensors])
        output, log_sum_exp = kernel.forward()

        def grad(*args, upstream=None):
            grad_output = upstream if upstream is not None else args[0]
            return kernel.backward(output, log_sum_exp, grad_output)

        return ops.transpose(output, (0, 2, 1, 3)), grad  # (B, Tq, H, dv)

    return attention(*tensors)


def _pad_axis(x, axis, pad):
    widths = [[0, 0]] * len(x.shape)
    widths[axis] = [0, pad]
    return ops.pad(x, widths)


def _sum_to(x, shape):
    """Sums `x` `(B, H, Tq, c)` over the leading axes where `shape` (the bias's) has size 1."""
    axes = tuple(i for i, size in enumerate(shape) if size == 1)
    return ops.sum(x, axis=axes, keepdims=True) if axes else x


def _mix(x):
    """The `lowbias32` integer hash (C. Wellons) on int32 with wrap-around arithmetic."""
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
    x = x * 0x7FEB352D
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 15), 0x1FFFF))
    x = x * -0x7B935975  # 0x846CA68B as a signed int32
    return ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
