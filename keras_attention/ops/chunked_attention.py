"""Memory-efficient attention: blocks, a running softmax, recomputation in the backward pass.

`chunked_attention` never holds the `(batch, heads, Tq, Tv)` score matrix. It
splits queries and keys into chunks of `chunk_size` and walks over the
`(query chunk, key chunk)` blocks, keeping per query the running log-sum-exp
and the running normalised sum of values (the online softmax of Milakov &
Gimelshein 2018, as in FlashAttention). The backward pass is written out by
hand: it recomputes each block's weights from the saved log-sum-exp instead of
storing them, so the memory of forward and backward grows linearly with the
sequence length (one `(batch, heads, chunk, chunk)` block at a time plus
linear-size buffers) instead of quadratically.

Masks are built block by block from their parts (key padding, causal positions,
an explicit mask), with the semantics of `masked_softmax`: masked positions get
exactly zero weight and a fully masked row gives zeros with zero gradient.
Dropout, when asked for, draws its keep decisions from a counter-based hash of
`(seed, batch, head, query, key)`, so the backward pass recomputes the same
decisions and the result does not depend on `chunk_size`.
"""

import keras
from keras import ops

from keras_attention.ops.loops import fori_loop
from keras_attention.ops.masking import as_bool_mask, large_negative

DEFAULT_CHUNK_SIZE = 512
_MAX_UNROLLED_QUERY_CHUNKS = 16
_HALF_DTYPES = ("float16", "bfloat16")
# A shifted block whose row sums pass this is taken again with its maxima (`exp(44)`).
_SHIFTED_SUM_LIMIT = 2.0**64


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
    """`softmax(query keyᵀ + bias) value` over query/key blocks, in linear memory.

    The query is used as given: scale it (e.g. by `1/√key_dim`) beforehand.
    Results equal the full computation to float rounding, in values and in
    gradients with respect to `query`, `key`, `value` and `bias`.

    Args:
        query: `(batch_size, Tq, heads, key_dim)`.
        key: `(batch_size, Tv, heads, key_dim)`.
        value: `(batch_size, Tv, heads, value_dim)`.
        value_mask: optional boolean `(batch_size, Tv)`; `False` marks padding.
        attention_mask: optional boolean `(batch_size or 1, Tq, Tv)`.
        bias: optional float tensor added to the scores, of rank 4 and
            broadcastable to `(batch_size, heads, Tq, Tv)` (e.g. a relative
            position bias `(1, heads, Tq, Tv)`). Memory stays linear for a bias
            whose query axis has the static size 1 (e.g. `(batch_size, 1, 1,
            Tv)`). A bias is materialised at the scores' size on each axis
            whose size is unknown while tracing and on a key axis of size 1:
            a `(batch_size, heads, Tq, 1)` bias, or one traced as `(None,) * 4`,
            costs `batch_size * heads * Tq * Tv` numbers.
        use_causal_mask: bool, query `i` sees key positions `<= i + causal_offset`.
        causal_offset: int or scalar int tensor, the position of the first query.
            Defaults to `0`.
        chunk_size: positive int, queries and keys per block side. Defaults to
            `512`.
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
    if bias is not None:
        _check_bias_shape(bias.shape, query.shape, key.shape)
    out_dtype = keras.backend.standardize_dtype(query.dtype)
    # Half-precision inputs run in float32: the running sums need its range and precision.
    work = "float32" if out_dtype in _HALF_DTYPES else out_dtype
    # Heads-major `(B, H, T, d)` inside: every block product is then a plain batched matmul.
    query, key, value = (
        ops.transpose(ops.cast(x, work), (0, 2, 1, 3)) for x in (query, key, value)
    )
    tensors = {"query": query, "key": key, "value": value}
    if bias is not None:
        tensors["bias"] = _with_static_bias_axes(ops.cast(bias, work), query, key)
    if value_mask is not None:
        tensors["value_mask"] = as_bool_mask(value_mask, "value_mask")
    if attention_mask is not None:
        attention_mask = as_bool_mask(attention_mask, "attention_mask")
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
    output = _outside_torch_compile(_attention_with_custom_gradient)(
        kernel, *tensors.values()
    )  # (B, H, Tq, dv)
    return ops.cast(ops.transpose(output, (0, 2, 1, 3)), out_dtype)


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
    """The per-block computations shared by the forward and the backward pass.

    Queries are split into `nq` chunks of `cq` and keys into `nk` chunks of `ck`
    (both padded at the end); block `(i, j)` holds `(B, H, cq, ck)` scores.
    """

    def __init__(self, names, chunk_size, causal, dropout_rate, dtype):
        self.names = names
        self.chunk_size = chunk_size
        self.causal = causal
        self.dropout_rate = dropout_rate
        self.dtype = dtype

    def prepare(self, tensors):
        """Pads the query and key axes to whole chunks and splits them."""
        t = dict(zip(self.names, tensors, strict=True))
        static_tq, static_tv = t["query"].shape[2], t["key"].shape[2]
        # A short side is one chunk of its own length (e.g. a single decoding query).
        self.cq = self.chunk_size if static_tq is None else max(1, min(self.chunk_size, static_tq))
        self.ck = self.chunk_size if static_tv is None else max(1, min(self.chunk_size, static_tv))
        cq, ck = self.cq, self.ck
        self.query_length, self.value_length = ops.shape(t["query"])[2], ops.shape(t["key"])[2]
        self.nq = (self.query_length + cq - 1) // cq
        self.nk = (self.value_length + ck - 1) // ck
        q_pad, k_pad = self.nq * cq - self.query_length, self.nk * ck - self.value_length
        chunks = {"query": _split(t["query"], 2, q_pad, self.nq, cq)}  # (B, H, nq, cq, d)
        for name in ("key", "value"):  # (B, H, nk, ck, d)
            chunks[name] = _split(t[name], 2, k_pad, self.nk, ck)
        self.bias_broadcasts_queries = "bias" in t and t["bias"].shape[2] == 1
        if "bias" in t:  # (Bb, Hb, nq or 1, cq or 1, nk, ck)
            x = _split(t["bias"], 3, k_pad, self.nk, ck)
            if not self.bias_broadcasts_queries:
                x = _split(x, 2, q_pad, self.nq, cq)
            else:
                x = ops.expand_dims(x, 2)
            chunks["bias"] = x
        if "value_mask" in t:  # (B, nk, ck)
            chunks["value_mask"] = _split(t["value_mask"], 1, k_pad, self.nk, ck)
        self.mask_broadcasts_queries = "attention_mask" in t and t["attention_mask"].shape[1] == 1
        if "attention_mask" in t:  # (Bm, nq or 1, cq or 1, nk, ck)
            x = _split(t["attention_mask"], 2, k_pad, self.nk, ck)
            if not self.mask_broadcasts_queries:
                x = _split(x, 1, q_pad, self.nq, cq)
            else:
                x = ops.expand_dims(x, 1)
            chunks["attention_mask"] = x
        # Without masks and with whole key chunks, every position is allowed: skip the `where`s.
        self.masked = (
            self.causal
            or "value_mask" in t
            or "attention_mask" in t
            or static_tv is None
            or static_tv % ck != 0
        )
        # Rows may have no key in a block, or none at all: masks, or a bias of -inf (a mask too).
        self.may_block = self.masked or "bias" in t
        # Each block's log-sum-exp, kept from the forward pass for the backward one, is
        # `nk / dv` times the output's size: kept while that is at most a quarter (memory stays
        # linear in the length), else the backward pass takes it again from the block.
        value_dim = t["value"].shape[3]
        self.keeps_blocks = (
            isinstance(self.nk, int) and value_dim is not None and 4 * self.nk <= value_dim
        )
        self.t, self.chunks = t, chunks

    def bias(self, i, j):
        """The bias of block `(i, j)`, `(Bb, Hb, cq or 1, ck)`, or `None`."""
        if "bias" not in self.chunks:
            return None
        bias = ops.take(self.chunks["bias"], 0 if self.bias_broadcasts_queries else i, axis=2)
        return ops.take(bias, j, axis=3)

    def allowed(self, i, j):
        """Boolean, broadcastable to `(B, H, cq, ck)`: the positions block `(i, j)` may attend to.

        `None` when nothing is masked.
        """
        if not self.masked:
            return None
        chunks, cq, ck = self.chunks, self.cq, self.ck
        key_pos = j * ck + ops.arange(ck, dtype="int32")
        allowed = ops.reshape(ops.less(key_pos, self.value_length), (1, 1, 1, ck))
        if self.causal:
            query_pos = i * cq + ops.arange(cq, dtype="int32") + self.t["causal_offset"]
            causal = ops.greater_equal(
                ops.reshape(query_pos, (1, 1, cq, 1)), ops.reshape(key_pos, (1, 1, 1, ck))
            )
            allowed = ops.logical_and(allowed, causal)
        if "value_mask" in chunks:
            mask = ops.take(chunks["value_mask"], j, axis=1)  # (B, ck)
            allowed = ops.logical_and(allowed, ops.expand_dims(mask, (1, 2)))
        if "attention_mask" in chunks:
            mask = ops.take(chunks["attention_mask"], 0 if self.mask_broadcasts_queries else i, 1)
            mask = ops.take(mask, j, axis=2)  # (Bm, cq or 1, ck)
            allowed = ops.logical_and(allowed, ops.expand_dims(mask, 1))
        return allowed

    def keep_scale(self, i, j, shape):
        """`keep / (1 - rate)` for block `(i, j)`, shaped `(B, H, cq, ck)`."""
        b, h = (ops.arange(n, dtype="int32") for n in shape[:2])
        query_pos = i * self.cq + ops.arange(self.cq, dtype="int32")
        key_pos = j * self.ck + ops.arange(self.ck, dtype="int32")
        keep = dropout_keep_mask(
            self.t["dropout_seed"],
            ops.reshape(b, (-1, 1, 1, 1)),
            ops.reshape(h, (1, -1, 1, 1)),
            ops.reshape(query_pos, (1, 1, -1, 1)),
            ops.reshape(key_pos, (1, 1, 1, -1)),
            self.dropout_rate,
        )
        return ops.cast(ops.where(keep, 1.0 / (1.0 - self.dropout_rate), 0.0), self.dtype)

    def forward(self):
        """`(outputs, log_sum_exps, block_log_sum_exps)`.

        Shapes `(nq, B, H, cq, dv)`, `(nq, B, H, cq, 1)` and `(nq, nk, B, H, cq, 1)`.
        Each query row keeps a shift `m`, the sum `l` of `exp(s - m)` and the sum of
        `exp(s - m) v` over the blocks seen. The first key block of a query chunk is
        normalised on its own with the fused softmax kernel and merged by its
        log-sum-exp, `lse_b = max(s) - log(max(softmax(s)))`, which moves `m`. The
        later blocks keep `m` and need neither row maximum nor softmax:
        `exp([q, -m] [k, 1]ᵀ)` is one product and one `exp` pass, then a row sum
        and the value product (forward pass at 4,096 tokens: 2.7 s against 3.0 s,
        same process, interleaved runs). Such a block is taken again the first
        way when a row sum exceeds `2**64` (a score far above the row's shift, or a
        row that has seen no key yet); a sum that underflows to zero belongs to
        weights below `1e-38` of the row's total. Where `keeps_blocks`, each block's
        log-sum-exp is kept for the backward pass (the most negative float where the
        block adds nothing to a row); otherwise the third result is `None`.
        """
        chunks = self.chunks
        query_chunks = chunks["query"]
        batch, heads = ops.shape(query_chunks)[0], ops.shape(query_chunks)[1]
        value_dim = ops.shape(self.t["value"])[3]
        fill = large_negative(self.dtype)
        stats_shape = (batch, heads, self.cq, 1)
        # `[k, 1]`: the shift subtracted in the score product.
        key_aug = _with_ones(chunks["key"])  # (B, H, nk, ck, d + 1)

        def scores_of(query_chunk, i_dep, j_dep, shift=None):
            """Block `(i, j)`'s scores, minus `shift` where given (as `[q, -shift] [k, 1]ᵀ`)."""
            if shift is None:
                key_t = ops.swapaxes(ops.take(chunks["key"], j_dep, axis=2), -1, -2)
            else:
                query_chunk = ops.concatenate([query_chunk, -shift], axis=-1)
                key_t = ops.swapaxes(ops.take(key_aug, j_dep, axis=2), -1, -2)
            scores = ops.matmul(query_chunk, key_t)  # (B, H, cq, ck)
            bias = self.bias(i_dep, j_dep)
            if bias is not None and shift is None:  # a bias of -inf: the most negative float
                scores = ops.maximum(scores + bias, fill)
            elif bias is not None:  # -inf gives exp() = 0; +inf or NaN sends the block back
                scores = scores + bias
            return scores, self.allowed(i_dep, j_dep)

        def merge(state, j, block_out, block_sums, block_lse, new_shift):
            new = (new_shift,) + tuple(block_sums) + tuple(block_out)
            if self.keeps_blocks:
                new += (_put(state[3], j, block_lse),)
            return new

        def exact_step(query_chunk, i_dep, j, j_dep, state):
            shift, sums, acc = state[:3]
            scores, allowed = scores_of(query_chunk, i_dep, j_dep)
            if allowed is not None:
                scores = ops.where(allowed, scores, fill)
            top = ops.amax(scores, axis=-1, keepdims=True)  # (B, H, cq, 1)
            # (A one-key block needs no softmax: its one weight is 1 where present.)
            p = ops.softmax(scores, axis=-1) if self.ck > 1 else ops.ones_like(scores)
            block_lse = top - ops.log(ops.amax(p, axis=-1, keepdims=True))
            if self.dropout_rate > 0.0:
                p = p * self.keep_scale(i_dep, j_dep, ops.shape(p))
            block_out = ops.matmul(p, ops.take(chunks["value"], j_dep, axis=2))  # (B, H, cq, dv)
            new_shift = _coarse(ops.maximum(shift, block_lse))
            keep_old = ops.exp(shift - new_shift)
            take_new = ops.exp(block_lse - new_shift)
            if self.may_block:  # a row with nothing allowed in this block adds nothing
                present = ops.greater(top, fill)
                new_shift = ops.where(present, new_shift, shift)
                keep_old = ops.where(present, keep_old, 1.0)
                take_new = ops.where(present, take_new, 0.0)
                block_lse = ops.where(present, block_lse, fill)
            return merge(
                state,
                j,
                (acc * keep_old + block_out * take_new,),
                (sums * keep_old + take_new,),
                block_lse,
                new_shift,
            )

        def shifted_step(query_chunk, i_dep, j, j_dep, state):
            shift, sums, acc = state[:3]
            scores, allowed = scores_of(query_chunk, i_dep, j_dep, shift)
            weights = ops.exp(scores)  # exp(s - m)
            if allowed is not None:
                weights = ops.where(allowed, weights, 0.0)
            block_sums = ops.sum(weights, axis=-1, keepdims=True)
            if self.dropout_rate > 0.0:
                weights = weights * self.keep_scale(i_dep, j_dep, ops.shape(weights))
            block_out = ops.matmul(weights, ops.take(chunks["value"], j_dep, axis=2))
            fits = ops.all(ops.less_equal(block_sums, _SHIFTED_SUM_LIMIT))  # False for NaN

            def keep():
                positive = ops.greater(block_sums, 0.0)
                block_lse = ops.where(
                    positive, shift + ops.log(ops.where(positive, block_sums, 1.0)), fill
                )
                return merge(state, j, (acc + block_out,), (sums + block_sums,), block_lse, shift)

            return ops.cond(fits, keep, lambda: exact_step(query_chunk, i_dep, j, j_dep, state))

        def query_step(i, state):
            outputs, log_sum_exps, token = state[0], state[1], state[-1]
            i_dep = _after(i, token)
            query_chunk = ops.take(query_chunks, i_dep, axis=2)  # (B, H, cq, d)

            def key_step(j, state):
                return shifted_step(query_chunk, i_dep, j, _after(j, state[1]), state)

            init = (
                ops.full(stats_shape, fill, self.dtype),
                ops.zeros(stats_shape, self.dtype),
                ops.zeros((batch, heads, self.cq, value_dim), self.dtype),
            )
            if self.keeps_blocks:
                init += (ops.zeros((self.nk,) + stats_shape, self.dtype),)
            first = exact_step(query_chunk, i_dep, 0, 0, init)
            shift, sums, acc, *blocks = fori_loop(1, self.nk, key_step, first)
            # Rows with no key: output 0 and log-sum-exp 0.
            seen = ops.greater(shift, fill) if self.may_block else ops.ones(stats_shape, "bool")
            sums = ops.where(seen, sums, 1.0)
            lse = ops.where(seen, shift + ops.log(sums), 0.0)  # (B, H, cq, 1)
            output = ops.where(seen, acc / sums, 0.0)
            new = (_put(outputs, i, output), _put(log_sum_exps, i, lse))
            if self.keeps_blocks:
                new += (_put(state[2], i, blocks[0]),)
            return new + (_token(lse),)

        state = (
            ops.zeros((self.nq, batch, heads, self.cq, value_dim), self.dtype),
            ops.zeros((self.nq, batch, heads, self.cq, 1), self.dtype),
        )
        if self.keeps_blocks:
            state += (ops.zeros((self.nq, self.nk, batch, heads, self.cq, 1), self.dtype),)
        state = fori_loop(0, self.nq, query_step, state + (ops.zeros((), self.dtype),))
        return state[0], state[1], state[2] if self.keeps_blocks else None

    def backward(self, outputs, log_sum_exps, block_log_sum_exps, grad_output):
        """Gradients for query, key, value and bias, recomputing each block's weights.

        Keys in the outer loop, queries in the inner one: each key chunk's
        gradients are summed in the loop state and written once. A block's
        weights are recomputed with the fused softmax kernel, normalised within
        the block (`P_b = exp(s - lse_b)`; one fused operation, faster on a CPU
        than a product shifted by `-lse` followed by its own `exp` pass); the row
        factor `c = exp(lse_b - lse)` that turns them into the row's weights is
        applied to the `dv`-wide factors instead of the block:
        `P ⊙ (dO vᵀ - delta) = P_b ⊙ ([c dO, -c delta] [v, 1]ᵀ)` and
        `Pᵀ dO = P_bᵀ (c dO)`. `lse_b` comes from the forward pass where it was
        kept, else from the block's two row maxima, as the forward pass takes it.
        """
        t, chunks = self.t, self.chunks
        q_pad = self.nq * self.cq - self.query_length
        d_out_chunks = _split(ops.cast(grad_output, self.dtype), 2, q_pad, self.nq, self.cq)
        outputs = ops.moveaxis(outputs, 0, 2)  # (B, H, nq, cq, dv)
        delta = ops.sum(d_out_chunks * outputs, axis=-1, keepdims=True)  # (B, H, nq, cq, 1)
        if block_log_sum_exps is not None:  # (nq, nk, B, H, cq, 1); 0 where a block allows nothing
            row_factors = ops.exp(block_log_sum_exps - ops.expand_dims(log_sum_exps, 1))
        d_out_aug = ops.concatenate([d_out_chunks, -delta], axis=-1)  # (B, H, nq, cq, dv + 1)
        d_out_dim = ops.shape(d_out_chunks)[-1]  # the index of the `-delta` column
        fill = large_negative(self.dtype)
        has_bias = "bias" in chunks
        # With a known number of query chunks the query loop is unrolled and each chunk's
        # gradient is its own tensor; otherwise they share one buffer, and updating one chunk
        # copies it (TensorFlow does not update loop buffers in place).
        unrolled = isinstance(self.nq, int) and self.nq <= _MAX_UNROLLED_QUERY_CHUNKS
        d_queries = ops.zeros_like(ops.moveaxis(chunks["query"], 2, 0))  # (nq, B, H, cq, d)
        if unrolled:
            d_queries = [d_queries[n] for n in range(self.nq)]
        state = [
            d_queries,
            ops.zeros_like(ops.moveaxis(chunks["key"], 2, 0)),  # (nk, B, H, ck, d)
            ops.zeros_like(ops.moveaxis(chunks["value"], 2, 0)),  # (nk, B, H, ck, dv)
        ]
        if has_bias:  # (nq or 1, nk, Bb, Hb, cq or 1, ck)
            state.append(ops.zeros_like(ops.transpose(chunks["bias"], (2, 4, 0, 1, 3, 5))))
            bias_static = tuple(t["bias"].shape[:3])
        state.append(ops.zeros((), self.dtype))

        def key_step(j, state):
            d_queries, d_keys, d_values = state[:3]
            j_dep = _after(j, state[-1])
            key_chunk = ops.take(chunks["key"], j_dep, axis=2)  # (B, H, ck, d)
            value_chunk = ops.take(chunks["value"], j_dep, axis=2)  # (B, H, ck, dv)
            key_t = ops.swapaxes(key_chunk, -1, -2)  # (B, H, d, ck)
            value_aug = ops.swapaxes(_with_ones(value_chunk), -1, -2)  # [v, 1]ᵀ: (B, H, dv + 1, ck)
            if block_log_sum_exps is not None:
                key_factors = ops.take(row_factors, j_dep, axis=1)  # (nq, B, H, cq, 1)

            def query_step(i, inner):
                d_queries, d_key, d_value = inner[:3]
                i_dep = _after(i, d_key)
                query_chunk = ops.take(chunks["query"], i_dep, axis=2)  # (B, H, cq, d)
                scores = ops.matmul(query_chunk, key_t)  # (B, H, cq, ck)
                bias = self.bias(i_dep, j_dep)
                if bias is not None:  # as the forward pass clamps it
                    scores = ops.maximum(scores + bias, fill)
                allowed = self.allowed(i_dep, j_dep)
                if allowed is not None:  # masked keys: weight 0 (a row with none: c = 0)
                    scores = ops.where(allowed, scores, fill)
                p = ops.softmax(scores, axis=-1) if self.ck > 1 else ops.ones_like(scores)
                if block_log_sum_exps is not None:
                    factor = ops.take(key_factors, i_dep, axis=0)  # c: (B, H, cq, 1)
                else:
                    top = ops.amax(scores, axis=-1, keepdims=True)
                    block_lse = top - ops.log(ops.amax(p, axis=-1, keepdims=True))
                    factor = ops.exp(block_lse - ops.take(log_sum_exps, i_dep, axis=0))
                    if self.may_block:
                        factor = ops.where(ops.greater(top, fill), factor, 0.0)
                d_out_chunk = ops.take(d_out_aug, i_dep, axis=2) * factor  # (B, H, cq, dv + 1)
                d_out = ops.take(d_out_chunks, i_dep, axis=2) * factor  # (B, H, cq, dv)
                if self.dropout_rate > 0.0:
                    # d(dropped weights) = dO vᵀ; d(weights) = scale * that; then minus delta.
                    scale = self.keep_scale(i_dep, j_dep, ops.shape(p))
                    dropped = p * scale
                    d_weights = ops.matmul(d_out, ops.swapaxes(value_chunk, -1, -2)) * scale
                    d_scores = p * (d_weights + ops.take(d_out_chunk, [d_out_dim], axis=-1))
                else:
                    dropped = p
                    d_scores = p * ops.matmul(d_out_chunk, value_aug)  # P (dO vᵀ - delta)
                # Transposed accumulators, (B, H, d, ck): the small factor is transposed, the
                # (cq, ck) block is not.
                d_value = d_value + ops.matmul(ops.swapaxes(d_out, -1, -2), dropped)
                d_key = d_key + ops.matmul(ops.swapaxes(query_chunk, -1, -2), d_scores)
                d_query = ops.matmul(d_scores, key_chunk)  # (B, H, cq, d)
                if unrolled:
                    d_queries = list(d_queries)
                    d_queries[i] = d_queries[i] + d_query
                else:
                    d_queries = _add_at(d_queries, i, d_query)
                new = [d_queries, d_key, d_value]
                if has_bias:  # (nq or 1, nk, Bb, Hb, cq or 1, ck)
                    row = 0 if self.bias_broadcasts_queries else i_dep
                    d_bias = ops.take(inner[3], row, axis=0)
                    d_bias = _add_at(d_bias, j_dep, _sum_to(d_scores, bias_static))
                    new.append(
                        ops.slice_update(inner[3], (row, 0, 0, 0, 0, 0), ops.expand_dims(d_bias, 0))
                    )
                return new

            inner = [
                d_queries,
                ops.zeros_like(ops.swapaxes(key_chunk, -1, -2)),
                ops.zeros_like(ops.swapaxes(value_chunk, -1, -2)),
            ]
            inner += state[3:-1]
            if unrolled:
                for i in range(self.nq):
                    inner = query_step(i, inner)
            else:
                inner = fori_loop(0, self.nq, query_step, inner)
            d_key, d_value = (ops.swapaxes(x, -1, -2) for x in inner[1:3])  # (B, H, ck, d)
            d_keys, d_values = _put(d_keys, j, d_key), _put(d_values, j, d_value)
            return [inner[0], d_keys, d_values] + list(inner[3:]) + [_token(inner[1])]

        state = fori_loop(0, self.nk, key_step, state)
        d_queries = ops.stack(state[0], axis=0) if unrolled else state[0]
        grads = {
            "query": _merge(d_queries, self.query_length),
            "key": _merge(state[1], self.value_length),
            "value": _merge(state[2], self.value_length),
        }
        if has_bias:
            d_bias = ops.transpose(state[3], (2, 3, 0, 4, 1, 5))  # (Bb, Hb, nq, cq, nk, ck)
            s = ops.shape(d_bias)
            d_bias = ops.reshape(d_bias, (s[0], s[1], s[2] * s[3], s[4] * s[5]))
            grads["bias"] = d_bias[:, :, : ops.shape(t["bias"])[2], : self.value_length]
        return tuple(grads.get(name) for name in self.names)


