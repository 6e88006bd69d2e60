import keras
import keras_hub
import numpy as np
import pytest

from keras_attention.layers import TransformerEncoderBlock
from tests import numpy_reference as ref
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand

SPECS = {
    "post_ln": ContractSpec(
        TransformerEncoderBlock,
        init_kwargs={"intermediate_dim": 16, "num_heads": 2},
        inputs={"inputs": ("T", 8)},
        query_mask="padding_mask",  # also the key mask; see test_padded_positions_get_no_weight
        causal=True,
        dropout_kwargs={"dropout": 0.3},
    ),
    "pre_ln_grouped_query": ContractSpec(
        TransformerEncoderBlock,
        init_kwargs={
            "intermediate_dim": 12,
            "num_heads": 4,
            "key_dim": 3,
            "num_key_value_heads": 2,
            "normalize_first": True,
            "activation": "gelu",
        },
        inputs={"inputs": ("T", 10)},
        query_mask="padding_mask",
        causal=True,
        dropout_kwargs={"dropout": 0.3, "attention_dropout": 0.0},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


def _padding_mask(batch, length):
    valid = np.array([length, length - 2, 1] + [length - 1] * (batch - 3))[:batch]
    return np.arange(length)[None, :] < valid[:, None]  # (B, T), one row per padding amount


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("masks", ["padding", "padding_causal_explicit"])
def test_matches_numpy_reference(normalize_first, masks):
    block = TransformerEncoderBlock(
        intermediate_dim=12,
        num_heads=4,
        num_key_value_heads=2,
        normalize_first=normalize_first,
        layer_norm_epsilon=1e-3,
        bias_initializer="random_normal",
    )
    x = rand(3, 6, 8)
    padding = _padding_mask(3, 6)
    kwargs = {"padding_mask": padding}
    mask = padding[:, :, None] & padding[:, None, :]  # (B, T, T): padded queries and keys
    if masks == "padding_causal_explicit":
        explicit = np.random.default_rng(0).random((3, 6, 6)) > 0.3
        kwargs.update(attention_mask=explicit, use_causal_mask=True)
        mask = mask & explicit & np.tril(np.ones((6, 6), bool))
    output, scores = block(x, return_attention_scores=True, **kwargs)
    expected, expected_scores = ref.transformer_block(
        x, ref.weights_by_path(block), normalize_first, 1e-3, mask
    )
    expected = np.where(padding[..., None], expected, 0.0)
    np.testing.assert_allclose(np.asarray(output), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(scores), expected_scores["self_attention"], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_matches_keras_hub_transformer_encoder(normalize_first):
    """Same weight order and layout: `set_weights(keras_hub_encoder.get_weights())` copies."""
    kwargs = {"intermediate_dim": 16, "num_heads": 2, "normalize_first": normalize_first}
    theirs = keras_hub.layers.TransformerEncoder(**kwargs, bias_initializer="random_normal")
    ours = TransformerEncoderBlock(**kwargs)
    x, padding = rand(3, 7, 8), _padding_mask(3, 7)
    theirs(x)
    ours(x)
    ours.set_weights(theirs.get_weights())
    expected, expected_scores = theirs(x, padding_mask=padding, return_attention_scores=True)
    actual, scores = ours(x, padding_mask=padding, return_attention_scores=True)
    # keras_hub leaves padded query rows unmasked; ours are exactly zero there.
    np.testing.assert_allclose(
        np.asarray(actual)[padding], np.asarray(expected)[padding], rtol=0, atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(actual)[~padding], 0.0)
    np.testing.assert_allclose(
        np.moveaxis(np.asarray(scores), 1, 2)[padding],
        np.moveaxis(np.asarray(expected_scores), 1, 2)[padding],
        rtol=0,
        atol=1e-5,
    )


def test_padded_positions_get_no_weight_and_never_leak():
    """Also in training: two blocks with the same seed draw the same dropout masks."""
    x, padding = rand(3, 6, 8), _padding_mask(3, 6)
    noisy = np.where(padding[..., None], x, 100.0 * rand(3, 6, 8) + 7.0).astype("float32")
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, dropout=0.3, seed=5)
    twin = TransformerEncoderBlock.from_config(block.get_config())
    block(x)
    twin(x)  # inference calls draw no dropout randomness
    twin.set_weights(block.get_weights())
    for training in (False, True):
        a, a_scores = block(
            x, padding_mask=padding, return_attention_scores=True, training=training
        )
        b = twin(noisy, padding_mask=padding, training=training)
        padded_keys = np.broadcast_to(~padding[:, None, None, :], a_scores.shape)
        assert np.all(np.asarray(a_scores)[padded_keys] == 0.0)
        np.testing.assert_allclose(
            np.asarray(b)[padding], np.asarray(a)[padding], rtol=0, atol=1e-5
        )
        np.testing.assert_array_equal(np.asarray(b)[~padding], 0.0)


def test_implicit_mask_from_an_embedding_flows_in_and_out():
    tokens = np.array([[3, 5, 7, 0, 0], [2, 0, 0, 0, 0]])
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2)
    x = embedding(tokens)
    output = block(x)
    np.testing.assert_array_equal(np.asarray(output._keras_mask), tokens > 0)
    explicit = block(np.asarray(x), padding_mask=tokens > 0)
    np.testing.assert_allclose(np.asarray(output), np.asarray(explicit), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(output)[tokens == 0], 0.0)
    # In a functional model the mask flows through two stacked blocks.
    inputs = keras.Input((None,), dtype="int32")
    first = TransformerEncoderBlock(intermediate_dim=16, num_heads=2)
    model = keras.Model(inputs, block(first(embedding(inputs))))
    out = model(tokens)
    np.testing.assert_array_equal(np.asarray(out._keras_mask), tokens > 0)
    stacked = block(first(np.asarray(x), padding_mask=tokens > 0), padding_mask=tokens > 0)
    np.testing.assert_allclose(np.asarray(out), np.asarray(stacked), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out)[tokens == 0], 0.0)


