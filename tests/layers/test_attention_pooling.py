import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import AttentionPooling
from tests import numpy_reference as npref
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand

# AttentionPooling has one input, the annotations, and its query is the learned context vector,
# so the padding mask of `inputs` plays the part of the value mask. The query-mask and causal
# checks do not apply and skip: the output has no sequence axis (no query positions to mask or
# carry a mask on, nothing to be causal over).
SPECS = {
    "units": ContractSpec(
        AttentionPooling,
        init_kwargs={"units": 6},
        inputs={"inputs": ("T", 8)},
        value_masks={"mask": "T"},
        dropout_kwargs={"dropout": 0.5},
    ),
    "no_bias": ContractSpec(
        AttentionPooling,
        init_kwargs={"use_bias": False},
        inputs={"inputs": ("T", 5)},
        value_masks={"mask": "T"},
        dropout_kwargs={"dropout": 0.5},
    ),
}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec_name, tmp_path):
    check(SPECS[spec_name], tmp_path)


MASK = np.array([[1, 1, 1, 1, 0, 0, 0], [1] * 7, [1, 0, 0, 0, 0, 0, 0], [0] * 7], bool)


def _weights(layer):
    bias = None if layer.bias is None else np.asarray(layer.bias)
    return np.asarray(layer.kernel), bias, np.asarray(layer.context_vector)


@pytest.mark.parametrize(
    ("kwargs", "masked"),
    [({"units": 5}, False), ({"units": 5}, True), ({}, True), ({"use_bias": False}, True)],
)
def test_matches_numpy(kwargs, masked):
    layer = AttentionPooling(bias_initializer="random_normal", **kwargs)
    h = 2.0 * rand(4, 7, 3)
    mask = MASK if masked else None
    pooled, weights = layer(h, mask=mask, return_attention_scores=True)
    kernel, bias, context = _weights(layer)
    assert kernel.shape == (3, kwargs.get("units", 3)) and context.shape == kernel.shape[1:]
    assert (bias is None) == (kwargs.get("use_bias") is False)
    ref_pooled, ref_weights = npref.attention_pooling(h, kernel, bias, context, mask)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled), ref_pooled, rtol=0, atol=1e-5)
    if masked:
        assert np.all(np.asarray(weights)[~MASK] == 0.0)
        np.testing.assert_array_equal(np.asarray(pooled)[-1], 0.0)  # fully masked row


def test_keras_mask_is_used_and_consumed():
    h = rand(4, 7, 3)
    layer = AttentionPooling(units=4)
    explicit, explicit_weights = layer(h, mask=MASK, return_attention_scores=True)
    implicit_input = keras.layers.Masking(mask_value=0.0)(np.where(MASK[..., None], h, 0.0))
    implicit, implicit_weights = layer(implicit_input, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(implicit_weights), np.asarray(explicit_weights))
    assert getattr(implicit, "_keras_mask", None) is None  # no sequence axis left: no mask
    # An explicit mask wins over the Keras mask of the input.
    everything = np.ones_like(MASK)
    _, override_weights = layer(implicit_input, mask=everything, return_attention_scores=True)
    assert np.all(np.asarray(override_weights).sum(-1) > 0.999)


def test_embedding_padding_gets_zero_weight_in_a_model():
    ids = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(ids)
    pooled, weights = AttentionPooling(units=3)(embedded, return_attention_scores=True)
    model = keras.Model(ids, [pooled, weights])
    tokens = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5], [0, 0, 0, 0, 0]], "int32")
    pooled, weights = (np.asarray(x) for x in model(tokens))
    np.testing.assert_array_equal(weights[tokens == 0], 0.0)
    np.testing.assert_allclose(weights.sum(-1), [1.0, 1.0, 0.0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pooled[2], 0.0)
    assert np.all(np.isfinite(pooled))


def test_pooling_is_invariant_to_permutations():
    h = rand(4, 7, 3)
    layer = AttentionPooling(units=5)
    pooled, weights = layer(h, mask=MASK, return_attention_scores=True)
    order = np.random.default_rng(3).permutation(7)
    shuffled, shuffled_weights = layer(
        h[:, order], mask=MASK[:, order], return_attention_scores=True
    )
    np.testing.assert_allclose(np.asarray(shuffled), np.asarray(pooled), rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(shuffled_weights), np.asarray(weights)[:, order], rtol=0, atol=1e-6
    )


def test_context_vector_selects_the_matching_position():
    layer = AttentionPooling(use_bias=False)
    h = np.zeros((1, 4, 3), "float32")
    h[0, 2] = [5.0, 0.0, 0.0]  # the one position whose u_t aligns with u_w
    layer(h)  # build
    layer.kernel.assign(np.eye(3, dtype="float32"))
    layer.context_vector.assign(np.array([20.0, 0.0, 0.0], "float32"))
    pooled, weights = layer(h, return_attention_scores=True)
    assert np.asarray(weights)[0, 2] > 0.99
    np.testing.assert_allclose(np.asarray(pooled)[0], [5.0 * np.asarray(weights)[0, 2], 0, 0])


def test_fully_masked_row_has_zero_finite_gradients():
    layer = AttentionPooling(units=4)
    h = tf.constant(rand(4, 7, 3))
    with tf.GradientTape() as tape:
        tape.watch(h)
        loss = tf.reduce_sum(layer(h, mask=MASK) ** 2)
    grads = tape.gradient(loss, [h] + [v.value for v in layer.trainable_variables])
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_array_equal(np.asarray(grads[0])[~MASK], 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "Received: units=0"),
        ({"units": 2.5}, "Received: units=2.5"),
        ({"use_bias": "yes"}, "Received: use_bias='yes'"),
        ({"dropout": 1.5}, "Received: dropout=1.5"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionPooling(**kwargs)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"rank 3 .* Received: inputs.shape=\(2, 5\)"):
        AttentionPooling()(rand(2, 5))
    with pytest.raises(ValueError, match=r"Received: mask.shape=\(2, 5, 1\)"):
        AttentionPooling()(rand(2, 5, 3), mask=np.ones((2, 5, 1), bool))
    with pytest.raises(
        ValueError, match=r"last dimension .* Received: inputs.shape=\(None, 5, None\)"
    ):
        AttentionPooling().compute_output_shape((None, 5, None))