def _attention_with_custom_gradient(kernel, *tensors):
    if _torch_without_gradient(tensors):  # nothing to differentiate: the forward pass alone
        kernel.prepare(list(tensors))
        outputs = kernel.forward()[0]
        return _merge(outputs, kernel.query_length)

    @ops.custom_gradient
    def attention(*tensors):
        # The forward pass is cut from any outer tape: its per-block scores are never kept.
        kernel.prepare([ops.stop_gradient(x) for x in tensors])
        outputs, log_sum_exps, block_log_sum_exps = kernel.forward()

        def grad(*args, upstream=None):
            grad_output = upstream if upstream is not None else args[0]
            return kernel.backward(outputs, log_sum_exps, block_log_sum_exps, grad_output)

        return _merge(outputs, kernel.query_length), grad  # (B, H, Tq, dv)

    return attention(*tensors)


def _outside_torch_compile(fn):
    """`fn`, run eagerly (a graph break) inside `torch.compile` on PyTorch.

    The block loops are Python loops on PyTorch: Dynamo would unroll them into
    `(Tq / chunk_size) * (Tv / chunk_size)` blocks of some hundred operations each
    (tracing 12 blocks took 80 s), growing with the sequence length.
    """
    if keras.backend.backend() != "torch":
        return fn
    import torch  # noqa: PLC0415 (PyTorch only on its own backend)

    return torch.compiler.disable(fn)


