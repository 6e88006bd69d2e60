import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import MultiHeadAttention
from keras_attention.ops.dropout import dropout, dropout_mask
from keras_attention.ops.full_attention import full_attention, use_full_attention
from keras_attention.ops.softmax import masked_softmax
from tests import numpy_reference as npref
from tests.ops.test_chunked_attention import DV, TQ, TV, B, H, _data


def _mask(kind, tv=TV):
    """`(B, 1, TQ, tv)` boolean masks; batch row 1 has a query row with no allowed key."""
    rng = np.random.default_rng(5)
    if kind == "causal":
        mask = np.tril(np.ones((TQ, tv), bool), k=tv - TQ)[None, None].repeat(B, 0)
    else:  # random
        mask = rng.random((B, 1, TQ, tv)) > 0.4
    mask = mask.copy()
    mask[1, 0, 2] = False
    return mask


def _reference(q, k, v, bias, mask, drop=1.0):
    """NumPy float64: masked softmax (zero weight where masked, zero rows) between two products;
    the weights are multiplied by `drop` (a dropout keep mask times its scale)."""
    scores = np.einsum("bqhd,bkhd->bhqk", q.astype("float64"), k.astype("float64"))
    if bias is not None:
        scores = scores + bias
    weights = npref.softmax(scores, None if mask is None else np.broadcast_to(mask, scores.shape))
    return np.einsum("bhqk,bkhd->bqhd", weights * drop, v.astype("float64"))


def _einsum_path(q, k, v, bias, mask, rate=0.0, seed=None):
    """The composition `full_attention` replaces, differentiated by TensorFlow (with
    `ops.dropout` on the weights when `rate > 0`)."""
    scores = tf.einsum("bqhd,bkhd->bhqk", q, k)
    if bias is not None:
        scores = scores + tf.cast(bias, scores.dtype)
    weights = masked_softmax(scores, mask)
    weights = dropout(weights, rate, seed) if rate else weights
    return tf.einsum("bhqk,bkhd->bqhd", weights, v)


def _case(c):
    """`(q, k, v, bias, mask, tensors, upstream)` of a case dict (`bias` shape, `mask` kind)."""
    q, k, v, bias = _data(bias_shape=c.get("bias"))
    mask = None if "mask" not in c else _mask(c["mask"])
    tensors = [tf.constant(x) for x in (q, k, v) + (() if bias is None else (bias,))]
    upstream = tf.constant(np.random.default_rng(9).standard_normal((B, TQ, H, DV)), "float32")
    return q, k, v, bias, mask, tensors, upstream


