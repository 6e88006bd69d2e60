import functools

import numpy as np
import pytest
import tensorflow as tf

from keras_attention.ops import compute_attention_mask, masked_softmax
from keras_attention.ops.chunked_attention import chunked_attention, dropout_keep_mask
from tests import numpy_reference as npref

B, TQ, TV, H, D, DV = 3, 7, 11, 2, 4, 5


def _data(seed=0, tq=TQ, tv=TV, bias_shape=None, dv=DV):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, tq, H, D)).astype("float32")
    k = rng.standard_normal((B, tv, H, D)).astype("float32")
    v = rng.standard_normal((B, tv, H, dv)).astype("float32")
    bias = None if bias_shape is None else rng.standard_normal(bias_shape).astype("float32")
    return q, k, v, bias


def _value_mask(tv=TV):
    mask = np.arange(tv)[None, :] < np.array([[tv - 2], [3], [tv]])
    mask[1] = False  # a fully masked row
    return mask


def _full(q, k, v, bias, keep_scale=None, **mask_kwargs):
    """The textbook computation: the whole score matrix, softmax, (dropout), values."""
    scores = tf.einsum("bqhd,bkhd->bhqk", q, k)
    if bias is not None:
        scores = scores + bias
    mask = compute_attention_mask(query_length=q.shape[1], value_length=k.shape[1], **mask_kwargs)
    weights = masked_softmax(scores, None if mask is None else tf.expand_dims(mask, 1))
    if keep_scale is not None:
        weights = weights * keep_scale
    return tf.einsum("bhqk,bkhd->bqhd", weights, v)


def _value_and_grads(fn, q, k, v, bias):
    tensors = [tf.constant(x) for x in (q, k, v, bias) if x is not None]
    upstream = tf.constant(
        np.random.default_rng(9).standard_normal((B, q.shape[1], H, v.shape[-1])), "float32"
    )
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = fn(*tensors) if bias is not None else fn(*tensors, None)
        loss = tf.reduce_sum(out * upstream)
    return out.numpy(), [g.numpy() for g in tape.gradient(loss, tensors)]


CASES = {
    "plain": dict(),
    "causal": dict(use_causal_mask=True),
    "causal_offset": dict(use_causal_mask=True, causal_offset=4),
    "padded": dict(value_mask=True),
    "padded_causal_bias": dict(value_mask=True, use_causal_mask=True, bias=(1, H, TQ, TV)),
    "explicit_mask": dict(attention_mask=True),
    "explicit_mask_all_queries": dict(attention_mask="broadcast"),
    "batch_bias": dict(bias=(B, 1, 1, TV)),
}


# With DV = 5 the blocks' log-sum-exps are taken again in the backward pass (4 * nk > DV);
# with value size 16 and chunk 4 (nk = 3) they are kept from the forward pass.
@pytest.mark.parametrize(
    "chunk_size,dv", [(1, DV), (3, DV), (4, DV), (16, DV), (4, 16)], ids=str
)
@pytest.mark.parametrize("case", list(CASES))
def test_chunked_equals_full_in_outputs_and_gradients(case, chunk_size, dv):
    c = CASES[case]
    q, k, v, bias = _data(bias_shape=c.get("bias"), dv=dv)
    mask_kwargs = {
        "use_causal_mask": c.get("use_causal_mask", False),
        "causal_offset": c.get("causal_offset", 0),
    }
    if c.get("value_mask"):
        mask_kwargs["value_mask"] = _value_mask()
    if c.get("attention_mask"):
        rows = 1 if c["attention_mask"] == "broadcast" else TQ
        mask_kwargs["attention_mask"] = np.random.default_rng(3).random((B, rows, TV)) > 0.4
    expected, expected_grads = _value_and_grads(
        lambda q, k, v, b: _full(q, k, v, b, **mask_kwargs), q, k, v, bias
    )
    actual, actual_grads = _value_and_grads(
        lambda q, k, v, b: chunked_attention(q, k, v, bias=b, chunk_size=chunk_size, **mask_kwargs),
        q,
        k,
        v,
        bias,
    )
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)
    if c.get("value_mask"):  # the fully masked row: zeros and zero gradient, no NaN
        np.testing.assert_array_equal(actual[1], 0.0)
        np.testing.assert_array_equal(actual_grads[0][1], 0.0)


