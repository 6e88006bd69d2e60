import numpy as np
import pytest

from keras_attention.layers import BilinearAttention
from tests import numpy_reference as npref
from tests.layer_contract import contract_checks
from tests.layers.score_specs import rand, score_attention_spec

SPEC = score_attention_spec(BilinearAttention, value_dim=6)


@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, tmp_path):
    check(SPEC, tmp_path)


def test_matches_numpy_formula():
    layer = BilinearAttention()
    s, h, v = rand(2, 3, 6), rand(2, 5, 4), rand(2, 5, 3)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    context, weights = layer(s, v, key=h, value_mask=mask, return_attention_scores=True)
    W = np.asarray(layer.kernel)
    assert W.shape == (4, 6)
    ref_context, ref_weights = npref.attend(npref.bilinear_scores(s, h, W), v, mask[:, None, :])
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(np.asarray(context), ref_context, atol=1e-5)


def test_identity_kernel_is_dot_attention():
    from keras_attention.layers import DotAttention

    s, h = rand(2, 3, 5), rand(2, 4, 5)
    ours = BilinearAttention(kernel_initializer="identity")(s, h)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(DotAttention()(s, h)), atol=1e-6)
