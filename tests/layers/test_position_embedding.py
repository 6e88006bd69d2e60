import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import PositionEmbedding
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand

SPEC = ContractSpec(
    PositionEmbedding,
    init_kwargs={"sequence_length": 12},
    inputs={"input": ("T", 6)},
    returns_scores=False,
    arg_names={"input": "inputs"},
    call_kwargs={"start_index": 2},
)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


@pytest.mark.parametrize("start_index", [0, 3, 7])
def test_returns_the_rows_of_the_table(start_index):
    layer = PositionEmbedding(sequence_length=12, initializer="random_normal")
    x = rand(3, 5, 4)
    output = np.asarray(layer(x, start_index=start_index))
    table = np.asarray(layer.embeddings)
    assert table.shape == (12, 4)
    np.testing.assert_array_equal(
        output, np.broadcast_to(table[start_index : start_index + 5], x.shape)
    )


def test_only_the_used_rows_get_gradients():
    layer = PositionEmbedding(sequence_length=10)
    x = rand(2, 4, 3)
    layer(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, start_index=tf.constant(5)) ** 2)
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.embeddings.value)).numpy()
    expected = np.zeros((10, 3))
    expected[5:9] = 2 * 2 * np.asarray(layer.embeddings)[5:9]  # 2 batch rows, d(e^2) = 2e
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_decoding_steps_with_a_tensor_start_index_under_xla():
    layer = PositionEmbedding(sequence_length=9)
    x = rand(2, 9, 6)
    full = np.asarray(layer(x))
    step = tf.function(lambda token, t: layer(token, start_index=t), jit_compile=True)
    for t in range(9):
        np.testing.assert_array_equal(
            np.asarray(step(x[:, t : t + 1], tf.constant(t)))[:, 0], full[:, t]
        )


def test_output_carries_the_input_mask():
    ids = np.array([[4, 2, 0], [1, 0, 0]])
    x = keras.layers.Embedding(10, 6, mask_zero=True)(ids)
    positions = PositionEmbedding(sequence_length=3)(x)
    np.testing.assert_array_equal(np.asarray(positions._keras_mask), ids != 0)


@pytest.mark.parametrize(
    ("length", "start_index", "message"),
    [
        (11, 0, r"Received: sequence_length=10, seq_len=11, start_index=0"),
        (5, 6, r"Received: sequence_length=10, seq_len=5, start_index=6"),
    ],
)
def test_positions_beyond_sequence_length_raise(length, start_index, message):
    layer = PositionEmbedding(sequence_length=10)
    layer(rand(1, 2, 4))
    with pytest.raises(ValueError, match=r"beyond the `sequence_length` .*" + message):
        layer(rand(1, length, 4), start_index=start_index)
    layer(rand(1, 10 - start_index, 4), start_index=start_index)  # the longest that fits


def test_static_length_beyond_sequence_length_raises_in_a_functional_model():
    with pytest.raises(
        ValueError, match=r"Received: sequence_length=10, seq_len=12, start_index=0"
    ):
        PositionEmbedding(sequence_length=10)(keras.Input((12, 4)))
    layer = PositionEmbedding(sequence_length=10)
    with pytest.raises(ValueError, match=r"Received: sequence_length=10, seq_len=8, start_index=3"):
        layer(keras.Input((8, 4)), start_index=3)
    assert tuple(layer(keras.Input((None, 4)), start_index=3).shape) == (None, None, 4)


@pytest.mark.parametrize("value", [0, -4, None, 2.5, True])
def test_bad_sequence_length_raises(value):
    with pytest.raises(
        ValueError,
        match=rf"`sequence_length` must be a positive integer. Received: sequence_length={value!r}",
    ):
        PositionEmbedding(sequence_length=value)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 4), r"must have rank 3 .* Received: inputs.shape=\(2, 4\)"),
        ((None, None, None), r"known `dim`. Received: inputs.shape=\(None, None, None\)"),
    ],
)
def test_bad_input_shapes_raise(shape, message):
    with pytest.raises(ValueError, match=message):
        PositionEmbedding(sequence_length=4).build(shape)


def test_bad_start_index_raises():
    with pytest.raises(ValueError, match=r"`start_index` must be .* Received: start_index=-1"):
        PositionEmbedding(sequence_length=4)(rand(1, 2, 3), start_index=-1)


@pytest.mark.slow
def test_tensor_start_index_converts_to_tflite_builtins(tmp_path):
    layer = PositionEmbedding(sequence_length=48)
    layer.build((None, None, 6))
    flatbuffer = convert_endpoint_builtins_only(
        layer,
        lambda x, start: {"output": layer(x, start_index=start)},
        [
            tf.TensorSpec((None, None, 6), tf.float32, name="x"),
            tf.TensorSpec((), tf.int32, name="start"),
        ],
        tmp_path,
    )
    for length, start in ((5, 0), (1, 7), (3, 40)):
        x = rand(2, length, 6)
        actual = run_tflite(flatbuffer, {"x": x, "start": np.int32(start)})["output"]
        np.testing.assert_array_equal(actual, np.asarray(layer(x, start_index=start)))
