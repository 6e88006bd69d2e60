import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import MultiHeadAttention, TokenAndPositionEmbedding
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.numpy_reference import sinusoidal_encoding

SPECS = {
    "learned": ContractSpec(
        TokenAndPositionEmbedding,
        init_kwargs={
            "vocabulary_size": 20,
            "sequence_length": 12,
            "embedding_dim": 8,
            "mask_zero": True,
        },
        inputs={"input": ("T",)},
        int_inputs={"input": 20},
        returns_scores=False,
        arg_names={"input": "inputs"},
        call_kwargs={"start_index": 1},
    ),
    "sinusoidal": ContractSpec(
        TokenAndPositionEmbedding,
        init_kwargs={
            "vocabulary_size": 20,
            "sequence_length": 12,
            "embedding_dim": 7,
            "position": "sinusoidal",
        },
        inputs={"input": ("T",)},
        int_inputs={"input": 20},
        returns_scores=False,
        arg_names={"input": "inputs"},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


def ids(*shape, vocabulary_size=50, seed=0):
    return np.random.default_rng(seed).integers(1, vocabulary_size, shape).astype("int32")


@pytest.mark.parametrize("start_index", [0, 4])
def test_learned_sum_of_the_two_tables(start_index):
    layer = TokenAndPositionEmbedding(50, 16, 8)
    tokens = ids(3, 6)
    output = np.asarray(layer(tokens, start_index=start_index))
    token_table = np.asarray(layer._token_embedding.embeddings)
    position_table = np.asarray(layer._position_embedding.embeddings)
    expected = token_table[tokens] + position_table[start_index : start_index + 6]
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-7)
    assert not np.allclose(token_table[:16], position_table)  # each table has its own values


@pytest.mark.parametrize("start_index", [0, 4])
def test_sinusoidal_sum_of_token_embedding_and_the_formula(start_index):
    layer = TokenAndPositionEmbedding(50, 16, 6, position="sinusoidal")
    tokens = ids(2, 9)
    output = np.asarray(layer(tokens, start_index=start_index))
    token_table = np.asarray(layer._token_embedding.embeddings)
    expected = token_table[tokens] + sinusoidal_encoding(np.arange(9) + start_index, 6)
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-6)
    assert [w.path for w in layer.weights] == [
        "token_and_position_embedding/token_embedding/embeddings"
    ]


def test_weight_names_and_float32_weights_under_mixed_precision():
    layer = TokenAndPositionEmbedding(50, 16, 8, dtype="mixed_bfloat16")
    output = layer(ids(2, 5))
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    assert [(w.path, w.dtype) for w in layer.weights] == [
        ("token_and_position_embedding/token_embedding/embeddings", "float32"),
        ("token_and_position_embedding/position_embedding/embeddings", "float32"),
    ]


@pytest.mark.filterwarnings("ignore:.*does not support masking")  # keras_hub's sublayer
def test_matches_keras_hub_token_and_position_embedding():
    import keras_hub

    tokens = ids(2, 7)
    theirs = keras_hub.layers.TokenAndPositionEmbedding(50, 16, 8, mask_zero=True)
    ours = TokenAndPositionEmbedding(50, 16, 8, mask_zero=True)
    theirs(tokens)
    ours(tokens)
    ours.set_weights(theirs.get_weights())  # token table, then position table
    for start in (0, 5):
        np.testing.assert_array_equal(
            np.asarray(ours(tokens, start_index=start)),
            np.asarray(theirs(tokens, start_index=start)),
        )


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_padding_mask_reaches_multi_head_attention(position):
    tokens = np.array([[5, 7, 9, 0, 0], [3, 4, 0, 0, 0]], "int32")
    embed = TokenAndPositionEmbedding(20, 8, 8, mask_zero=True, position=position)
    attention = MultiHeadAttention(num_heads=2, key_dim=4)
    x = embed(tokens)
    np.testing.assert_array_equal(np.asarray(x._keras_mask), tokens != 0)
    output, scores = attention(x, x, return_attention_scores=True)
    padded = np.broadcast_to((tokens == 0)[:, None, None, :], scores.shape)
    assert np.all(np.asarray(scores)[padded] == 0.0)  # padded keys get no weight
    np.testing.assert_array_equal(np.asarray(output)[tokens == 0], 0.0)  # padded queries are zero
    # The mask flows the same way in a functional model.
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, attention(embed(inputs), embed(inputs)))
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(output), rtol=0, atol=1e-6)


def test_no_mask_without_mask_zero():
    tokens = np.array([[5, 0]])
    assert getattr(TokenAndPositionEmbedding(20, 8, 4)(tokens), "_keras_mask", None) is None


