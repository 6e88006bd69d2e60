import numpy as np
import pytest

from keras_attention.layers import AdditiveAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(AdditiveAttention, value_dim=6, units=8)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_numpy_formula(use_bias):
    layer = AdditiveAttention(units=7, use_bias=use_bias, bias_initializer="random_normal")
    s, h, v = rand(2, 3, 6), rand(2, 5, 4), rand(2, 5, 3)
    context, weights = layer(s, v, key=h, return_attention_scores=True)
    W, U, va = (np.asarray(w) for w in (layer.query_kernel, layer.key_kernel, layer.attention_v))
    b = np.asarray(layer.bias) if use_bias else None
    ref_context, ref_weights = npref.attend(npref.additive_scores(s, h, W, U, va, b), v)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


def test_normalized_form():
    layer = AdditiveAttention(units=5, normalize=True)
    s, h = rand(2, 3, 6), rand(2, 4, 6)
    _, weights = layer(s, h, return_attention_scores=True)
    va, g = np.asarray(layer.attention_v), float(np.asarray(layer.attention_g))
    np.testing.assert_allclose(g, np.sqrt(1 / 5), rtol=1e-6)
    normed_v = g * va / np.linalg.norm(va)
    W, U, b = (np.asarray(w) for w in (layer.query_kernel, layer.key_kernel, layer.bias))
    _, ref_weights = npref.attend(npref.additive_scores(s, h, W, U, normed_v, b), h)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    # g is trained
    assert any(w is layer.attention_g for w in layer.trainable_weights)


@pytest.mark.parametrize("units", [0, -3, 2.5, True, None])
def test_rejects_bad_units(units):
    with pytest.raises(ValueError, match=r"`units` must be a positive integer. Received: units="):
        AdditiveAttention(units=units)
