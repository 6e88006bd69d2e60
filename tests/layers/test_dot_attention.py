import keras
import numpy as np
import pytest

from keras_attention.layers import DotAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(DotAttention)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


def test_matches_numpy_formula():
    layer = DotAttention()
    s, h = rand(2, 3, 6), rand(2, 5, 6)
    context, weights = layer(s, h, return_attention_scores=True)
    ref_context, ref_weights = npref.attend(npref.dot_scores(s, h), h)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_matches_keras_attention_dot(causal):
    s, h = rand(3, 6, 8), rand(3, 6, 8)
    query_mask = np.ones((3, 6), bool)
    query_mask[0, -1] = False
    value_mask = np.ones((3, 6), bool)
    value_mask[1, 3:] = False
    ours, our_weights = DotAttention()(
        s, h, mask=[query_mask, value_mask], use_causal_mask=causal, return_attention_scores=True
    )
    theirs, their_weights = keras.layers.Attention(score_mode="dot")(
        [s, h], mask=[query_mask, value_mask], use_causal_mask=causal, return_attention_scores=True
    )
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
    # keras leaves the weight rows of padded queries unnormalised-but-unused; compare the real rows.
    np.testing.assert_allclose(
        np.asarray(our_weights)[query_mask], np.asarray(their_weights)[query_mask], atol=1e-5
    )


def test_rejects_mismatched_depths():
    with pytest.raises(
        ValueError, match=r"query depth must equal the key depth.*Received: query_dim=6, key_dim=4"
    ):
        DotAttention()(rand(2, 3, 6), rand(2, 5, 4))
