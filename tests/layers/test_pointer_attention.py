import keras
import numpy as np
import pytest

from keras_attention.layers import PointerAttention
from keras_attention.ops import large_negative, pointer_availability_mask
from tests import numpy_reference as npref
from tests.layer_contract import ContractSpec, contract_checks
from tests.layers.score_specs import rand


def _spec(**init_kwargs):
    return ContractSpec(
        PointerAttention,
        init_kwargs={"units": 8, **init_kwargs},
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=True,
        dropout_kwargs=None,  # no dropout: the output is the distribution itself
        output_over_values=True,  # the output is (B, Tq, Tv)
        lower_rank_ok=("query",),  # a one-step query
    )


# The output is the distribution (probabilities) or its masked logits; with
# `return_attention_scores=True` the layer also returns the probabilities, which the
# contract checks as the weights (zero where padded, summing to 1 elsewhere).
SPECS = {"probabilities": _spec(), "logits": _spec(output_mode="logits", use_bias=True)}


# Masked logits hold the most negative value of the compute dtype (-65504 in float16 against
# -3.4e38 in float32), which the contract's float32 comparison cannot take: the logits under
# mixed precision are checked below against float32 at the unmasked positions.
_SKIP = {"logits": {"mixed_precision"}, "probabilities": set()}


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec_name, tmp_path):
    if check.__name__.removeprefix("check_") in _SKIP[spec_name]:
        pytest.skip("checked by test_padded_and_chosen_positions_get_exactly_zero_probability")
    check(SPECS[spec_name], tmp_path)


VALUE_MASK = np.array([[1, 1, 1, 1, 1, 0, 0], [1] * 7, [1, 1, 1, 0, 0, 0, 0]], bool)


def _reference_scores(layer, s, h):
    """u_ij = vᵀ tanh(W1 e_j + W2 d_i [+ b]), Vinyals et al. eq. (3)."""
    W2, W1, v = (np.asarray(w) for w in (layer.query_kernel, layer.key_kernel, layer.attention_v))
    b = None if layer.bias is None else np.asarray(layer.bias)
    return npref.additive_scores(s, h, W2, W1, v, b)


def _chosen_mask(batch, tq, tv, seed=0):
    """A random `(B, Tq, Tv)` mask of already-chosen positions (True = chosen)."""
    return np.random.default_rng(seed).random((batch, tq, tv)) < 0.3


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("with_key", [False, True])
def test_matches_numpy_formula(use_bias, with_key):
    layer = PointerAttention(units=7, use_bias=use_bias, bias_initializer="random_normal")
    s, v = rand(3, 4, 6), rand(3, 7, 5)
    h = rand(3, 7, 3) if with_key else v
    chosen = _chosen_mask(3, 4, 7)
    probabilities = layer(
        s, v, key=h if with_key else None, value_mask=VALUE_MASK, attention_mask=~chosen
    )
    scores = _reference_scores(layer, s, h)
    allowed = VALUE_MASK[:, None, :] & ~chosen
    reference = npref.softmax(scores, allowed)
    np.testing.assert_allclose(np.asarray(probabilities), reference, rtol=0, atol=1e-5)
    # Unmasked: the plain softmax over every position.
    unmasked = layer(s, v, key=h if with_key else None)
    np.testing.assert_allclose(np.asarray(unmasked), npref.softmax(scores), rtol=0, atol=1e-5)


