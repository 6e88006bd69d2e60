import numpy as np
import pytest

from keras_attention.layers import LocationAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(LocationAttention, value_dim=6, max_length=12)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


def test_matches_numpy_formula():
    layer = LocationAttention(max_length=9, bias_initializer="random_normal")
    s, v = rand(2, 3, 6), rand(2, 5, 4)
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    context, weights = layer(s, v, value_mask=mask, return_attention_scores=True)
    W, b = np.asarray(layer.kernel), np.asarray(layer.bias)
    assert W.shape == (6, 9)
    ref_context, ref_weights = npref.attend(npref.location_scores(s, W, b, 5), v, mask[:, None, :])
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


def test_weights_depend_on_the_query_only():
    layer = LocationAttention(max_length=6)
    s = rand(2, 3, 4)
    _, w1 = layer(s, rand(2, 6, 5), return_attention_scores=True)
    _, w2 = layer(s, rand(2, 6, 5), return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))


def test_shorter_memory_renormalises_over_its_own_positions():
    layer = LocationAttention(max_length=8, bias_initializer="random_normal")
    s = rand(2, 1, 4)
    _, w_full = layer(s, rand(2, 8, 3), return_attention_scores=True)
    _, w_short = layer(s, rand(2, 3, 3), return_attention_scores=True)
    full = np.asarray(w_full)[..., :3]
    np.testing.assert_allclose(np.asarray(w_short), full / full.sum(-1, keepdims=True), atol=1e-6)


def test_rejects_memory_longer_than_max_length():
    layer = LocationAttention(max_length=4)
    with pytest.raises(
        ValueError, match=r"longer than `max_length=4`.*Received: value.shape=\(2, 5, 3\)"
    ):
        layer(rand(2, 3), rand(2, 5, 3))


@pytest.mark.parametrize("max_length", [0, -2, 3.0, None])
def test_rejects_bad_max_length(max_length):
    with pytest.raises(
        ValueError, match=r"`max_length` must be a positive integer. Received: max_length="
    ):
        LocationAttention(max_length=max_length)