# Key blocks after a query chunk's first are shifted by the row's running log-sum-exp (no
# maxima); a block whose scores rise far above it, or a row that has seen no key yet, is taken
# again with its maxima. Each case sends some rows down one way and some down the other.
FAR_SCORES = {
    "later_block_far_above": dict(key_bias={9: 150.0, 5: 90.0}),
    "later_blocks_far_below": dict(key_bias={k: -200.0 for k in range(4, TV)}),
    "large_scores_everywhere": dict(offset=100.0),
    "first_block_padded": dict(first_padded=True),
    "minus_inf_bias_in_a_later_block": dict(key_bias={6: -np.inf, 10: -np.inf}),
}


@pytest.mark.parametrize("dv", [DV, 16], ids=["recomputed", "kept"])
@pytest.mark.parametrize("case", list(FAR_SCORES))
def test_blocks_far_from_the_running_shift_match_the_full_computation(case, dv):
    c = FAR_SCORES[case]
    q, k, v, _ = _data(seed=5, dv=dv)
    bias = np.zeros((1, 1, 1, TV), "float32")
    for key, value in c.get("key_bias", {}).items():
        bias[..., key] = value
    bias += c.get("offset", 0.0)
    mask_kwargs = {}
    if c.get("first_padded"):  # rows of batch 0 see no key in the first block of 4
        mask = np.ones((B, TV), bool)
        mask[0, :4] = False
        mask_kwargs["value_mask"] = mask
    expected, expected_grads = _value_and_grads(
        lambda q, k, v, b: _full(q, k, v, b, **mask_kwargs), q, k, v, bias
    )
    actual, actual_grads = _value_and_grads(
        lambda q, k, v, b: chunked_attention(q, k, v, bias=b, chunk_size=4, **mask_kwargs),
        q,
        k,
        v,
        bias,
    )
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-5)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=2e-5 * max(1.0, np.abs(e).max()))
    # And against float64 NumPy: softmax over each row with the bias.
    scores = np.einsum("bqhd,bkhd->bhqk", q.astype("float64"), k) + bias
    allowed = np.ones(scores.shape, bool)
    if "value_mask" in mask_kwargs:
        allowed &= mask_kwargs["value_mask"][:, None, None, :]
    weights = npref.softmax(scores, allowed)
    reference = np.einsum("bhqk,bkhd->bqhd", weights, v)
    np.testing.assert_allclose(actual, reference, rtol=0, atol=2e-5)


def test_matches_numpy_formula():
    q, k, v, _ = _data(seed=4)
    mask = _value_mask()
    scores = np.einsum("bqhd,bkhd->bhqk", q, k)
    weights = npref.softmax(scores, np.broadcast_to(mask[:, None, None, :], scores.shape))
    expected = np.einsum("bhqk,bkhd->bqhd", weights, v)
    actual = np.asarray(chunked_attention(q, k, v, value_mask=mask, chunk_size=4))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def _keep_scale(seed, rate, tq=TQ, tv=TV):
    keep = dropout_keep_mask(
        seed,
        np.arange(B).reshape(-1, 1, 1, 1),
        np.arange(H).reshape(1, -1, 1, 1),
        np.arange(tq).reshape(1, 1, -1, 1),
        np.arange(tv).reshape(1, 1, 1, -1),
        rate,
    )
    return np.where(np.asarray(keep), 1.0 / (1.0 - rate), 0.0).astype("float32")


@pytest.mark.parametrize("dv", [DV, 16], ids=["recomputed", "kept"])
def test_dropout_equals_the_full_computation_with_the_same_keep_mask(dv):
    q, k, v, _ = _data(seed=5, dv=dv)
    rate, seed = 0.3, 1234
    kwargs = {"value_mask": _value_mask(), "use_causal_mask": True}
    scale = _keep_scale(seed, rate)
    expected, expected_grads = _value_and_grads(
        lambda q, k, v, b: _full(q, k, v, b, keep_scale=scale, **kwargs), q, k, v, None
    )
    for chunk_size in (2, 5):  # the decisions do not depend on the chunking
        actual, actual_grads = _value_and_grads(
            lambda q, k, v, b, c=chunk_size: chunked_attention(
                q, k, v, chunk_size=c, dropout_rate=rate, dropout_seed=seed, **kwargs
            ),
            q,
            k,
            v,
            None,
        )
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
        for a, e in zip(actual_grads, expected_grads, strict=True):
            np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)
    no_dropout = np.asarray(chunked_attention(q, k, v, chunk_size=2, **kwargs))
    assert not np.allclose(actual, no_dropout)