def test_logits_match_numpy_and_give_the_probabilities():
    layer = PointerAttention(units=5, output_mode="logits")
    s, h = rand(3, 4, 6), rand(3, 7, 6)
    chosen = _chosen_mask(3, 4, 7, seed=1)
    chosen[2, 1] = True  # a row with nothing left to point at
    logits, probabilities = layer(
        s, h, value_mask=VALUE_MASK, attention_mask=~chosen, return_attention_scores=True
    )
    logits, probabilities = np.asarray(logits), np.asarray(probabilities)
    allowed = VALUE_MASK[:, None, :] & ~chosen
    scores = _reference_scores(layer, s, h)
    np.testing.assert_allclose(logits[allowed], scores[allowed], rtol=0, atol=1e-5)
    empty = ~allowed.any(-1)
    assert empty[2, 1] and empty.sum() == 1
    np.testing.assert_array_equal(logits[empty], 0.0)
    blocked = ~allowed & ~empty[..., None]
    np.testing.assert_array_equal(logits[blocked], large_negative("float32"))
    # softmax(logits) is the distribution on every row that has somewhere to point.
    softmax = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    np.testing.assert_allclose(softmax[~empty], probabilities[~empty], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probabilities, npref.softmax(scores, allowed), rtol=0, atol=1e-5)
    # The cross-entropy from the logits is finite and equals -log p of the target.
    target = np.argmax(np.where(allowed, probabilities, -1.0), -1)
    loss = keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)
    loss = np.asarray(loss)
    picked = np.take_along_axis(probabilities, target[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss[~empty], -np.log(picked[~empty]), rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(loss))


@pytest.mark.parametrize("output_mode", ["probabilities", "logits"])
@pytest.mark.parametrize("dtype", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_padded_and_chosen_positions_get_exactly_zero_probability(output_mode, dtype):
    s, h = 30.0 * rand(3, 5, 4), 30.0 * rand(3, 7, 4)  # large scores: saturated softmax
    chosen = _chosen_mask(3, 5, 7, seed=2)
    chosen[1, 3] = True  # every position already chosen
    query_mask = np.array([[1] * 5, [1] * 5, [1, 1, 1, 0, 0]], bool)
    masks = {"value_mask": VALUE_MASK, "query_mask": query_mask, "attention_mask": ~chosen}
    reference = PointerAttention(units=6, output_mode=output_mode)
    expected = np.asarray(reference(s, h, **masks))
    layer = PointerAttention(units=6, output_mode=output_mode, dtype=dtype)
    layer(s, h)  # build
    layer.set_weights(reference.get_weights())
    output, probabilities = layer(s, h, **masks, return_attention_scores=True)
    assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    output = keras.ops.convert_to_numpy(keras.ops.cast(output, "float32"))
    probabilities = keras.ops.convert_to_numpy(keras.ops.cast(probabilities, "float32"))
    assert np.all(np.isfinite(output)) and np.all(np.isfinite(probabilities))
    allowed = VALUE_MASK[:, None, :] & ~chosen & query_mask[..., None]
    assert np.all(probabilities[~allowed] == 0.0)
    empty = ~allowed.any(-1)
    np.testing.assert_array_equal(probabilities[empty], 0.0)
    np.testing.assert_allclose(probabilities[~empty].sum(-1), 1.0, rtol=0, atol=1e-2)
    atol = {"float32": 1e-6, "mixed_float16": 2e-2, "mixed_bfloat16": 1e-1}[dtype]
    if output_mode == "probabilities":
        np.testing.assert_array_equal(output, probabilities)
        np.testing.assert_allclose(output, expected, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(output[empty], 0.0)
        blocked = ~allowed & ~empty[..., None]
        np.testing.assert_array_equal(output[blocked], large_negative(layer.compute_dtype))
        # Unmasked logits agree with float32 (|u| <= ||v||_1, a few units here).
        np.testing.assert_allclose(
            output[allowed], expected[allowed], rtol=0, atol=atol * np.abs(expected[allowed]).max()
        )
    np.testing.assert_array_equal(np.asarray(probabilities.any(-1)), ~empty)


def test_teacher_forced_sequence_equals_step_by_step_decoding():
    """The availability mask of teacher-forced pointers is what a step-wise decoder applies."""
    layer = PointerAttention(units=8)
    batch, length = 4, 6
    rng = np.random.default_rng(3)
    pointers = np.stack([rng.permutation(length) for _ in range(batch)]).astype("int32")
    s, h = rand(batch, length, 5), rand(batch, length, 5)
    sequence = np.asarray(layer(s, h, attention_mask=pointer_availability_mask(pointers, length)))
    chosen = np.zeros((batch, length), bool)
    for step in range(length):
        probabilities = np.asarray(layer(s[:, step], h, attention_mask=~chosen))
        np.testing.assert_allclose(probabilities, sequence[:, step], rtol=0, atol=1e-6)
        assert np.all(probabilities[chosen] == 0.0)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=0, atol=1e-6)
        chosen[np.arange(batch), pointers[:, step]] = True
    # The last step has exactly one position left: it is pointed at with probability 1.
    np.testing.assert_allclose(
        sequence[np.arange(batch), -1, pointers[:, -1]], 1.0, rtol=0, atol=1e-6
    )


def test_output_carries_the_query_mask_and_one_step_is_squeezed():
    layer = PointerAttention(units=4)
    query_mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    output = layer(rand(2, 3, 4), rand(2, 5, 4), query_mask=query_mask)
    np.testing.assert_array_equal(np.asarray(output._keras_mask), query_mask)
    assert tuple(layer.compute_output_shape((None, None, 4), (None, 5, 4))) == (None, None, 5)
    step = layer(rand(2, 4), rand(2, 5, 4))
    assert tuple(step.shape) == (2, 5)
    assert getattr(step, "_keras_mask", None) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "Received: units=0"),
        ({"units": 2.5}, "Received: units=2.5"),
        ({"units": 4, "output_mode": "log_probs"}, "Received: output_mode='log_probs'"),
        ({"units": 4, "dropout": 0.1}, "Received: dropout=0.1"),
        ({"units": 4, "seed": 3}, "Received: seed=3"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PointerAttention(**kwargs)


def test_config_has_no_dropout():
    config = PointerAttention(units=3, output_mode="logits").get_config()
    assert "dropout" not in config and "seed" not in config
    assert config["output_mode"] == "logits" and config["use_bias"] is False
    assert PointerAttention.from_config(config).get_config() == config
