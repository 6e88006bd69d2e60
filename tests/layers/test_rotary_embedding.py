import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import RotaryEmbedding
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand
from tests.numpy_reference import rope_half_split, rope_paper

SPECS = {
    "heads": ContractSpec(
        RotaryEmbedding,
        inputs={"input": ("T", 3, 8)},
        returns_scores=False,
        arg_names={"input": "inputs"},
        call_kwargs={"start_index": 2},
    ),
    "heads_first": ContractSpec(
        RotaryEmbedding,
        init_kwargs={"max_wavelength": 500, "scaling_factor": 2.0, "sequence_axis": 2},
        inputs={"input": (3, "T", 8)},
        returns_scores=False,
        arg_names={"input": "inputs"},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


@pytest.mark.parametrize(
    ("max_wavelength", "scaling_factor", "start_index"),
    [(10000, 1.0, 0), (10000, 1.0, 11), (500, 4.0, 3)],
)
def test_matches_the_rotation_of_the_paper_in_rotate_half_layout(
    max_wavelength, scaling_factor, start_index
):
    x = rand(2, 7, 3, 8)
    layer = RotaryEmbedding(max_wavelength=max_wavelength, scaling_factor=scaling_factor)
    actual = np.asarray(layer(x, start_index=start_index))
    positions = np.arange(7) + start_index
    expected = rope_half_split(x, positions, max_wavelength, scaling_factor)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    # The paper's neighbour pairs are a different layout: not the same numbers.
    assert not np.allclose(actual, rope_paper(x, positions, max_wavelength, scaling_factor))


def test_rotation_by_hand():
    # dim 4: pairs (x0, x2) at frequency 1 and (x1, x3) at 100^(-1/2) = 0.1.
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]], "float32")
    y = np.asarray(RotaryEmbedding(max_wavelength=100)(x, start_index=2))[0, 0]
    a, b = 2.0, 0.2
    expected = [
        1 * np.cos(a) - 3 * np.sin(a),
        2 * np.cos(b) - 4 * np.sin(b),
        3 * np.cos(a) + 1 * np.sin(a),
        4 * np.cos(b) + 2 * np.sin(b),
    ]
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)


def test_scores_depend_only_on_relative_positions():
    rope = RotaryEmbedding()
    query, key = rand(1, 9, 4, 16), rand(1, 11, 4, 16)

    def scores(query_start, key_start):
        q = np.asarray(rope(query, start_index=query_start), "float64")
        k = np.asarray(rope(key, start_index=key_start), "float64")
        return np.einsum("bqhd,bkhd->bhqk", q, k)

    base = scores(0, 0)
    for shift in (1, 17, 250):  # the same relative positions, shifted
        np.testing.assert_allclose(scores(shift, shift), base, rtol=0, atol=2e-4)
    # ...but a different relative offset changes the scores.
    assert np.abs(scores(3, 0) - base).max() > 0.1
    # The same query vector at every position m = 5 + i, the same key at every n = j: the
    # scores are a function of m - n alone, so constant along diagonals (a Toeplitz matrix).
    q_repeated = np.repeat(query[:, :1], 9, axis=1)
    k_repeated = np.repeat(key[:, :1], 11, axis=1)
    q = np.asarray(rope(q_repeated, start_index=5), "float64")
    k = np.asarray(rope(k_repeated), "float64")
    s = np.einsum("bqhd,bkhd->bhqk", q, k)
    np.testing.assert_allclose(s[..., 1:, 1:], s[..., :-1, :-1], rtol=0, atol=1e-4)


def test_keeps_norms():
    x = rand(2, 20, 2, 16)
    y = np.asarray(RotaryEmbedding()(x, start_index=100))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 12, 3, 8), {}),
        ((2, 12, 8), {"max_wavelength": 500, "scaling_factor": 4.0}),
        ((2, 3, 12, 8), {"sequence_axis": 2}),
        ((2, 8, 12), {"sequence_axis": 2, "feature_axis": 1}),
    ],
)
def test_matches_keras_hub_rotary_embedding(shape, kwargs):
    import keras_hub

    x = rand(*shape)
    theirs = keras_hub.layers.RotaryEmbedding(**kwargs)
    ours = RotaryEmbedding(**kwargs)
    for start in (0, 7):
        np.testing.assert_allclose(
            np.asarray(ours(x, start_index=start)),
            np.asarray(theirs(x, start_index=start)),
            rtol=0,
            atol=1e-5,
        )


def test_decoding_steps_with_a_tensor_start_index_under_xla():
    layer = RotaryEmbedding()
    x = rand(2, 9, 2, 8)
    full = np.asarray(layer(x))
    step = tf.function(lambda token, t: layer(token, start_index=t), jit_compile=True)
    for t in range(9):
        actual = np.asarray(step(x[:, t : t + 1], tf.constant(t)))
        np.testing.assert_allclose(actual[:, 0], full[:, t], rtol=0, atol=1e-6)


def test_output_carries_the_input_mask():
    ids = np.array([[4, 2, 0], [1, 0, 0]])
    x = keras.layers.Embedding(10, 6, mask_zero=True)(ids)
    np.testing.assert_array_equal(np.asarray(RotaryEmbedding()(x)._keras_mask), ids != 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_wavelength": 0},
            r"`max_wavelength` must be a positive number. Received: max_wavelength=0",
        ),
        (
            {"scaling_factor": -2.0},
            r"`scaling_factor` must be a positive number. Received: scaling_factor=-2.0",
        ),
        ({"sequence_axis": 1.0}, r"`sequence_axis` must be an int. Received: sequence_axis=1.0"),
        ({"feature_axis": None}, r"`feature_axis` must be an int. Received: feature_axis=None"),
        ({"sequence_axis": -1}, r"must differ. Received: sequence_axis=-1, feature_axis=-1"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RotaryEmbedding(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "shape", "message"),
    [
        ({}, (2, 5, 7), r"known, even size .* Received: inputs.shape=\(2, 5, 7\), feature_axis=-1"),
        (
            {"sequence_axis": 3},
            (2, 5, 8),
            r"`sequence_axis` is out of range .* Received: sequence_axis=3",
        ),
        (
            {"sequence_axis": 2},
            (2, 5, 8),
            r"name the same axis. Received: sequence_axis=2, feature_axis=-1",
        ),
    ],
)
def test_bad_inputs_raise(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        RotaryEmbedding(**kwargs)(rand(*shape))


def test_unknown_feature_size_raises_in_a_functional_model():
    with pytest.raises(ValueError, match=r"known, even size .* inputs.shape=\(None, None, None\)"):
        RotaryEmbedding()(keras.Input((None, None)))


def test_bad_start_index_raises():
    with pytest.raises(ValueError, match=r"`start_index` must be .* Received: start_index=-3"):
        RotaryEmbedding()(rand(1, 2, 4), start_index=-3)


@pytest.mark.slow
def test_tensor_start_index_converts_to_tflite_builtins(tmp_path):
    layer = RotaryEmbedding()
    layer.build((None, None, 2, 8))
    flatbuffer = convert_endpoint_builtins_only(
        layer,
        lambda x, start: {"output": layer(x, start_index=start)},
        [
            tf.TensorSpec((None, None, 2, 8), tf.float32, name="x"),
            tf.TensorSpec((), tf.int32, name="start"),
        ],
        tmp_path,
    )
    for length, start in ((5, 0), (1, 7), (3, 40)):
        x = rand(2, length, 2, 8)
        actual = run_tflite(flatbuffer, {"x": x, "start": np.int32(start)})["output"]
        expected = np.asarray(layer(x, start_index=start))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