def _torch_without_gradient(tensors):
    """PyTorch, and no gradient will be asked for (`torch.no_grad`, or no input requires one).

    The custom gradient is then left out: on PyTorch it is an `autograd.Function`, which
    saves its inputs for a backward pass and which `torch.compile` traces with its backward
    pass, several times longer than the forward pass alone.
    """
    if keras.backend.backend() != "torch":
        return False
    import torch  # noqa: PLC0415 (PyTorch only on its own backend)

    return not torch.is_grad_enabled() or not any(
        getattr(x, "requires_grad", False) for x in tensors
    )


def _coarse(shift):
    """`shift` rounded to a bfloat16 value where `|shift| < 4096` (a change of at most 8).

    A shift near the row's maximum works as well as the maximum, so the one used is exact in
    the reduced-precision inputs of a TF32 or bfloat16 matrix product (GPUs): the `-shift`
    column of the shifted score product is then not rounded, which would bias a whole block
    against the first. Larger shifts are kept: bfloat16's relative rounding would move them
    past `exp`'s range (such scores lose their precision in those products anyway).
    """
    small = ops.less(ops.abs(shift), 4096.0)
    rounded = ops.cast(ops.cast(ops.where(small, shift, 0.0), "bfloat16"), shift.dtype)
    return ops.where(small, rounded, shift)


