"""The call contract shared by the six score layers (BaseScoreAttention)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import (
    AdditiveAttention,
    BaseScoreAttention,
    BilinearAttention,
    ConcatAttention,
    DotAttention,
    LocationAttention,
    ScaledDotAttention,
)

FACTORIES = {
    "concat": lambda **kw: ConcatAttention(units=8, **kw),
    "additive": lambda **kw: AdditiveAttention(units=8, **kw),
    "additive_normalized": lambda **kw: AdditiveAttention(units=8, normalize=True, **kw),
    "bilinear": lambda **kw: BilinearAttention(**kw),
    "dot": lambda **kw: DotAttention(**kw),
    "scaled_dot": lambda **kw: ScaledDotAttention(**kw),
    "location": lambda **kw: LocationAttention(max_length=10, **kw),
}
DIM = 6  # query, key and value depth (dot-style scores need equal depths)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(params=sorted(FACTORIES))
def factory(request):
    return FACTORIES[request.param]


def test_one_step_query_equals_length_one_sequence(factory):
    layer = factory()
    step, value = _rand(3, DIM), _rand(3, 7, DIM, seed=1)
    value_mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], bool)
    context, weights = layer(step, value, value_mask=value_mask, return_attention_scores=True)
    seq_context, seq_weights = layer(
        step[:, None, :], value, value_mask=value_mask, return_attention_scores=True
    )
    assert tuple(context.shape) == (3, DIM) and tuple(weights.shape) == (3, 7)
    np.testing.assert_allclose(
        np.asarray(context), np.asarray(seq_context)[:, 0], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(weights), np.asarray(seq_weights)[:, 0], rtol=0, atol=1e-6
    )
    # a one-step query mask of shape (batch,) zeroes that example
    masked = layer(step, value, query_mask=np.array([True, False, True]))
    np.testing.assert_array_equal(np.asarray(masked)[1], 0.0)
    assert getattr(masked, "_keras_mask", None) is None  # no sequence axis, no mask to carry


def test_one_step_query_in_a_functional_model(factory):
    step = keras.Input((DIM,))
    memory = keras.Input((None, DIM))
    context, weights = factory()(step, memory, return_attention_scores=True)
    assert tuple(context.shape) == (None, DIM)
    assert tuple(weights.shape) == (None, None)


def test_keras_mask_list_equals_keyword_masks(factory):
    layer = factory()
    query, value = _rand(2, 4, DIM), _rand(2, 5, DIM, seed=1)
    query_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], bool)
    a = layer(query, value, mask=[query_mask, value_mask])
    b = layer(query, value, query_mask=query_mask, value_mask=value_mask)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_explicit_query_mask_wins_over_implicit(factory):
    """keras core's MultiHeadAttention replaces an explicit query_mask by the implicit one."""
    layer = factory()
    query, value = _rand(2, 4, DIM), _rand(2, 5, DIM, seed=1)
    query[0, 3] = 0.0
    implicit = keras.layers.Masking(mask_value=0.0)(query)  # masks (0, 3)
    explicit = np.array([[1, 0, 1, 1], [1, 1, 1, 1]], bool)
    output = np.asarray(layer(implicit, value, query_mask=explicit))
    np.testing.assert_array_equal(output[0, 1], 0.0)
    assert np.any(output[0, 3] != 0.0)


def test_key_and_value_masks_are_combined(factory):
    layer = factory()
    query, value, key = _rand(2, 3, DIM), _rand(2, 5, DIM, seed=1), _rand(2, 5, DIM, seed=2)
    value_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    key_mask = np.array([[0, 1, 1, 1, 1], [1, 1, 0, 1, 1]], bool)
    _, weights = layer(
        query,
        value,
        key=key,
        value_mask=value_mask,
        key_mask=key_mask,
        return_attention_scores=True,
    )
    both = value_mask & key_mask
    assert np.all(np.asarray(weights)[np.broadcast_to(~both[:, None, :], weights.shape)] == 0.0)


