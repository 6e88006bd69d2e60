import numpy as np
import pytest

from keras_attention.layers import ScaledDotAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(ScaledDotAttention)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


def test_matches_numpy_formula():
    layer = ScaledDotAttention()
    s, h, v = rand(2, 3, 16), rand(2, 5, 16), rand(2, 5, 3)
    context, weights = layer(s, v, key=h, return_attention_scores=True)
    ref_context, ref_weights = npref.attend(npref.scaled_dot_scores(s, h), v)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


def test_custom_scale():
    s, h = rand(2, 3, 4), rand(2, 5, 4)
    _, weights = ScaledDotAttention(scale=0.25)(s, h, return_attention_scores=True)
    _, ref_weights = npref.attend(0.25 * npref.dot_scores(s, h), h)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), "big"])
def test_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match=r"`scale`.*Received: scale="):
        ScaledDotAttention(scale=scale)


def test_rejects_mismatched_depths():
    with pytest.raises(ValueError, match=r"Received: query_dim=8, key_dim=4"):
        ScaledDotAttention()(rand(2, 3, 8), rand(2, 5, 6), key=rand(2, 5, 4))