def _with_ones(x):
    """`x` with a column of ones appended on its last axis."""
    return ops.concatenate([x, ops.ones_like(ops.take(x, [0], axis=-1))], axis=-1)


def _split(x, axis, pad, num_chunks, chunk):
    """Pads `axis` by `pad` and splits it into `(num_chunks, chunk)`."""
    widths = [[0, 0]] * len(x.shape)
    widths[axis] = [0, pad]
    x = ops.pad(x, widths)
    shape = list(ops.shape(x))
    return ops.reshape(x, tuple(shape[:axis]) + (num_chunks, chunk) + tuple(shape[axis + 1 :]))


def _merge(chunks, length):
    """`(n, B, H, c, d)` chunks -> `(B, H, length, d)`, dropping the padding."""
    moved = ops.moveaxis(chunks, 0, 2)  # (B, H, n, c, d)
    s = ops.shape(moved)
    return ops.reshape(moved, (s[0], s[1], s[2] * s[3], s[4]))[:, :, :length]


def _put(buffer, index, value):
    """`buffer[index] = value` along the first axis."""
    start = (index,) + (0,) * (len(buffer.shape) - 1)
    return ops.slice_update(buffer, start, ops.expand_dims(value, 0))


def _add_at(buffer, index, update):
    """`buffer[index] += update` along the first axis."""
    return _put(buffer, index, ops.take(buffer, index, axis=0) + update)