def test_decoding_steps_with_a_tensor_start_index_under_xla():
    for position in ("learned", "sinusoidal"):
        layer = TokenAndPositionEmbedding(50, 9, 6, position=position)
        tokens = ids(2, 9)
        full = np.asarray(layer(tokens))
        step = tf.function(
            lambda token, t, layer=layer: layer(token, start_index=t), jit_compile=True
        )
        for t in range(9):
            actual = np.asarray(step(tokens[:, t : t + 1], tf.constant(t)))
            np.testing.assert_allclose(actual[:, 0], full[:, t], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad_id", [20, -1])
def test_out_of_range_numpy_ids_raise(bad_id):
    layer = TokenAndPositionEmbedding(20, 8, 4)
    tokens = np.array([[1, 2, bad_id]])
    with pytest.raises(
        ValueError,
        match=rf"must lie in \[0, vocabulary_size\). Received: vocabulary_size=20, inputs with the ids \[{bad_id}\]",
    ):
        layer(tokens)
    with pytest.raises(ValueError, match=rf"the ids \[{bad_id}\]"):
        layer(tokens.tolist())
    layer(np.array([[0, 19]]))  # the extremes are fine


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_positions_beyond_sequence_length_raise(position):
    layer = TokenAndPositionEmbedding(20, 8, 4, position=position)
    with pytest.raises(ValueError, match=r"Received: sequence_length=8, seq_len=9, start_index=0"):
        layer(np.ones((1, 9), "int32"))
    with pytest.raises(ValueError, match=r"Received: sequence_length=8, seq_len=2, start_index=7"):
        layer(np.ones((1, 2), "int32"), start_index=7)
    with pytest.raises(ValueError, match=r"Received: sequence_length=8, seq_len=10, start_index=0"):
        TokenAndPositionEmbedding(20, 8, 4, position=position)(keras.Input((10,), dtype="int32"))
    assert tuple(layer(np.ones((1, 1), "int32"), start_index=7).shape) == (1, 1, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocabulary_size": 0}, r"`vocabulary_size` must be a positive integer. Received: vocabulary_size=0"),
        ({"sequence_length": None}, r"`sequence_length` must be a positive integer. Received: sequence_length=None"),
        ({"embedding_dim": -8}, r"`embedding_dim` must be a positive integer. Received: embedding_dim=-8"),
        ({"mask_zero": "yes"}, r"`mask_zero` must be a bool. Received: mask_zero='yes'"),
        ({"position": "rotary"}, r"`position` must be one of \('learned', 'sinusoidal'\). Received: position='rotary'"),
    ],
)  # fmt: skip
def test_bad_arguments_raise(kwargs, message):
    arguments = {"vocabulary_size": 20, "sequence_length": 8, "embedding_dim": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        TokenAndPositionEmbedding(**arguments)


def test_bad_inputs_raise():
    layer = TokenAndPositionEmbedding(20, 8, 4)
    with pytest.raises(
        ValueError, match=r"rank 2 `\(batch_size, seq_len\)`. Received: inputs.shape=\(2, 3, 4\)"
    ):
        layer(np.ones((2, 3, 4), "int32"))
    with pytest.raises(ValueError, match=r"Received: start_index=-1"):
        TokenAndPositionEmbedding(20, 8, 4)(np.ones((1, 2), "int32"), start_index=-1)


@pytest.mark.slow
@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_tensor_start_index_converts_to_tflite_builtins(position, tmp_path):
    layer = TokenAndPositionEmbedding(50, 48, 6, position=position)
    layer.build((None, None))
    flatbuffer = convert_endpoint_builtins_only(
        layer,
        lambda tokens, start: {"output": layer(tokens, start_index=start)},
        [
            tf.TensorSpec((None, None), tf.int32, name="tokens"),
            tf.TensorSpec((), tf.int32, name="start"),
        ],
        tmp_path,
    )
    for length, start in ((5, 0), (1, 7), (3, 40)):
        tokens = ids(2, length)
        actual = run_tflite(flatbuffer, {"tokens": tokens, "start": np.int32(start)})["output"]
        expected = np.asarray(layer(tokens, start_index=start))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def test_python_lists_are_ids_and_fractional_ids_are_refused():
    layer = TokenAndPositionEmbedding(20, 10, 6)
    np.testing.assert_allclose(layer([[1, 2, 3]]), layer(np.array([[1, 2, 3]])))
    np.testing.assert_allclose(layer(np.array([[1.0, 2.0, 3.0]])), layer(np.array([[1, 2, 3]])))
    for ids in (np.array([[1.5, 2.0, 3.0]]), tf.constant([[1.5, 2.0, 3.0]])):
        with pytest.raises(ValueError, match=r"must be whole numbers. Received: .*\[1.5\]"):
            layer(ids)
    with pytest.raises(ValueError, match=r"must lie in \[0, vocabulary_size\).*\[20\]"):
        layer([[1, 20]])
