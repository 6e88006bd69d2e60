import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import MaskedLMHead
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand

SPEC = ContractSpec(
    MaskedLMHead,
    init_kwargs={"vocabulary_size": 11, "intermediate_activation": "gelu"},
    inputs={"inputs": ("T", 8), "mask_positions": ("P",)},
    int_inputs={"mask_positions": 4},  # positions in [0, 4), below every T
    returns_scores=False,
    lengths=({"T": 6, "P": 3}, {"T": 4, "P": 5}),
)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


def _layer_norm(x, gamma, beta, epsilon=1e-5):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


_erf = np.vectorize(math.erf)


def _reference(head, x, positions, kernel):
    """NumPy: gather, `LN(gelu(W x + b))`, `h kernel + c`."""
    dense_kernel = np.asarray(head._intermediate_dense.kernel)
    dense_bias = np.asarray(head._intermediate_dense.bias)
    gamma = np.asarray(head._intermediate_layer_norm.gamma)
    beta = np.asarray(head._intermediate_layer_norm.beta)
    gathered = np.take_along_axis(x, positions[..., None], axis=1)  # (B, P, H)
    h = gathered @ dense_kernel + dense_bias
    h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))  # exact gelu
    h = _layer_norm(h, gamma, beta)
    return h @ kernel + np.asarray(head._bias)


def _randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign((0.5 * rng.standard_normal(weight.shape) + 1.0).astype("float32"))


def test_own_kernel_matches_numpy():
    head = MaskedLMHead(vocabulary_size=13, intermediate_activation="gelu")
    x = rand(3, 7, 8)
    positions = np.array([[0, 6], [3, 3], [5, 1]], "int32")
    head(x, positions)
    _randomize(head)
    expected = _reference(head, x, positions, np.asarray(head._kernel))
    np.testing.assert_allclose(_np(head(x, positions)), expected, rtol=1e-5, atol=1e-5)


def test_tied_projection_is_the_transposed_embedding_table():
    embedding = keras.layers.Embedding(17, 8)
    head = MaskedLMHead(token_embedding=embedding, intermediate_activation="gelu")
    assert head.vocabulary_size == 17
    x = rand(2, 5, 8)
    positions = np.array([[4, 0, 2], [1, 1, 3]], "int32")
    output = head(x, positions)
    assert tuple(output.shape) == (2, 3, 17)
    _randomize(head, seed=1)
    # No kernel of its own: the table, the dense, the layer norm and the bias.
    assert sorted("/".join(w.path.split("/")[-2:]) for w in head.weights) == [
        "embedding/embeddings",
        "intermediate_dense/bias",
        "intermediate_dense/kernel",
        "intermediate_layer_norm/beta",
        "intermediate_layer_norm/gamma",
        "masked_lm_head/output_bias",
    ]
    expected = _reference(head, x, positions, np.asarray(embedding.embeddings).T)
    np.testing.assert_allclose(_np(head(x, positions)), expected, rtol=1e-5, atol=1e-5)
    # Training the head moves the shared table, only through the rows it projects on.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(head(x, positions)[..., 5])
    grad = tf.convert_to_tensor(tape.gradient(loss, embedding.embeddings.value)).numpy()
    assert np.abs(grad[5]).max() > 0 and np.abs(np.delete(grad, 5, axis=0)).max() == 0


def test_matches_keras_hub_masked_lm_head():
    embedding = keras.layers.ReversibleEmbedding(19, 8)
    ours = MaskedLMHead(token_embedding=embedding, intermediate_activation="gelu")
    theirs = keras_hub.layers.MaskedLMHead(
        token_embedding=embedding, intermediate_activation="gelu"
    )
    x = rand(2, 6, 8)
    positions = np.array([[0, 5], [2, 3]], "int32")
    ours(x, positions)
    theirs(x, positions)
    _randomize(ours, seed=2)
    for a, b in (
        (ours._intermediate_dense.kernel, theirs._intermediate_dense.kernel),
        (ours._intermediate_dense.bias, theirs._intermediate_dense.bias),
        (ours._intermediate_layer_norm.gamma, theirs._intermediate_layer_norm.gamma),
        (ours._intermediate_layer_norm.beta, theirs._intermediate_layer_norm.beta),
        (ours._bias, theirs._bias),
    ):
        b.assign(a)
    np.testing.assert_allclose(_np(ours(x, positions)), _np(theirs(x, positions)), atol=1e-5)


def test_softmax_activation_gives_probabilities():
    head = MaskedLMHead(vocabulary_size=9, activation="softmax")
    probabilities = _np(head(rand(2, 4, 6), np.array([[0, 3], [1, 2]], "int32")))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=0, atol=1e-5)


def test_tied_config_round_trip():
    head = MaskedLMHead(token_embedding=keras.layers.Embedding(12, 6), layer_norm_epsilon=1e-3)
    config = head.get_config()
    assert config["token_embedding"]["config"]["input_dim"] == 12
    clone = MaskedLMHead.from_config(config)
    assert isinstance(clone.token_embedding, keras.layers.Embedding)
    assert clone.get_config() == config
    x, positions = rand(1, 3, 6), np.array([[2]], "int32")
    head(x, positions)
    clone(x, positions)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(_np(clone(x, positions)), _np(head(x, positions)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"one of `vocabulary_size` or `token_embedding` must be given"),
        ({"vocabulary_size": 0}, r"`vocabulary_size` must be a positive integer"),
        (
            {"vocabulary_size": 5, "token_embedding": keras.layers.Embedding(6, 4)},
            r"Received: vocabulary_size=5, token_embedding.input_dim=6",
        ),
        ({"token_embedding": keras.layers.Dense(3)}, r"`token_embedding` must be a "),
        ({"vocabulary_size": 5, "layer_norm_epsilon": -1.0}, r"`layer_norm_epsilon` must be"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaskedLMHead(**kwargs)


def test_bad_shapes_raise():
    head = MaskedLMHead(token_embedding=keras.layers.Embedding(6, 4))
    with pytest.raises(ValueError, match=r"`output_dim` of `token_embedding` must be the hidden"):
        head(rand(1, 3, 5), np.zeros((1, 1), "int32"))
    with pytest.raises(ValueError, match=r"must have rank 3 .* Received: inputs.shape=\(2, 4\)"):
        MaskedLMHead(vocabulary_size=3).build((2, 4))


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_gathered_inputs_without_mask_positions():
    """`mask_positions=None`: the inputs are the encodings at the positions already."""
    embedding = keras.layers.Embedding(30, 8)
    head = MaskedLMHead(token_embedding=embedding, intermediate_activation="gelu")
    encodings = rand(2, 5, 8)
    positions = np.array([[4, 0, 2], [1, 1, 3]])
    expected = np.asarray(head(encodings, mask_positions=positions))
    gathered = np.take_along_axis(encodings, positions[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(head(gathered)), expected, rtol=0, atol=1e-6)
    assert head.compute_output_shape((2, 3, 8)) == (2, 3, 30)
    with pytest.raises(ValueError, match=r"`inputs` must have shape `\(batch_size, P, 8\)`"):
        head(rand(2, 3, 5))


def test_float_mask_positions_are_refused_not_truncated():
    head = MaskedLMHead(vocabulary_size=10)
    encodings = rand(2, 5, 8)
    assert head(encodings, mask_positions=np.array([[1, 3], [0, 2]])).shape == (2, 2, 10)
    with pytest.raises(ValueError, match=r"`mask_positions` must be integers.*float"):
        head(encodings, mask_positions=np.array([[0.7, 1.0], [0.0, 2.0]]))