def _after(index, state):
    """`index`, made to depend on `state`, so that loop iterations run one after the other.

    A TensorFlow while loop runs up to 10 iterations at once when their inputs
    allow it; here every iteration would then hold its own `(B, H, Tq, c)`
    scores and memory would grow back to quadratic. Tying the chunk index to
    the previous iteration's result keeps at most two chunks alive.
    """
    if keras.backend.backend() != "tensorflow":  # JAX and PyTorch run iterations in order
        return index
    # False, but only known at run time (`initial`: an empty batch has no minimum).
    never = ops.less(ops.min(state, initial=0.0), float("-inf"))
    return index + ops.cast(never, "int32")


def _token(x):
    """A scalar that depends on `x`, for `_after` in the next iteration (TensorFlow only)."""
    if keras.backend.backend() != "tensorflow":
        return ops.zeros((), x.dtype)
    return ops.min(x, initial=0.0)


def _check_bias_shape(bias_shape, query_shape, key_shape):
    """Refuses a bias that does not broadcast to the scores `(B, H, Tq, Tv)`."""
    scores = (query_shape[0], query_shape[2], query_shape[1], key_shape[1])
    for size, full in zip(tuple(bias_shape), scores, strict=True):
        if size is not None and full is not None and size not in (full, 1):
            raise ValueError(
                "chunked_attention: `bias` must broadcast to the scores `(batch_size, heads, "
                f"Tq, Tv)` = {scores}. Received: bias.shape={tuple(bias_shape)}"
            )


