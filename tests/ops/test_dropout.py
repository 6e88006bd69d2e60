"""ops.dropout (16 random bits per element on TensorFlow) and the private Dropout layer on it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers._dropout import Dropout
from keras_attention.ops import dropout, dropout_mask

LEVELS = 65536


def _scale(rate):
    return LEVELS / (LEVELS - round(rate * LEVELS))


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9, 1e-4])
def test_drop_fraction_and_kept_values(rate):
    x = np.random.default_rng(0).uniform(0.5, 2.0, size=(8, 4, 128, 129)).astype("float32")
    out = np.asarray(dropout(x, rate, seed=7))
    dropped = out == 0
    expected = round(rate * LEVELS) / LEVELS
    sigma = np.sqrt(expected * (1 - expected) / x.size)
    assert abs(dropped.mean() - expected) < 5 * sigma + 1e-7
    # Kept values are the input over the exact keep probability (so the mean is kept).
    np.testing.assert_allclose(out[~dropped], x[~dropped] * np.float32(_scale(rate)), rtol=1e-6)
    keep = 1 - expected  # the mean of out / E[x]: sum of x * keep_i / keep over n, sigma from it
    mean_sigma = np.sqrt((1 - keep) / (keep * x.size) * np.mean(x**2)) / np.mean(x)
    assert abs(out.mean() / x.mean() - 1) < 5 * mean_sigma


@pytest.mark.parametrize("rate", [0.1, 3 / 65536, 0.5])
def test_an_element_is_kept_when_its_half_reaches_the_threshold(rate):
    # The definition, bit for bit: draw k of seed (s, 0) gives elements 2k and 2k + 1 its two
    # 16-bit halves (signed, in the machine's byte order); kept when >= round(rate * 2**16) - 2**15.
    shape = (3, 5, 4099)
    size = int(np.prod(shape))
    draws = tf.random.stateless_uniform([(size + 1) // 2], [11, 0], dtype=tf.int32, minval=None,
                                        maxval=None).numpy()  # fmt: skip
    halves = np.frombuffer(draws.tobytes(), dtype=np.int16)[:size].reshape(shape)
    expected = halves >= round(rate * LEVELS) - LEVELS // 2
    out = np.asarray(dropout(np.ones(shape, "float32"), rate, seed=11))
    np.testing.assert_array_equal(out != 0, expected)


def test_the_two_halves_of_a_draw_are_independent():
    # Neighbouring elements share one 32-bit draw: both dropped as often as rate**2.
    out = np.asarray(dropout(np.ones((1 << 21,), "float32"), 0.3, seed=3)).reshape(-1, 2)
    both = np.mean((out[:, 0] == 0) & (out[:, 1] == 0))
    first, second = np.mean(out[:, 0] == 0), np.mean(out[:, 1] == 0)
    assert abs(both - first * second) < 0.003
    assert abs(first - 0.3) < 0.003 and abs(second - 0.3) < 0.003


def test_seeds():
    x = np.ones((5, 7), "float32")  # an odd size: the last draw is half used
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.5, seed=1)),
                                  np.asarray(dropout(x, 0.5, seed=1)))  # fmt: skip
    assert (np.asarray(dropout(x, 0.5, seed=1)) != np.asarray(dropout(x, 0.5, seed=2))).any()
    generator = keras.random.SeedGenerator(4)
    masks = [np.asarray(dropout(x, 0.5, generator)) == 0 for _ in range(3)]
    assert (masks[0] != masks[1]).any() and (masks[1] != masks[2]).any()
    assert np.asarray(dropout(x, 0.5)).shape == (5, 7)  # None: keras.random.dropout


@pytest.mark.parametrize("jit_compile", [False, True])
def test_traced_generator_draws_a_new_mask_per_call(jit_compile):
    generator = keras.random.SeedGenerator(4)
    step = tf.function(lambda x: dropout(x, 0.25, generator), jit_compile=jit_compile,
                       input_signature=[tf.TensorSpec([None, 4000])])  # fmt: skip
    x = tf.ones((3, 4000))
    first, second = step(x).numpy(), step(x).numpy()
    assert (first != second).any()
    for out in (first, second):
        np.testing.assert_allclose(np.unique(out), [0.0, _scale(0.25)], rtol=1e-6)
        assert abs(np.mean(out == 0) - 0.25) < 0.02


def test_int_seeds_beyond_32_bits_are_reduced_as_keras_reduces_them():
    x = np.ones((2, 300), "float32")
    big = 2**40 + 5
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.5, seed=big)),
                                  np.asarray(dropout(x, 0.5, seed=big % (2**31 - 2))))  # fmt: skip


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_dtype_and_shape_are_kept(dtype):
    for shape in [(), (1,), (0, 3), (3, 1, 5)]:
        x = tf.ones(shape, dtype)
        out = dropout(x, 0.2, seed=5)
        assert out.dtype == x.dtype and tuple(out.shape) == shape


def test_gradient_is_the_mask_over_the_keep_probability():
    x = tf.Variable(np.random.default_rng(1).normal(size=(6, 33)).astype("float32"))
    with tf.GradientTape() as tape:
        out = dropout(x, 0.4, seed=9)
    grad = tape.gradient(out, x).numpy()
    np.testing.assert_allclose(grad, (out.numpy() != 0) * _scale(0.4), rtol=1e-6)


def test_arguments():
    x = np.ones((3,), "float32")
    np.testing.assert_array_equal(np.asarray(dropout(x, 0.0, seed=1)), x)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="rate"):
            dropout(x, bad, seed=1)
    with pytest.raises(ValueError, match="seed"):
        dropout(x, 0.5, seed="7")
    with pytest.raises(ValueError, match="floating-point.*int32"):
        dropout(np.ones((3,), "int32"), 0.5, seed=1)
    np.testing.assert_array_equal(np.asarray(dropout(x, 1e-6, seed=1)), x)  # < 2**-17: none


@pytest.mark.parametrize("seed", ["int", "generator", "traced_generator"])
def test_dropout_mask_gives_the_decisions_and_scale_of_dropout(seed):
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=(4, 3, 33, 17)).astype("float32")
    if seed == "int":
        seeds = (5, 5)
    else:
        seeds = (keras.random.SeedGenerator(8), keras.random.SeedGenerator(8))

    def both():
        keep, scale = dropout_mask(tf.shape(x), 0.3, seeds[0])
        return keep, tf.constant(scale, "float32"), dropout(x, 0.3, seeds[1])

    both = tf.function(both) if seed == "traced_generator" else both
    for _ in range(2):  # a generator advances alike in both
        keep, scale, out = (np.asarray(t) for t in both())
        assert keep.dtype == bool and keep.shape == x.shape and 0.65 < keep.mean() < 0.75
        assert scale == np.float32(_scale(0.3))
        np.testing.assert_array_equal(np.where(keep, x * scale, 0), out)


def test_dropout_mask_when_nothing_drops_and_for_bad_rates():
    assert dropout_mask((3, 4), 0.0, 1) == (None, 1.0)
    assert dropout_mask((3, 4), 2**-18, 1) == (None, 1.0)  # rounds to no dropped value
    keep, _ = dropout_mask((3, 4), 2**-16, 1)
    assert keep is not None
    for rate in (-0.5, 1.0):
        with pytest.raises(ValueError, match=r"dropout_mask: `rate` must be in \[0, 1\)"):
            dropout_mask((3, 4), rate, 1)


def test_layer_is_keras_dropout_with_the_cheaper_mask():
    layer = Dropout(0.25, seed=3, name="d")
    reference = keras.layers.Dropout(0.25, seed=3, name="d")
    assert layer.get_config() == reference.get_config()
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is Dropout and restored.rate == 0.25
    x = np.ones((4, 1000), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: unchanged
    out = np.asarray(layer(x, training=True))
    np.testing.assert_allclose(out[out != 0], _scale(0.25), rtol=1e-6)
    assert 0.2 < np.mean(out == 0) < 0.3
    assert (np.asarray(layer(x, training=True)) != out).any()  # a new mask every call
    np.testing.assert_array_equal(np.asarray(Dropout(1.0)(x, training=True)), 0 * x)
    # noise_shape: Keras's own dropout, one decision per broadcast row.
    rows = np.asarray(Dropout(0.5, noise_shape=(4, 1), seed=1)(x, training=True))
    assert all(len(set(row.tolist())) == 1 for row in rows)