def test_dropout_keep_rate_and_seeds():
    index = np.arange(256)
    keep = np.asarray(dropout_keep_mask(3, 1, 0, index[:, None], index[None, :], 0.2))
    assert abs(keep.mean() - 0.8) < 0.01
    other = np.asarray(dropout_keep_mask(4, 1, 0, index[:, None], index[None, :], 0.2))
    assert 0.25 < np.mean(keep != other) < 0.4  # independent seeds: 2 * 0.8 * 0.2 = 0.32
    # Neighbouring rows and columns are not correlated.
    assert abs(np.corrcoef(keep[:-1].ravel(), keep[1:].ravel())[0, 1]) < 0.03
    assert abs(np.corrcoef(keep[:, :-1].ravel(), keep[:, 1:].ravel())[0, 1]) < 0.03


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs_in_float32_and_returns_the_input_dtype(dtype):
    q, k, v, _ = _data(seed=6)
    q = q * 30.0  # scores far beyond what float16 exponentials survive
    mask = _value_mask()
    expected = np.asarray(chunked_attention(q, k, v, value_mask=mask, chunk_size=4))
    half = [tf.cast(x, dtype) for x in (q, k, v)]
    actual = chunked_attention(*half, value_mask=mask, chunk_size=4)
    assert actual.dtype == dtype
    actual = tf.cast(actual, "float32").numpy()
    assert np.all(np.isfinite(actual))
    np.testing.assert_array_equal(actual[1], 0.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.2 if dtype == "bfloat16" else 0.05)


def test_jit_compile_and_unknown_lengths_match_eager():
    q, k, v, bias = _data(seed=7, bias_shape=(1, H, TQ, TV))
    mask = _value_mask()
    kwargs = {"use_causal_mask": True, "chunk_size": 4}
    eager = np.asarray(chunked_attention(q, k, v, value_mask=mask, bias=bias, **kwargs))

    @tf.function(jit_compile=True)
    def jitted(q, k, v, mask, bias):
        return chunked_attention(q, k, v, value_mask=mask, bias=bias, **kwargs)

    np.testing.assert_allclose(jitted(q, k, v, mask, bias), eager, rtol=1e-5, atol=1e-5)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, H, D)),
            tf.TensorSpec((None, None, H, D)),
            tf.TensorSpec((None, None, H, DV)),
            tf.TensorSpec((None, None), tf.bool),
        ]
    )
    def dynamic(q, k, v, mask):
        return chunked_attention(q, k, v, value_mask=mask, **kwargs)

    for tv in (TV, 5):
        q2, k2, v2, _ = _data(seed=8, tv=tv)
        m2 = _value_mask(tv)
        np.testing.assert_allclose(
            dynamic(q2, k2, v2, m2),
            chunked_attention(q2, k2, v2, value_mask=m2, **kwargs),
            rtol=0,
            atol=1e-6,
        )