def test_attention_dropout_and_dropout_are_separate_rates():
    x = rand(2, 5, 8)
    for rates in ({"dropout": 0.0, "attention_dropout": 0.5}, {"dropout": 0.5}):
        block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, seed=1, **rates)
        inference = np.asarray(block(x))
        assert not np.allclose(np.asarray(block(x, training=True)), inference)
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, dropout=0.2)
    assert block.attention_dropout == 0.2  # defaults to `dropout`
    block(x)
    assert block._self_attention.dropout == 0.2
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2, attention_dropout=0.1)
    assert (block.dropout, block.attention_dropout) == (0.0, 0.1)


def test_key_dim_and_grouped_heads():
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=4, key_dim=3)
    assert tuple(block(rand(2, 5, 10)).shape) == (2, 5, 10)  # 10 is not divisible by 4
    assert tuple(block._self_attention._query_dense.kernel.shape) == (10, 4, 3)
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=4, num_key_value_heads=1)
    block(rand(2, 5, 8))
    assert tuple(block._self_attention._key_dense.kernel.shape) == (8, 1, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intermediate_dim": 0, "num_heads": 2}, r"Received: intermediate_dim=0"),
        ({"intermediate_dim": 8.5, "num_heads": 2}, r"Received: intermediate_dim=8.5"),
        ({"intermediate_dim": 8, "num_heads": 0}, r"Received: num_heads=0"),
        ({"intermediate_dim": 8, "num_heads": 2, "key_dim": -3}, r"Received: key_dim=-3"),
        (
            {"intermediate_dim": 8, "num_heads": 4, "num_key_value_heads": 3},
            r"multiple of `num_key_value_heads`. Received: num_heads=4, num_key_value_heads=3",
        ),
        ({"intermediate_dim": 8, "num_heads": 2, "dropout": 1.0}, r"Received: dropout=1.0"),
        ({"intermediate_dim": 8, "num_heads": 2, "dropout": -0.1}, r"Received: dropout=-0.1"),
        (
            {"intermediate_dim": 8, "num_heads": 2, "attention_dropout": 2},
            r"`attention_dropout` .* Received: attention_dropout=2",
        ),
        (
            {"intermediate_dim": 8, "num_heads": 2, "layer_norm_epsilon": 0},
            r"Received: layer_norm_epsilon=0",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerEncoderBlock(**kwargs)


def test_hidden_dim_not_divisible_by_num_heads_raises_without_key_dim():
    block = TransformerEncoderBlock(intermediate_dim=8, num_heads=3)
    with pytest.raises(ValueError, match=r"pass `key_dim`.*Received: num_heads=3, hidden_dim=8"):
        block(rand(2, 4, 8))
    with pytest.raises(ValueError, match=r"rank 3 .* Received: inputs.shape=\(2, 8\)"):
        TransformerEncoderBlock(intermediate_dim=8, num_heads=2)(rand(2, 8))


def test_chunked_attention_and_attention_bias_pass_through():
    """chunk_size reaches the attention: same outputs and gradients; a bias moves the scores."""
    import tensorflow as tf

    from keras_attention.layers import RelativePositionBias

    x = tf.constant(np.random.default_rng(0).standard_normal((2, 9, 16)), "float32")
    mask = np.arange(9)[None, :] < np.array([[9], [6]])
    full = TransformerEncoderBlock(intermediate_dim=32, num_heads=4, chunk_size=None)
    chunked = TransformerEncoderBlock(intermediate_dim=32, num_heads=4, chunk_size=2)
    full(x)
    chunked(x)
    chunked.set_weights(full.get_weights())
    assert chunked.get_config()["chunk_size"] == 2
    assert chunked._self_attention.chunk_size == 2
    bias = RelativePositionBias(num_heads=4)(x)  # (1, 4, 9, 9)
    results = []
    for block in (full, chunked):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = block(x, padding_mask=mask, use_causal_mask=True, attention_bias=bias)
            loss = tf.reduce_sum(y * tf.range(16, dtype="float32") / 16.0)
        results.append((y, tape.gradient(loss, [x] + block.trainable_variables)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=0, atol=1e-5)
    for a, e in zip(results[1][1], results[0][1], strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)
    _, with_bias = full(x, attention_bias=bias, return_attention_scores=True)
    _, without = full(x, return_attention_scores=True)
    assert not np.allclose(np.asarray(with_bias), np.asarray(without))


# -- query_positions: outputs at some positions only ------------------------------------------------


@pytest.mark.parametrize("normalize_first", [False, True])
def test_query_positions_equal_the_full_block_gathered(normalize_first):
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2,
                                    normalize_first=normalize_first)  # fmt: skip
    x = rand(3, 7, 8)
    padding_mask = _padding_mask(3, 7)
    attention_mask = np.random.default_rng(2).random((3, 7, 7)) > 0.3
    attention_mask[..., 0] = True  # every query attends somewhere
    positions = np.array([[0, 6, 3, 3], [1, 4, 0, 2], [0, 5, 9, -1]], "int32")
    for masks in ({"padding_mask": padding_mask}, {"padding_mask": padding_mask,
                                                   "attention_mask": attention_mask}):  # fmt: skip
        full, full_scores = block(x, return_attention_scores=True, **masks)
        part, scores = block(x, query_positions=positions, return_attention_scores=True, **masks)
        full, full_scores, part, scores = (np.asarray(a) for a in (full, full_scores, part,
                                                                   scores))  # fmt: skip
        assert part.shape == (3, 4, 8) and scores.shape == (3, 2, 4, 7)
        inside = (positions >= 0) & (positions < 7)
        real = inside & np.take_along_axis(padding_mask, np.clip(positions, 0, 6), axis=1)
        rows, cols = np.nonzero(real)
        np.testing.assert_allclose(part[rows, cols], full[rows, positions[rows, cols]],
                                   rtol=0, atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(scores[rows, :, cols], full_scores[rows, :, positions[rows, cols]],
                                   rtol=0, atol=1e-6)  # fmt: skip
        # Outside the sequence (9, -1) or padded (row 2 holds 1 real token): zeros.
        assert not np.abs(part[~real]).any()
        assert not real[2, 1:].any()


def test_query_positions_gradients_equal_the_gathered_full_block():
    import tensorflow as tf

    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2)
    x = tf.constant(rand(2, 6, 8))
    positions = np.array([[5, 1], [0, 0]], "int32")
    weights = tf.constant(rand(2, 2, 8))

    def loss(gathered):
        return tf.reduce_sum(gathered * weights)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        part = loss(block(x, query_positions=positions))
        full = loss(tf.gather(block(x), positions, batch_dims=1))
    variables = [x, *block.trainable_variables]
    for a, b in zip(tape.gradient(part, variables), tape.gradient(full, variables), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)


def test_query_positions_traced_with_unknown_shapes_and_empty_sequences():
    import tensorflow as tf

    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2)
    x = rand(2, 6, 8)
    positions = np.array([[2, 3], [4, 0]], "int32")
    expected = np.asarray(block(x, query_positions=positions))

    @tf.function(input_signature=[tf.TensorSpec((None, None, 8)), tf.TensorSpec((None, None),
                                                                                tf.int32)])
    def run(x, positions):  # fmt: skip
        return block(x, query_positions=positions)

    np.testing.assert_allclose(np.asarray(run(x, positions)), expected, rtol=0, atol=1e-6)
    empty = np.asarray(run(np.zeros((2, 0, 8), "float32"), positions))
    assert empty.shape == (2, 2, 8) and not empty.any()  # no position inside an empty sequence
    with pytest.raises(tf.errors.InvalidArgumentError, match="query_positions"):
        run(x, positions[:1])  # batch sizes differ: named at run time


def test_query_positions_bad_arguments_raise():
    block = TransformerEncoderBlock(intermediate_dim=16, num_heads=2)
    x = rand(2, 6, 8)
    with pytest.raises(ValueError, match=r"`query_positions` must be integer positions"):
        block(x, query_positions=np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match=r"`query_positions` cannot be combined with"):
        block(x, query_positions=np.zeros((2, 2), "int32"), use_causal_mask=True)
    with pytest.raises(ValueError, match=r"`query_positions` must have shape `\(batch_size, P\)`"):
        block(x, query_positions=np.zeros((3, 2), "int32"))
    with pytest.raises(ValueError, match=r"query_positions"):
        block(x, query_positions=np.zeros((2,), "int32"))
