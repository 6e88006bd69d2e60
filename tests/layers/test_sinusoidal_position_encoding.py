import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import SinusoidalPositionEncoding
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand
from tests.numpy_reference import sinusoidal_encoding

SPECS = {
    "even_dim": ContractSpec(
        SinusoidalPositionEncoding,
        inputs={"input": ("T", 8)},
        returns_scores=False,
        arg_names={"input": "inputs"},
    ),
    "odd_dim_offset": ContractSpec(
        SinusoidalPositionEncoding,
        init_kwargs={"max_wavelength": 500},
        inputs={"input": ("T", 7)},
        returns_scores=False,
        arg_names={"input": "inputs"},
        call_kwargs={"start_index": 3},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


@pytest.mark.parametrize("dim", [8, 7, 1])
@pytest.mark.parametrize("start_index", [0, 5])
@pytest.mark.parametrize("max_wavelength", [10000, 100.0])
def test_matches_the_formula_of_the_paper(dim, start_index, max_wavelength):
    layer = SinusoidalPositionEncoding(max_wavelength=max_wavelength)
    x = rand(3, 30, dim)
    actual = np.asarray(layer(x, start_index=start_index))
    expected = sinusoidal_encoding(np.arange(30) + start_index, dim, max_wavelength)
    assert actual.shape == (3, 30, dim)
    for row in actual:  # the same encoding for every batch row
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-5)


def test_first_positions_by_hand():
    encoding = np.asarray(SinusoidalPositionEncoding(max_wavelength=100)(np.zeros((1, 3, 4))))[0]
    # dim 4: features (sin, cos) at frequency 1, then (sin, cos) at 100^(-2/4) = 0.1.
    expected = [
        [0.0, 1.0, 0.0, 1.0],
        [np.sin(1.0), np.cos(1.0), np.sin(0.1), np.cos(0.1)],
        [np.sin(2.0), np.cos(2.0), np.sin(0.2), np.cos(0.2)],
    ]
    np.testing.assert_allclose(encoding, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dim", [16, 7])
def test_matches_keras_hub_sine_position_encoding(dim):
    import keras_hub

    x = rand(2, 40, dim)
    theirs = keras_hub.layers.SinePositionEncoding(max_wavelength=1000)
    ours = SinusoidalPositionEncoding(max_wavelength=1000)
    for start in (0, 9):
        np.testing.assert_allclose(
            np.asarray(ours(x, start_index=start)),
            np.asarray(theirs(x, start_index=start)),
            rtol=0,
            atol=1e-5,
        )


def test_float16_keeps_far_positions_exact():
    """Angles in float32: at positions ~2000 the float16 encoding is the float32 one rounded."""
    x = rand(1, 64, 32)
    expected = sinusoidal_encoding(np.arange(64) + 2000, 32)
    layer = SinusoidalPositionEncoding(dtype="mixed_float16")
    actual = layer(x, start_index=2000)
    assert keras.backend.standardize_dtype(actual.dtype) == "float16"
    # float16 spacing near 1 is 2^-10; the angles alone would be off by radians in float16.
    np.testing.assert_allclose(np.asarray(actual, "float32")[0], expected, rtol=0, atol=2e-3)


def test_decoding_steps_with_a_tensor_start_index_under_xla():
    layer = SinusoidalPositionEncoding()
    x = rand(2, 9, 6)
    full = np.asarray(layer(x))
    step = tf.function(lambda token, t: layer(token, start_index=t), jit_compile=True)
    for t in range(9):
        actual = np.asarray(step(x[:, t : t + 1], tf.constant(t)))
        np.testing.assert_allclose(actual[:, 0], full[:, t], rtol=0, atol=1e-6)
        eager = np.asarray(layer(x[:, t : t + 1], start_index=t))
        np.testing.assert_allclose(eager[:, 0], full[:, t], rtol=0, atol=1e-6)


def test_output_carries_the_input_mask():
    ids = np.array([[4, 2, 0], [1, 0, 0]])
    x = keras.layers.Embedding(10, 6, mask_zero=True)(ids)
    encoding = SinusoidalPositionEncoding()(x)
    np.testing.assert_array_equal(np.asarray(encoding._keras_mask), ids != 0)
    summed = keras.layers.Add()([x, encoding])
    np.testing.assert_array_equal(np.asarray(summed._keras_mask), ids != 0)


@pytest.mark.parametrize("value", [0, -1, "10000", True, None])
def test_bad_max_wavelength_raises(value):
    with pytest.raises(
        ValueError,
        match=rf"`max_wavelength` must be a positive number. Received: max_wavelength={value!r}",
    ):
        SinusoidalPositionEncoding(max_wavelength=value)


@pytest.mark.parametrize(
    ("start_index", "message"),
    [
        (-1, r"Received: start_index=-1(?![0-9.])"),
        (1.5, r"Received: start_index=1.5(?![0-9.])"),
        (True, r"Received: start_index=True(?![0-9.])"),
        (np.float32(2.0), r"Received: start_index=<tensor shape=\(\) dtype=float32>"),
        (tf.constant([1, 2]), r"Received: start_index=<tensor shape=\(2,\) dtype=int32>"),
    ],
)
def test_bad_start_index_raises(start_index, message):
    with pytest.raises(ValueError, match=r"`start_index` must be a non-negative int .*" + message):
        SinusoidalPositionEncoding()(rand(2, 3, 4), start_index=start_index)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 4), r"Received: inputs.shape=\(2, 4\)"),
        ((2, 3, 4, 5), r"Received: inputs.shape=\(2, 3, 4, 5\)"),
    ],
)
def test_bad_input_shapes_raise(shape, message):
    with pytest.raises(ValueError, match=r"must have rank 3 .*" + message):
        SinusoidalPositionEncoding()(rand(*shape))


def test_unknown_feature_size_raises():
    with pytest.raises(
        ValueError, match=r"known `dim`. Received: inputs.shape=\(None, None, None\)"
    ):
        SinusoidalPositionEncoding()(keras.Input((None, None)))


@pytest.mark.slow
def test_tensor_start_index_converts_to_tflite_builtins(tmp_path):
    layer = SinusoidalPositionEncoding()
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
        expected = np.asarray(layer(x, start_index=start))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
