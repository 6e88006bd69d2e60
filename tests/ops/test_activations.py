"""ops.gelu (fused float32 kernels on TensorFlow) and the Transformer blocks that train with it."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import TransformerDecoderBlock, TransformerEncoderBlock
from keras_attention.ops import activations, gelu, gelu_approximate


def _reference(x, approximate):
    """GELU and its derivative in float64, from the textbook formulas (the tanh form)."""
    x = np.asarray(x, np.float64)
    if approximate:
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        value = 0.5 * x * (1 + t)
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
        return value, slope
    erf = np.vectorize(math.erf)(x / math.sqrt(2))
    return 0.5 * x * (1 + erf), 0.5 * (1 + erf) + x * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)


def _value_and_gradient(fn, x, upstream):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return y, tape.gradient(y, x, output_gradients=tf.cast(upstream, y.dtype))


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 2e-6)])
def test_value_and_gradient_equal_the_formulas(approximate, dtype, tolerance):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 3, 4000), [0.0, -30.0, 30.0, 1e-20, -8.0]]).astype(dtype)
    upstream = rng.normal(size=x.shape).astype(dtype)
    y, grad = _value_and_gradient(lambda t: gelu(t, approximate=approximate), x, upstream)
    assert y.dtype == grad.dtype == tf.as_dtype(dtype)
    value, slope = _reference(x, approximate)
    np.testing.assert_allclose(y.numpy(), value, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(grad.numpy(), upstream * slope, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("approximate", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_is_rounded_once_from_float32(approximate, dtype):
    x = tf.cast(np.random.default_rng(1).normal(0, 2, (4, 64, 96)), dtype)
    upstream = tf.cast(np.random.default_rng(2).normal(size=(4, 64, 96)), dtype)
    y, grad = _value_and_gradient(lambda t: gelu(t, approximate=approximate), x, upstream)
    assert y.dtype == grad.dtype == x.dtype
    x32, up32 = (tf.cast(t, tf.float32).numpy() for t in (x, upstream))
    value, slope = _reference(x32, approximate)
    # The float32 result from the same half-precision inputs, rounded once: within one unit
    # in the last place of the dtype, and closer to float64 than Keras's chain of
    # half-precision ops, which rounds after every step.
    ulp = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
    ours = tf.cast(y, tf.float32).numpy()
    np.testing.assert_allclose(ours, value, rtol=ulp, atol=1e-6)
    theirs = tf.cast(keras.activations.gelu(x, approximate=approximate), tf.float32).numpy()
    assert np.abs(ours - value).mean() < np.abs(theirs - value).mean()
    np.testing.assert_allclose(
        tf.cast(grad, tf.float32).numpy(), up32 * slope, rtol=2 * ulp, atol=1e-5
    )


def test_traced_once_for_every_shape_and_second_derivative():
    traced = []

    @tf.function(reduce_retracing=True)
    def run(x):
        traced.append(1)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = gelu(x, approximate=True)
            first = inner.gradient(y, x)
        return y, first, outer.gradient(first, x)

    gelu(tf.ones((1, 1)), approximate=True)  # builds the kernels
    _, forward, backward = activations._FUSED[True]
    counts = forward.experimental_get_tracing_count(), backward.experimental_get_tracing_count()
    for length in (3, 7, 1, 0):
        x = np.linspace(-4, 4, 2 * length).reshape(2, length).astype("float32")
        y, first, second = run(tf.constant(x))
        value, slope = _reference(x, True)
        np.testing.assert_allclose(y.numpy(), value, atol=2e-6)
        np.testing.assert_allclose(first.numpy(), slope, atol=2e-6)
        # The second derivative against central differences of the closed-form slope.
        h = 1e-4
        numeric = (_reference(x + h, True)[1] - _reference(x - h, True)[1]) / (2 * h)
        np.testing.assert_allclose(second.numpy(), numeric, atol=1e-3)
    assert len(traced) <= 2
    # The kernels themselves: traced for a new rank, then for unknown dimensions, no more.
    assert forward.experimental_get_tracing_count() - counts[0] <= 2
    assert backward.experimental_get_tracing_count() - counts[1] <= 3  # also its gradient


def test_symbolic_inputs_get_keras_activation():
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, gelu(inputs, approximate=True))
    x = np.linspace(-3, 3, 40).astype("float32").reshape(2, 5, 4)
    np.testing.assert_allclose(model(x), keras.activations.gelu(x, approximate=True), atol=1e-6)


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match=r"gelu: `x` must be a floating-point tensor.*int32"):
        gelu(np.arange(3, dtype="int32"))
    with pytest.raises(ValueError, match=r"gelu: `approximate` must be a bool.*'yes'"):
        gelu(np.ones(3, "float32"), approximate="yes")


def test_registered_activation_is_keras_gelu_with_the_tanh_form():
    x = np.linspace(-5, 5, 101).astype("float32")
    np.testing.assert_array_equal(
        gelu_approximate(x), keras.activations.gelu(x, approximate=True)
    )
    registered = keras.saving.get_registered_object("keras_attention>gelu_approximate")
    assert registered is gelu_approximate
    from keras_attention.models import bert

    assert bert.gelu_approximate is gelu_approximate  # the name models import


@pytest.mark.parametrize("training, switch, fused", [
    (True, None, True), (np.True_, None, False), (True, "0", False), (True, "1", True),
    (False, None, False), (None, None, False),
])  # fmt: skip
def test_when_the_blocks_take_the_fused_gelu(training, switch, fused, monkeypatch):
    calls = _count_calls(monkeypatch)
    if switch is None:
        monkeypatch.delenv("KERAS_ATTENTION_FUSED_GELU", raising=False)
    else:
        monkeypatch.setenv("KERAS_ATTENTION_FUSED_GELU", switch)
    block = TransformerEncoderBlock(16, 2, activation="gelu", dropout=0.0)
    block(np.ones((1, 3, 8), "float32"), training=training)
    assert calls == ([False] if fused else [])


def _count_calls(monkeypatch):
    calls = []
    fused = activations.gelu

    def counting(x, approximate=False):
        calls.append(approximate)
        return fused(x, approximate=approximate)

    monkeypatch.setattr("keras_attention.layers._transformer_block.gelu", counting)
    return calls


@pytest.mark.parametrize("block_cls", [TransformerEncoderBlock, TransformerDecoderBlock])
@pytest.mark.parametrize(
    "activation, approximate", [("gelu", False), (gelu_approximate, True), ("relu", None)]
)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_blocks_train_through_the_fused_gelu_like_keras(
    block_cls, activation, approximate, policy, monkeypatch
):
    """Training (dropout 0) uses `ops.gelu`; outputs and gradients equal Keras's activation."""
    calls = _count_calls(monkeypatch)
    keras.config.set_dtype_policy(policy)
    try:
        options = dict(intermediate_dim=48, num_heads=2, dropout=0.0, seed=1)
        fused = block_cls(activation=activation, **options)
        same = activation if approximate is None else (
            lambda t: keras.activations.gelu(t, approximate=approximate)
        )  # fmt: skip
        plain = block_cls(activation=same, **options)  # not recognised: Keras's activation
        x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 16)), tf.float32)
        fused(x), plain(x)
        plain.set_weights(fused.get_weights())
        results = []
        for block in (fused, plain):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = block(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(x))
            results.append((y, *tape.gradient(loss, [x, *block.trainable_weights])))
        inference = fused(x, training=False)
    finally:
        keras.config.set_dtype_policy("float32")
    assert calls == ([] if approximate is None else [approximate])  # training only
    tolerance = 1e-5 if policy == "float32" else 5e-2
    for one, two in zip(*results, strict=True):
        one, two = (tf.cast(t, tf.float32).numpy() for t in (one, two))
        np.testing.assert_allclose(one, two, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(
        tf.cast(inference, tf.float32).numpy(), tf.cast(results[0][0], tf.float32).numpy(),
        rtol=tolerance, atol=tolerance,
    )  # fmt: skip