def _with_static_bias_axes(bias, query, key):
    """`bias`, broadcast on every axis whose size is unknown while tracing, and on a key axis of 1.

    The kernel splits the key axis into blocks, and chooses from the bias's static shape which
    other axes it broadcasts (its query axis of size 1 is never split; its gradient is summed
    over the axes of size 1). An axis of unknown size (e.g. `tf.function(input_signature=
    [TensorSpec((None,) * 4)])`) and a key axis of size 1 are broadcast to the scores' size
    `(batch_size, heads, Tq, Tv)` on that axis only; autodiff sums the gradient back. A bias
    of size 1 on such an axis then costs its broadcast size. `query` and `key` are heads-major
    `(B, H, T, d)`.
    """
    static = tuple(bias.shape)
    if None not in static and static[3] != 1:
        return bias
    scores = (ops.shape(query)[0], ops.shape(query)[1], ops.shape(query)[2], ops.shape(key)[2])
    bias_shape = ops.shape(bias)
    target = [scores[i] if size is None else bias_shape[i] for i, size in enumerate(static)]
    target[3] = scores[3]
    return ops.broadcast_to(bias, target)


def _sum_to(x, shape):
    """Sums `x` (scores, e.g. `(B, H, cq, ck)`) over the axes where `shape` (a bias's) is 1."""
    axes = tuple(i for i, size in enumerate(shape) if size == 1)
    return ops.sum(x, axis=axes, keepdims=True) if axes else x


def _mix(x):
    """The `lowbias32` integer hash (C. Wellons) on int32 with wrap-around arithmetic."""
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
    x = x * 0x7FEB352D
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 15), 0x1FFFF))
    x = x * -0x7B935975  # 0x846CA68B as a signed int32
    return ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