def _value_and_grads(fn, tensors, upstream, compiled):
    def run(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = fn(*tensors)
            loss = tf.reduce_sum(tf.cast(out, "float32") * upstream)
        # (With one key the einsum path's weights do not depend on q and k: zeros, not None.)
        return out, tape.gradient(loss, tensors, unconnected_gradients="zero")

    run = tf.function(run) if compiled else run
    out, grads = run(*tensors)
    return out.numpy(), [g.numpy() for g in grads]


CASES = {
    "plain": dict(),
    "causal": dict(mask="causal"),
    "random_mask": dict(mask="random"),
    "bias_per_head": dict(bias=(1, H, TQ, TV)),
    "bias_per_batch_key": dict(bias=(B, 1, 1, TV), mask="random"),
    "full_bias_and_mask": dict(bias=(B, H, TQ, TV), mask="causal"),
    "bias_per_key_row": dict(bias=(B, H, 1, TV)),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("case", list(CASES))
def test_outputs_and_gradients_equal_the_einsum_softmax_path(case, compiled):
    q, k, v, bias, mask, tensors, upstream = _case(CASES[case])

    def ours(q, k, v, b=None):
        return full_attention(q, k, v, mask=mask, bias=b)

    def theirs(q, k, v, b=None):
        return _einsum_path(q, k, v, b, mask)

    out, grads = _value_and_grads(ours, tensors, upstream, compiled)
    expected_out, expected_grads = _value_and_grads(theirs, tensors, upstream, compiled)
    np.testing.assert_allclose(out, _reference(q, k, v, bias, mask), atol=1e-5)
    np.testing.assert_allclose(out, expected_out, atol=1e-5)
    assert [g.shape for g in grads] == [x.shape for x in tensors]  # the bias's own shape
    for name, g, e in zip("qkvb", grads, expected_grads, strict=False):
        np.testing.assert_allclose(g, e, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("bias_shape", [(1, H, TQ, TV), (B, 1, 1, TV), (B, H, 1, TV)])
def test_a_bias_of_unknown_static_shape_gets_a_gradient_of_its_own_shape(bias_shape):
    """Traced with `(None,) * 4`, which axes to sum over is known only at run time."""
    q, k, v, bias = _data(bias_shape=bias_shape)
    spec = [tf.TensorSpec(x.shape, "float32") for x in (q, k, v)]

    def value_and_grads(fn):
        @tf.function(input_signature=spec + [tf.TensorSpec((None,) * 4, "float32")])
        def run(q, k, v, b):
            with tf.GradientTape() as tape:
                tape.watch(b)
                loss = tf.reduce_sum(tf.sin(fn(q, k, v, b)))
            return tape.gradient(loss, b)

        return run(q, k, v, bias).numpy()

    ours = value_and_grads(lambda q, k, v, b: full_attention(q, k, v, bias=b))
    theirs = value_and_grads(lambda q, k, v, b: _einsum_path(q, k, v, b, None))
    assert ours.shape == bias_shape
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_a_query_with_no_allowed_key_gives_zeros_and_zero_gradients():
    q, k, v, _ = _data()
    mask = np.ones((B, 1, TQ, TV), bool)
    mask[0, 0, 3] = False  # query 3 of batch row 0 sees nothing
    tensors = [tf.constant(x) for x in (q, k, v)]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        out = full_attention(*tensors, mask=mask)
        loss = tf.reduce_sum(out[0, 3] * 7.0) + tf.reduce_sum(out[1])
    d_query, d_key, _ = tape.gradient(loss, tensors)
    np.testing.assert_array_equal(out.numpy()[0, 3], 0.0)
    np.testing.assert_array_equal(d_query.numpy()[0, 3], 0.0)  # no key: nothing to move
    np.testing.assert_array_equal(d_key.numpy()[0], 0.0)  # row 0's loss reads only query 3
    assert np.isfinite(d_query.numpy()).all()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_second_derivatives_equal_the_einsum_softmax_path(compiled):
    """Nothing is cut from an outer tape: a gradient penalty differentiates the backward pass."""
    q, k, v, bias = _data(bias_shape=(1, H, TQ, TV))
    mask = _mask("random")
    tensors = [tf.constant(x) for x in (q, k, v, bias)]

    def penalty(fn, *tensors):
        with tf.GradientTape() as outer:
            outer.watch(tensors)
            with tf.GradientTape() as inner:
                inner.watch(tensors)
                loss = tf.reduce_sum(tf.sin(fn(*tensors)))
            grads = inner.gradient(loss, tensors[:2])
            norm = sum(tf.reduce_sum(g**2) for g in grads)
        return outer.gradient(norm, tensors)

    penalty = tf.function(penalty) if compiled else penalty
    ours = penalty(lambda q, k, v, b: full_attention(q, k, v, mask=mask, bias=b), *tensors)
    theirs = penalty(lambda q, k, v, b: _einsum_path(q, k, v, b, mask), *tensors)
    for name, a, e in zip("qkvb", ours, theirs, strict=True):
        np.testing.assert_allclose(a.numpy(), e.numpy(), atol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_stays_in_its_dtype_and_near_float32(dtype):
    q, k, v, bias = _data(bias_shape=(1, H, TQ, TV))
    mask = _mask("causal")
    upstream = tf.constant(np.random.default_rng(9).standard_normal((B, TQ, H, DV)), "float32")
    tensors = [tf.constant(x) for x in (q, k, v, bias)]
    half = [tf.cast(x, dtype) for x in tensors]

    def ours(q, k, v, b):
        return full_attention(q, k, v, mask=mask, bias=b)

    def theirs(q, k, v, b):
        return _einsum_path(q, k, v, b, mask)

    out, grads = _value_and_grads(ours, half, upstream, compiled=True)
    exact, exact_grads = _value_and_grads(ours, tensors, upstream, compiled=True)
    einsum, einsum_grads = _value_and_grads(theirs, half, upstream, compiled=True)
    assert out.dtype == np.dtype(tf.as_dtype(dtype).as_numpy_dtype)
    tolerance = 0.05 if dtype == "bfloat16" else 0.01
    np.testing.assert_allclose(out.astype("float32"), exact, atol=tolerance)
    np.testing.assert_allclose(out.astype("float32"), einsum.astype("float32"), atol=tolerance)
    for name, g, e, t in zip("qkvb", grads, exact_grads, einsum_grads, strict=True):
        assert g.dtype == out.dtype
        np.testing.assert_allclose(g.astype("float32"), e, atol=tolerance * 4, err_msg=name)
        np.testing.assert_allclose(
            g.astype("float32"), t.astype("float32"), atol=tolerance * 4, err_msg=name
        )


def test_one_key_gets_weight_one_and_the_einsum_paths_gradients():
    q, k, v, _ = _data(tv=1)
    mask = np.ones((B, 1, TQ, 1), bool)
    mask[0, 0, 1] = False
    out = full_attention(q, k, v, mask=mask)
    expected = np.repeat(v, TQ, axis=1)
    expected[0, 1] = 0.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    tensors = [tf.constant(x) for x in (q, k, v)]
    upstream = tf.constant(np.random.default_rng(9).standard_normal((B, TQ, H, DV)), "float32")
    _, grads = _value_and_grads(
        lambda q, k, v: full_attention(q, k, v, mask=mask), tensors, upstream, False
    )
    _, expected_grads = _value_and_grads(
        lambda q, k, v: _einsum_path(q, k, v, None, mask), tensors, upstream, False
    )
    for name, g, e in zip("qkv", grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-5, err_msg=name)  # rounding of dP - delta


def test_a_bias_of_another_rank_is_refused_by_name():
    q, k, v, _ = _data()
    with pytest.raises(ValueError, match=r"`bias` must have rank 4.*\(2, 7, 11\)"):
        full_attention(q, k, v, bias=np.zeros((H, TQ, TV), "float32"))


def test_use_full_attention_whenever_the_weights_are_not_returned():
    assert use_full_attention(need_weights=False)  # TensorFlow here, dropout or not
    assert not use_full_attention(need_weights=True)


# -- dropout on the weights ---------------------------------------------------------------------

DROPOUT_CASES = {
    "plain": dict(),
    "random_mask": dict(mask="random"),
    "bias_only": dict(bias=(B, 1, 1, TV)),
    "causal_and_bias": dict(mask="causal", bias=(1, H, TQ, TV)),
}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("case", list(DROPOUT_CASES))
def test_dropout_equals_ops_dropout_between_the_einsums(case, compiled):
    """The same keep decisions as `ops.dropout` from the same seed; gradients through them."""
    q, k, v, bias, mask, tensors, upstream = _case(DROPOUT_CASES[case])

    def ours(q, k, v, b=None):
        return full_attention(q, k, v, mask=mask, bias=b, dropout_rate=0.3, dropout_seed=17)

    def theirs(q, k, v, b=None):
        return _einsum_path(q, k, v, b, mask, rate=0.3, seed=17)

    out, grads = _value_and_grads(ours, tensors, upstream, compiled)
    expected_out, expected_grads = _value_and_grads(theirs, tensors, upstream, compiled)
    keep, scale = dropout_mask((B, H, TQ, TV), 0.3, seed=17)
    keep = np.asarray(keep)
    assert 0.6 < keep.mean() < 0.8  # dropout is drawn at all
    np.testing.assert_allclose(out, _reference(q, k, v, bias, mask, keep * scale), atol=1e-5)
    np.testing.assert_allclose(out, expected_out, atol=1e-5)
    without = full_attention(q, k, v, mask=mask, bias=bias).numpy()
    assert np.abs(out - without).max() > 0.1  # and it changes the output
    for name, g, e in zip("qkvb", grads, expected_grads, strict=False):
        np.testing.assert_allclose(g, e, atol=2e-5, err_msg=name)


def test_dropout_with_a_seed_generator_draws_a_new_mask_per_call_as_ops_dropout_does():
    q, k, v, _ = _data()
    ours, theirs = keras.random.SeedGenerator(3), keras.random.SeedGenerator(3)

    def einsum_path():
        return _einsum_path(q, k, v, None, None, rate=0.5, seed=theirs)

    first = full_attention(q, k, v, dropout_rate=0.5, dropout_seed=ours).numpy()
    second = full_attention(q, k, v, dropout_rate=0.5, dropout_seed=ours).numpy()
    assert np.abs(first - second).max() > 0.1
    np.testing.assert_allclose(first, einsum_path().numpy(), atol=1e-5)
    np.testing.assert_allclose(second, einsum_path().numpy(), atol=1e-5)


@pytest.mark.parametrize("rate", [0.0, 1e-6])
def test_a_dropout_rate_that_drops_nothing_gives_the_output_without_dropout(rate):
    q, k, v, _ = _data()
    np.testing.assert_array_equal(
        full_attention(q, k, v, dropout_rate=rate, dropout_seed=1).numpy(),
        full_attention(q, k, v).numpy(),
    )


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_dropout_rate_outside_0_1_is_refused_by_name(rate):
    q, k, v, _ = _data()
    with pytest.raises(ValueError, match=r"full_attention: `dropout_rate` must be in \[0, 1\)"):
        full_attention(q, k, v, dropout_rate=rate, dropout_seed=1)


def test_second_derivatives_with_dropout_equal_the_einsum_path():
    q, k, v, _ = _data()
    tensors = [tf.constant(x) for x in (q, k, v)]

    def penalty(fn):
        with tf.GradientTape() as outer:
            outer.watch(tensors)
            with tf.GradientTape() as inner:
                inner.watch(tensors)
                loss = tf.reduce_sum(tf.sin(fn(*tensors)))
            grads = inner.gradient(loss, tensors)
            total = sum(tf.reduce_sum(g * g) for g in grads)
        return [g.numpy() for g in outer.gradient(total, tensors)]

    def theirs(q, k, v):
        return _einsum_path(q, k, v, None, None, rate=0.4, seed=2)

    ours = penalty(lambda q, k, v: full_attention(q, k, v, dropout_rate=0.4, dropout_seed=2))
    for name, g, e in zip("qkv", ours, penalty(theirs), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_with_dropout_stays_in_its_dtype_and_near_float32(dtype):
    q, k, v, _ = _data()
    mask = _mask("random")
    half = [tf.constant(x, dtype) for x in (q, k, v)]
    upstream = tf.ones((B, TQ, H, DV))

    def run(tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = full_attention(*tensors, mask=mask, dropout_rate=0.2, dropout_seed=4)
            loss = tf.reduce_sum(tf.cast(out, "float32") * upstream)
        return out, tape.gradient(loss, tensors)

    out, grads = run(half)
    expected_out, expected_grads = run([tf.cast(x, "float32") for x in half])
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    np.testing.assert_allclose(tf.cast(out, "float32").numpy(), expected_out.numpy(), atol=0.05)
    for g, e in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(tf.cast(g, "float32").numpy(), e.numpy(), atol=0.1)


@pytest.mark.parametrize(
    "call",
    [
        dict(),
        dict(use_causal_mask=True),
        dict(value_mask=True, query_mask=True),
        dict(attention_bias=(1, 3, 7, 7), use_causal_mask=True),
    ],
    ids=["plain", "causal", "padding_masks", "bias_causal"],
)
def test_multi_head_attention_full_path_matches_the_path_that_returns_weights(call):
    """Without weights asked for, the layer takes `full_attention`; with them, the einsum path."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((2, 7, 12)), "float32")
    kwargs = {"use_causal_mask": call.get("use_causal_mask", False)}
    if "value_mask" in call:
        kwargs["value_mask"] = tf.constant(np.arange(7)[None] < np.array([[7], [4]]))
        kwargs["query_mask"] = tf.constant(np.arange(7)[None] < np.array([[5], [7]]))
    if "attention_bias" in call:
        kwargs["attention_bias"] = tf.constant(rng.standard_normal(call["attention_bias"]), "float32")
    layer = MultiHeadAttention(num_heads=3, key_dim=4, chunk_size=None)
    layer(x, x)

    def value_and_grads(with_weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, x, return_attention_scores=with_weights, **kwargs)
            out = out[0] if with_weights else out
            loss = tf.reduce_sum(tf.sin(out))
        return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, [x] + layer.weights)]

    for fast, einsum in zip(value_and_grads(False), value_and_grads(True), strict=True):
        np.testing.assert_allclose(fast, einsum, atol=2e-5)


@pytest.mark.parametrize("dtype_policy", ["float32", "mixed_bfloat16"])
def test_multi_head_attention_training_with_dropout_takes_the_full_path_with_the_same_decisions(
    dtype_policy, monkeypatch
):
    """Two identical layers (same seed): without weights asked for (`full_attention`) and with
    them (einsum, masked softmax, the dropout layer) give the same outputs and gradients."""
    keras.config.set_dtype_policy(dtype_policy)
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((2, 7, 12)), "float32")
    masks = {
        "value_mask": tf.constant(np.arange(7)[None] < np.array([[7], [4]])),
        "query_mask": tf.constant(np.arange(7)[None] < np.array([[5], [7]])),
    }
    layers = _twin_layers(x, num_heads=3, key_dim=4, dropout=0.4, seed=11)
    rates = _count_full_attention_calls(monkeypatch)

    def value_and_grads(layer, with_weights):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x, x, return_attention_scores=with_weights, training=True, **masks)
            out = tf.cast(out[0] if with_weights else out, "float32")
            loss = tf.reduce_sum(tf.sin(out))
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        return [out.numpy()] + [tf.cast(g, "float32").numpy() for g in grads]

    # bfloat16: the products round differently (a few units in the last of its 8 bits)
    tol = dict(atol=2e-5) if dtype_policy == "float32" else dict(atol=0.05, rtol=0.02)
    for _ in range(2):  # the second call draws a new mask on both
        full, einsum = value_and_grads(layers[0], False), value_and_grads(layers[1], True)
        for fast, slow in zip(full, einsum, strict=True):
            np.testing.assert_allclose(fast, slow, **tol)
    assert rates == [0.4, 0.4]  # the calls without weights, in training: full_attention
    inference = layers[0](x, x, **masks).numpy()
    assert np.abs(tf.cast(inference, "float32").numpy() - full[0]).max() > 0.05  # dropout drew
    assert rates == [0.4, 0.4, 0.0]


def _twin_layers(x, **options):
    """Two `MultiHeadAttention` layers of the same options and weights, built on `x`."""
    layers = [MultiHeadAttention(**options) for _ in range(2)]
    for layer in layers:
        layer(x, x)
    layers[1].set_weights(layers[0].get_weights())
    return layers


def _count_full_attention_calls(monkeypatch):
    """The `dropout_rate` of every call `MultiHeadAttention` makes to `full_attention`."""
    from keras_attention.layers import multi_head_attention

    rates = []

    def counted(*args, **kwargs):
        rates.append(kwargs.get("dropout_rate", 0.0))
        return full_attention(*args, **kwargs)

    monkeypatch.setattr(multi_head_attention, "full_attention", counted)
    return rates


def test_training_with_dropout_and_lengths_unknown_while_tracing(monkeypatch):
    """`chunk_size="auto"` with unknown lengths picks the path at run time (`ops.cond`); the
    full branch draws the same dropout as the path with weights, gradients included."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.standard_normal((2, 9, 12)), "float32")
    layers = _twin_layers(x, num_heads=2, key_dim=4, dropout=0.3, seed=5)
    rates = _count_full_attention_calls(monkeypatch)

    def traced(layer, with_weights):
        @tf.function(input_signature=[tf.TensorSpec((None, None, 12), "float32")])
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = layer(x, x, return_attention_scores=with_weights, training=True)
                out = out[0] if with_weights else out
                loss = tf.reduce_sum(tf.sin(out))
            return [out] + tape.gradient(loss, [x] + layer.trainable_weights)

        return run

    full, einsum = traced(layers[0], False), traced(layers[1], True)
    for _ in range(2):  # a new mask per call on both
        got, expected = full(x), einsum(x)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)
    assert rates == [0.3]  # traced once, in the full branch of the run-time choice
    assert np.abs(got[0].numpy() - full(x)[0].numpy()).max() > 0.05


def test_half_precision_keeps_a_large_finite_bias_finite():
    # A float32 bias of -1e9 on a whole row is finite: the row averages its values on every path
    # (cast to float16 first it became -inf and masked the row on this path only).
    from keras_attention.ops import chunked_attention

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 1, 4)).astype("float16") for _ in range(3))
    bias = np.zeros((1, 1, 2, 2), "float32")
    bias[:, :, 1, :] = -1e9
    full = np.asarray(full_attention(q, k, v, bias=bias), "float32")
    chunked = np.asarray(chunked_attention(q, k, v, bias=bias, chunk_size=1), "float32")
    np.testing.assert_allclose(full, chunked, atol=2e-3)
    np.testing.assert_allclose(full[0, 1, 0], v[0, :, 0].astype("float32").mean(0), atol=2e-3)