def test_explicit_attention_mask(factory):
    layer = factory()
    query, value = _rand(2, 3, DIM), _rand(2, 5, DIM, seed=1)
    attention_mask = np.random.default_rng(3).random((2, 3, 5)) > 0.4
    attention_mask[:, :, 0] = True
    _, weights = layer(query, value, attention_mask=attention_mask, return_attention_scores=True)
    weights = np.asarray(weights)
    assert np.all(weights[~attention_mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_fully_masked_value_rows_give_zeros_and_finite_gradients(factory, policy):
    layer = factory(dtype=policy)
    query = tf.constant(_rand(3, 4, DIM) * 30.0)  # large scores: no overflow from the mask constant
    value = tf.constant(_rand(3, 5, DIM, seed=1) * 30.0)
    value_mask = np.array([[1, 1, 1, 0, 0], [0] * 5, [0] * 5], bool)
    with tf.GradientTape() as tape:
        tape.watch([query, value])
        context, weights = layer(query, value, value_mask=value_mask, return_attention_scores=True)
        loss = tf.reduce_sum(tf.cast(context, "float32") ** 2)
    grads = tape.gradient(loss, [query, value] + [v.value for v in layer.trainable_variables])
    context = np.asarray(tf.cast(context, "float32"))
    np.testing.assert_array_equal(context[1:], 0.0)
    np.testing.assert_array_equal(np.asarray(tf.cast(weights, "float32"))[1:], 0.0)
    assert np.all(np.isfinite(context))
    for grad in grads:
        assert grad is not None and np.all(np.isfinite(np.asarray(tf.cast(grad, "float32"))))
    # the fully masked examples pass no gradient back to their inputs
    np.testing.assert_array_equal(np.asarray(grads[1])[1:], 0.0)


@pytest.mark.parametrize(
    ("query_shape", "value_shape", "key_shape", "message"),
    [
        (
            (2, 3, 4, DIM),
            (2, 5, DIM),
            None,
            r"`query` must have rank 2 .* Received: query.shape=\(2, 3, 4, 6\)",
        ),
        (
            (2, 3, DIM),
            (2, DIM),
            None,
            r"`value` must have rank 3 .* Received: value.shape=\(2, 6\)",
        ),
        (
            (2, 3, DIM),
            (2, 5, DIM),
            (2, DIM),
            r"`key` must have rank 3 .* Received: key.shape=\(2, 6\)",
        ),
        ((2, 3, DIM), (2, 5, DIM), (2, 4, DIM), r"same length Tv. Received: key.shape=\(2, 4, 6\)"),
    ],
)
def test_wrong_rank_raises_naming_the_argument(
    factory, query_shape, value_shape, key_shape, message
):
    key = None if key_shape is None else _rand(*key_shape)
    with pytest.raises(ValueError, match=message):
        factory()(_rand(*query_shape), _rand(*value_shape), key=key)


def test_wrong_rank_raises_in_a_functional_model(factory):
    with pytest.raises(
        ValueError, match=r"`value` must have rank 3 .* Received: value.shape=\(None, 6\)"
    ):
        factory()(keras.Input((None, DIM)), keras.Input((DIM,)))


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, "0.1", None])
def test_bad_dropout_raises(factory, dropout):
    with pytest.raises(
        ValueError, match=r"`dropout` must be a float in \[0, 1\). Received: dropout="
    ):
        factory(dropout=dropout)


def test_bad_mask_argument_raises(factory):
    with pytest.raises(ValueError, match=r"`mask` must be a list `\[query_mask, value_mask\]`"):
        factory()(_rand(2, 3, DIM), _rand(2, 5, DIM), mask=np.ones((2, 5), bool))


def test_causal_needs_a_query_sequence(factory):
    with pytest.raises(ValueError, match=r"`use_causal_mask=True` needs a query sequence"):
        factory()(_rand(2, DIM), _rand(2, 5, DIM), use_causal_mask=True)


def test_subclass_with_a_custom_score():
    """Users add a score function by implementing `score`; masks and softmax come for free."""

    class NegativeDistanceAttention(BaseScoreAttention):
        def score(self, query, key, value_length):
            diff = keras.ops.expand_dims(query, 2) - keras.ops.expand_dims(key, 1)
            return -keras.ops.sum(diff * diff, axis=-1)

    query, value = _rand(2, 3, DIM), _rand(2, 5, DIM, seed=1)
    value_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
    _, weights = NegativeDistanceAttention()(
        query, value, value_mask=value_mask, return_attention_scores=True
    )
    scores = -((query[:, :, None, :] - value[:, None, :, :]) ** 2).sum(-1)
    scores = np.where(value_mask[:, None, :], scores, -np.inf)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(weights), expected, atol=1e-5)