def test_gradient_graph_has_no_full_score_matrix():
    """Inside `tf.function`, no tensor of the traced forward+backward is `(.., Tq, Tv)`-sized."""
    tq = tv = 64
    q, k, v, _ = _data(seed=9, tq=tq, tv=tv)

    @tf.function
    def step(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            loss = tf.reduce_sum(chunked_attention(q, k, v, use_causal_mask=True, chunk_size=8))
        return tape.gradient(loss, [q, k, v])

    graph = step.get_concrete_function(*map(tf.constant, (q, k, v))).graph
    sizes = []
    graphs = [graph] + [f.graph for f in _nested_functions(graph)]
    for g in graphs:
        for op in g.get_operations():
            for out in op.outputs:
                if out.shape.rank is not None and None not in out.shape.as_list():
                    sizes.append(int(np.prod(out.shape.as_list())))
    assert len(graphs) > 2  # the loops' bodies were inspected
    # Blocks are (B, H, 8, 8); the largest tensors are the linear-size buffers (queries,
    # outputs, gradients with the `-delta` column), far below the (B, H, Tq, Tv) scores; the
    # blocks' own log-sum-exps (B * H * Tq * 8 here) are not kept at this value size.
    assert max(sizes) <= B * H * tq * max(D, DV + 1), (max(sizes), B * H * tq * tv)


def _nested_functions(graph):
    found = {}
    stack = [graph]
    while stack:
        g = stack.pop()
        for fn in getattr(g, "_functions", {}).values():
            inner = getattr(fn, "graph", None)
            if inner is not None and id(inner) not in found:
                found[id(inner)] = fn
                stack.append(inner)
    return list(found.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"dropout_rate": 1.0, "dropout_seed": 1}, "dropout_rate"),
        ({"dropout_rate": 0.1}, "dropout_seed"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    q, k, v, _ = _data()
    with pytest.raises(ValueError, match=match):
        chunked_attention(q, k, v, **kwargs)


def test_rejects_bad_ranks():
    q, k, v, _ = _data()
    with pytest.raises(ValueError, match="key.shape"):
        chunked_attention(q, k[:, :, 0], v)
    with pytest.raises(ValueError, match="bias.shape"):
        chunked_attention(q, k, v, bias=np.zeros((TQ, TV), "float32"))


@pytest.mark.parametrize(
    "bias_shape", [(1, H + 1, TQ, TV), (B + 1, H, TQ, TV), (1, H, TQ, 2), (1, H, TQ + 1, 1)]
)
def test_rejects_a_bias_that_does_not_broadcast_to_the_scores(bias_shape):
    q, k, v, _ = _data()
    with pytest.raises(ValueError, match=r"`bias` must broadcast .*bias.shape="):
        chunked_attention(q, k, v, bias=np.zeros(bias_shape, "float32"), chunk_size=4)


@pytest.mark.parametrize("bias_shape", [(1, H, 1, 1), (B, 1, TQ, 1)])
def test_a_bias_of_key_size_one_changes_nothing_and_gets_a_zero_gradient(bias_shape):
    """Constant along the keys, it shifts every score of a row alike: the softmax ignores it
    (before, the kernel failed splitting its key axis into blocks)."""
    q, k, v, bias = _data(seed=4, bias_shape=bias_shape)
    bias = 3.0 * bias
    fn = functools.partial(chunked_attention, use_causal_mask=True, chunk_size=4)
    out, (dq, dk, dv, d_bias) = _value_and_grads(lambda q, k, v, b: fn(q, k, v, bias=b), q, k, v, bias)
    expected, expected_grads = _value_and_grads(lambda q, k, v, _: fn(q, k, v), q, k, v, None)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    for name, got, want in zip("qkv", (dq, dk, dv), expected_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    assert d_bias.shape == bias_shape
    np.testing.assert_allclose(d_bias, 0.0, atol=1e-5)


@pytest.mark.parametrize("static", ["bias", "all"], ids=["unknown_bias", "all_unknown"])
@pytest.mark.parametrize(
    "bias_shape", [(1, H, TQ, TV), (B, 1, TQ, TV), (B, H, 1, TV), (1, 1, 1, TV), (B, H, TQ, 1)]
)
def test_a_bias_of_unknown_static_shape_gets_the_full_paths_gradient(bias_shape, static):
    """Traced with `(None,) * 4` (the bias alone, or every input), which axes broadcast is
    known only at run time: values and gradients (the bias's of its own shape) equal the
    full computation's."""
    q, k, v, bias = _data(seed=3, bias_shape=bias_shape)
    unknown = [tf.TensorSpec((None,) * 4, "float32")]
    spec = unknown * 3 if static == "all" else [tf.TensorSpec(x.shape) for x in (q, k, v)]

    def value_and_grads(fn, signature=spec + unknown):
        @tf.function(input_signature=signature)
        def run(q, k, v, b):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v, b])
                out = fn(q, k, v, b)
                loss = tf.reduce_sum(tf.sin(out))
            return (out, *tape.gradient(loss, [q, k, v, b]))

        return [x.numpy() for x in run(q, k, v, bias)]

    ours = value_and_grads(
        lambda q, k, v, b: chunked_attention(q, k, v, bias=b, use_causal_mask=True, chunk_size=4)
    )
    full = value_and_grads(  # the textbook computation, traced with every shape known
        lambda q, k, v, b: _full(q, k, v, b, use_causal_mask=True),
        [tf.TensorSpec(x.shape) for x in (q, k, v, bias)],
    )
    assert ours[4].shape == bias_shape
    for name, got, expected in zip(("output", "dq", "dk", "dv", "d_bias"), ours, full, strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=name)
