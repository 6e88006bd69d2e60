import numpy as np
import pytest

from keras_attention.layers import ConcatAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(ConcatAttention, value_dim=6, units=8)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_numpy_formula(use_bias):
    layer = ConcatAttention(units=7, use_bias=use_bias, bias_initializer="random_normal")
    s, h, v = rand(2, 3, 6), rand(2, 5, 4), rand(2, 5, 3)
    context, weights = layer(s, v, key=h, return_attention_scores=True)
    W, va = np.asarray(layer.kernel), np.asarray(layer.attention_v)
    assert W.shape == (10, 7)
    b = np.asarray(layer.bias) if use_bias else None
    ref_context, ref_weights = npref.attend(npref.concat_scores(s, h, W, va, b), v)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


def test_concat_equals_additive_with_split_kernel():
    """vᵀ tanh(W [s; h] + b) is Bahdanau's vᵀ tanh(W_s s + W_h h + b) with W = [W_s; W_h]."""
    from keras_attention.layers import AdditiveAttention

    s, h = rand(2, 3, 6), rand(2, 5, 4)
    concat = ConcatAttention(units=5, bias_initializer="random_normal")
    concat(s, h)
    additive = AdditiveAttention(units=5)
    additive(s, h)
    W = np.asarray(concat.kernel)
    additive.set_weights([W[:6], W[6:], np.asarray(concat.attention_v), np.asarray(concat.bias)])
    np.testing.assert_allclose(np.asarray(concat(s, h)), np.asarray(additive(s, h)), atol=1e-6)


@pytest.mark.parametrize("units", [0, -1, "8"])
def test_rejects_bad_units(units):
    with pytest.raises(
        ValueError, match=r"ConcatAttention: `units` must be a positive integer. Received: units="
    ):
        ConcatAttention(units=units)