@pytest.mark.slow
def test_one_step_decoder_query_converts_to_tflite(factory, tmp_path):
    """The decoding use: one query step over a padded memory, builtins-only TFLite at two lengths."""
    from tests.layer_contract import convert_builtins_only, run_tflite

    step = keras.Input((DIM,), name="step")
    memory = keras.Input((None, DIM), name="memory")
    memory_mask = keras.Input((None,), dtype="bool", name="memory_mask")
    context, weights = factory()(step, memory, value_mask=memory_mask, return_attention_scores=True)
    model = keras.Model(
        {"step": step, "memory": memory, "memory_mask": memory_mask},
        {"context": context, "weights": weights},
    )
    flatbuffer = convert_builtins_only(model, tmp_path)
    for length in (4, 9):
        feed = {
            "step": _rand(3, DIM),
            "memory": _rand(3, length, DIM, seed=length),
            "memory_mask": np.arange(length)[None, :] < np.array([[length], [2], [0]]),
        }
        expected = model(feed)
        actual = run_tflite(flatbuffer, feed)
        for name in ("context", "weights"):
            np.testing.assert_allclose(actual[name], np.asarray(expected[name]), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(actual["context"][2], 0.0)


# -- checks at every call, not only at build (issue 16) ---------------------------------------


def _built(factory):
    layer = factory()
    layer(_rand(2, 3, DIM), _rand(2, 5, DIM))
    return layer


def test_rank_2_value_after_build_raises(factory):
    layer = _built(factory)
    with pytest.raises(
        ValueError, match=r"`value` must have rank 3 .* Received: value.shape=\(2, 6\)"
    ):
        layer(_rand(2, 3, DIM), _rand(2, 5, DIM)[:, 0])


def test_batch_mismatch_after_build_raises(factory):
    layer = _built(factory)
    with pytest.raises(
        ValueError, match=r"`value` must have shape `\(batch_size, Tv, 6\)` with `batch_size` = 2"
    ):
        layer(_rand(2, 3, DIM), _rand(1, 5, DIM))


def test_wrong_depth_after_build_raises(factory):
    layer = _built(factory)
    with pytest.raises(ValueError, match=r"query.*Received: query(.shape=\(2, 3, 5\)|_dim=5)"):
        layer(_rand(2, 3, DIM - 1), _rand(2, 5, DIM))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"value_mask": np.ones((2, 4), bool)}, "value_mask"),
        ({"value_mask": np.ones((1, 5), bool)}, "value_mask"),
        ({"key_mask": np.ones((2, 6), bool)}, "key_mask"),
        ({"query_mask": np.ones((2, 4), bool)}, "query_mask"),
        ({"attention_mask": np.ones((2, 3, 4), bool)}, "attention_mask"),
        ({"attention_mask": np.ones((2, 5), bool)}, "attention_mask"),
    ],
)
def test_wrong_mask_shape_raises_naming_the_mask(factory, kwargs, arg):
    layer = _built(factory)
    with pytest.raises(ValueError, match=rf"`{arg}` must have .* Received: {arg}.shape="):
        layer(_rand(2, 3, DIM), _rand(2, 5, DIM), **kwargs)


def test_wrong_mask_shape_in_a_traced_call_names_the_mask(factory):
    layer = _built(factory)
    signature = [
        tf.TensorSpec((None, None, DIM)),
        tf.TensorSpec((None, None, DIM)),
        tf.TensorSpec((None, None), tf.bool),
    ]
    traced = tf.function(lambda q, v, m: layer(q, v, value_mask=m), input_signature=signature)
    traced(_rand(2, 3, DIM), _rand(2, 5, DIM), np.ones((2, 5), bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`value_mask` must have shape"):
        traced(_rand(2, 3, DIM), _rand(2, 5, DIM), np.ones((2, 4), bool))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`value_mask` must have shape"):
        traced(_rand(2, 3, DIM), _rand(2, 5, DIM), np.ones((1, 5), bool))


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_float_masks_are_refused(factory, dtype):
    """An additive mask cast to bool would be inverted: refused, naming how to convert it."""
    layer = _built(factory)
    additive = np.zeros((2, 5), dtype)
    additive[:, 3:] = -1e4
    with pytest.raises(ValueError, match=r"`value_mask` must be a boolean mask .*`mask == 0`"):
        layer(_rand(2, 3, DIM), _rand(2, 5, DIM), value_mask=additive)
    # Converted as the message says, the mask drops the positions it marks.
    _, weights = layer(
        _rand(2, 3, DIM), _rand(2, 5, DIM), value_mask=additive == 0, return_attention_scores=True
    )
    np.testing.assert_array_equal(np.asarray(weights)[..., 3:], 0.0)


def test_integer_and_bool_masks_agree(factory):
    layer = _built(factory)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    q, v = _rand(2, 3, DIM), _rand(2, 5, DIM)
    as_int = layer(q, v, value_mask=mask.astype("int32"))
    as_bool = layer(q, v, value_mask=mask.astype(bool))
    np.testing.assert_array_equal(np.asarray(as_int), np.asarray(as_bool))


@pytest.mark.parametrize(
    "shapes",
    [
        ((0, 3, DIM), (0, 5, DIM)),
        ((2, 0, DIM), (2, 5, DIM)),
        ((2, 3, DIM), (2, 0, DIM)),
        ((0, DIM), (0, 5, DIM)),
    ],
)
def test_empty_batch_or_sequence_gives_empty_output(factory, shapes):
    layer = _built(factory)
    context, weights = layer(_rand(*shapes[0]), _rand(*shapes[1]), return_attention_scores=True)
    assert tuple(context.shape) == shapes[0][:-1] + (DIM,)
    assert tuple(weights.shape) == shapes[0][:-1] + (shapes[1][1],)
    assert np.all(np.isfinite(np.asarray(context)))
    if shapes[1][1] == 0:  # an empty memory: a zero context
        np.testing.assert_array_equal(np.asarray(context), 0.0)
