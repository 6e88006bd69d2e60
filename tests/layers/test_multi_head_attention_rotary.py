"""`MultiHeadAttention(rotary_max_wavelength=...)`: RoPE on the query and key heads.

The shared layer contract runs on a rotary spec in `test_multi_head_attention.py`; this file
checks the numbers: a NumPy reference of RoPE + attention, relative positions, the cache.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import (
    MultiHeadAttention,
    RotaryEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from tests import numpy_reference as npref
from tests.layers.score_specs import rand

WAVELENGTH = 100.0  # a small base: the high-frequency pairs turn a lot over a few positions


def _rotary_attention_reference(layer, query, value, query_start=0, key_start=0, mask=None):
    """NumPy RoPE ("rotate half") + grouped-query scaled dot-product attention.

    `mask` is boolean, broadcastable to `(B, Tq, Tv)`. Returns `(output, weights)`.
    """
    w = {v.path.split("/", 1)[1]: np.asarray(v, "float64") for v in layer.weights}
    q = np.einsum("btd,dhk->bthk", query, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("btd,dhk->bthk", value, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("btd,dhk->bthk", value, w["value/kernel"]) + w["value/bias"]
    q = npref.rope_half_split(q, query_start + np.arange(q.shape[1]), layer.rotary_max_wavelength)
    k = npref.rope_half_split(k, key_start + np.arange(k.shape[1]), layer.rotary_max_wavelength)
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scores = np.einsum("bqhk,bvhk->bhqv", q, k) / np.sqrt(q.shape[-1])
    weights = npref.softmax(scores, None if mask is None else np.asarray(mask)[:, None])
    context = np.einsum("bhqv,bvhk->bqhk", weights, v)
    output = (
        np.einsum("bqhk,hkd->bqd", context, w["attention_output/kernel"])
        + w["attention_output/bias"]
    )
    return output, weights


def _randomize_biases(layer, seed=0):
    """Non-zero biases, so that a rotation applied before the bias would show."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.standard_normal(weight.shape).astype("float32"))


@pytest.mark.parametrize(("kv_heads", "causal"), [(4, False), (2, True), (1, True)])
def test_matches_a_numpy_reference_of_rope_and_attention(kv_heads, causal):
    layer = MultiHeadAttention(
        num_heads=4, key_dim=6, num_key_value_heads=kv_heads, rotary_max_wavelength=WAVELENGTH
    )
    x = rand(2, 7, 8)
    layer(x, x)
    _randomize_biases(layer)
    valid = np.arange(7)[None] < np.array([[7], [4]])
    mask = valid[:, None, :]
    if causal:
        mask = mask & np.tril(np.ones((7, 7), bool))[None]
    output, weights = layer(
        x, x, value_mask=valid, use_causal_mask=causal, return_attention_scores=True
    )
    expected, expected_weights = _rotary_attention_reference(layer, x, x, mask=mask)
    np.testing.assert_allclose(np.asarray(weights), expected_weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(output), expected, rtol=0, atol=1e-4)
    # The check can fail: the same layer without the rotation gives other numbers.
    plain = MultiHeadAttention(num_heads=4, key_dim=6, num_key_value_heads=kv_heads)
    plain(x, x)
    plain.set_weights(layer.get_weights())
    unrotated = plain(x, x, value_mask=valid, use_causal_mask=causal)
    assert np.abs(np.asarray(unrotated) - expected).max() > 1e-2


def test_rotation_is_that_of_rotary_embedding():
    """The heads are rotated by `RotaryEmbedding(rotary_max_wavelength)` at positions 0, 1, ..."""
    layer = MultiHeadAttention(num_heads=2, key_dim=8, rotary_max_wavelength=WAVELENGTH)
    x = rand(1, 5, 8)
    _, weights = layer(x, x, return_attention_scores=True)
    rope = RotaryEmbedding(max_wavelength=WAVELENGTH)
    q = np.asarray(rope(layer._query_dense(x)), "float64")
    k = np.asarray(rope(layer._key_dense(x)), "float64")
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
    np.testing.assert_allclose(np.asarray(weights), npref.softmax(logits), rtol=0, atol=1e-5)


def test_scores_depend_only_on_relative_positions():
    """The same tokens written at cache index `s` (earlier slots masked) attend as at index 0."""
    layer = MultiHeadAttention(
        num_heads=4, key_dim=8, num_key_value_heads=2, rotary_max_wavelength=WAVELENGTH
    )
    x = rand(2, 5, 8)
    reference, reference_weights = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    reference, reference_weights = np.asarray(reference), np.asarray(reference_weights)
    for shift in (1, 6, 40):
        valid = np.arange(shift + 5)[None].repeat(2, 0) >= shift
        out, weights, _ = layer(
            x,
            x,
            value_mask=valid,
            cache=layer.init_cache(2, shift + 5),
            cache_update_index=shift,
            return_attention_scores=True,
        )
        np.testing.assert_allclose(np.asarray(out), reference, rtol=0, atol=1e-5)
        weights = np.asarray(weights)
        np.testing.assert_array_equal(weights[..., :shift], 0.0)
        np.testing.assert_allclose(weights[..., shift:], reference_weights, rtol=0, atol=1e-5)
    # Against the reference, with the queries and keys both starting at `shift`.
    expected, _ = _rotary_attention_reference(
        layer, x, x, 40, 40, mask=np.tril(np.ones((5, 5), bool))[None]
    )
    np.testing.assert_allclose(reference, expected, rtol=0, atol=1e-4)


def test_absolute_positions_change_when_the_offsets_differ():
    """A query at position 3 and keys at 0..: not the scores of the query at position 0."""
    layer = MultiHeadAttention(num_heads=2, key_dim=8, rotary_max_wavelength=WAVELENGTH)
    x = rand(1, 4, 8)
    cache = layer.init_cache(1, 4)
    _, cache = layer(x[:, :3], x[:, :3], cache=cache, cache_update_index=0)
    _, step_weights, _ = layer(
        x[:, 3:], x[:, 3:], cache=cache, cache_update_index=3, return_attention_scores=True
    )
    _, full_weights = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(
        np.asarray(step_weights)[:, :, 0], np.asarray(full_weights)[:, :, 3], rtol=0, atol=1e-5
    )
    _, first_weights = layer(x[:, 3:], x, return_attention_scores=True)  # query at position 0
    assert (
        np.abs(np.asarray(first_weights)[:, :, 0] - np.asarray(full_weights)[:, :, 3]).max() > 1e-3
    )


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_cached_decoding_equals_the_full_causal_pass(kv_heads):
    layer = MultiHeadAttention(
        num_heads=4, key_dim=4, num_key_value_heads=kv_heads, rotary_max_wavelength=WAVELENGTH
    )
    x = rand(2, 9, 8)
    full, full_weights = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    cache = layer.init_cache(2, 9)
    out, weights, cache = layer(
        x[:, :4], x[:, :4], cache=cache, cache_update_index=0, return_attention_scores=True
    )
    outputs, all_weights = [np.asarray(out)], [np.asarray(weights)]
    for t in range(4, 9):
        out, weights, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            cache=cache,
            cache_update_index=t,
            return_attention_scores=True,
        )
        outputs.append(np.asarray(out))
        all_weights.append(np.asarray(weights))
    np.testing.assert_allclose(np.concatenate(outputs, 1), np.asarray(full), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.concatenate(all_weights, 2), np.asarray(full_weights), rtol=0, atol=1e-5
    )
    # The cached keys are the rotated ones (rotated before they are cached).
    keys = RotaryEmbedding(max_wavelength=WAVELENGTH)(layer._key_dense(x))
    np.testing.assert_allclose(np.asarray(cache[0]), np.asarray(keys), rtol=0, atol=1e-5)


def test_cached_step_under_xla_with_a_tensor_index():
    layer = MultiHeadAttention(
        num_heads=2, key_dim=4, num_key_value_heads=1, rotary_max_wavelength=WAVELENGTH
    )
    x = rand(2, 6, 8)
    full = np.asarray(layer(x, x, use_causal_mask=True))

    @tf.function(jit_compile=True)
    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)

    cache = layer.init_cache(2, 6)
    for t in range(6):
        out, cache = step(x[:, t : t + 1], cache, tf.constant(t))
        np.testing.assert_allclose(np.asarray(out)[:, 0], full[:, t], rtol=0, atol=1e-5)
    assert step.experimental_get_tracing_count() == 1


def test_config_round_trip():
    layer = MultiHeadAttention(
        num_heads=4, key_dim=4, num_key_value_heads=2, rotary_max_wavelength=500
    )
    x = rand(2, 5, 8)
    expected = np.asarray(layer(x, x, use_causal_mask=True))
    config = layer.get_config()
    assert config["rotary_max_wavelength"] == 500
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config and clone.rotary_max_wavelength == 500
    clone(x, x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x, x, use_causal_mask=True)), expected)
    assert [w.path.split("/", 1)[1] for w in clone.weights] == [
        w.path.split("/", 1)[1] for w in layer.weights
    ]  # the rotation adds no weight
    assert len(layer.weights) == 8  # four projections' kernels and biases
    assert MultiHeadAttention(num_heads=2, key_dim=4).get_config()["rotary_max_wavelength"] is None


def test_blocks_rotate_the_self_attention_only():
    decoder = TransformerDecoderBlock(
        intermediate_dim=16, num_heads=2, rotary_max_wavelength=WAVELENGTH
    )
    target, source = rand(2, 5, 8), rand(2, 7, 8)
    decoder(target, source)
    assert decoder._self_attention.rotary_max_wavelength == WAVELENGTH
    assert decoder._cross_attention.rotary_max_wavelength is None
    assert decoder.get_config()["rotary_max_wavelength"] == WAVELENGTH
    clone = TransformerDecoderBlock.from_config(decoder.get_config())
    assert clone.rotary_max_wavelength == WAVELENGTH
    encoder = TransformerEncoderBlock(
        intermediate_dim=16, num_heads=2, rotary_max_wavelength=WAVELENGTH
    )
    encoder(source)
    assert encoder._self_attention.rotary_max_wavelength == WAVELENGTH


def test_projected_key_value_is_refused():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, rotary_max_wavelength=WAVELENGTH)
    x, memory = rand(2, 3, 8), rand(2, 5, 8)
    layer(x, memory)
    key_value = layer.project_key_value(memory)
    with pytest.raises(
        ValueError,
        match=r"`projected_key_value` \(a fixed memory\) cannot be used\. "
        r"Received: rotary_max_wavelength=100",
    ):
        layer(x, None, projected_key_value=key_value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_dim": 3}, r"`key_dim` must be even. Received: key_dim=3"),
        ({"rotary_max_wavelength": 0}, r"Received: rotary_max_wavelength=0"),
        ({"rotary_max_wavelength": -5.0}, r"Received: rotary_max_wavelength=-5.0"),
        ({"rotary_max_wavelength": "big"}, r"Received: rotary_max_wavelength='big'"),
    ],
)
def test_bad_rotary_arguments_raise(kwargs, message):
    arguments = {"num_heads": 2, "key_dim": 4, "rotary_max_wavelength": WAVELENGTH, **kwargs}
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**arguments)


def test_block_with_a_bad_wavelength_raises_at_construction():
    with pytest.raises(ValueError, match=r"Received: rotary_max_wavelength=-1"):
        TransformerDecoderBlock(intermediate_dim=8, num_heads=2, rotary_max_wavelength=-1)


def test_mixed_bfloat16_is_finite_and_close():
    x = 4.0 * rand(2, 6, 8)
    reference = MultiHeadAttention(num_heads=2, key_dim=4, rotary_max_wavelength=WAVELENGTH)
    expected = np.asarray(reference(x, x, use_causal_mask=True))
    layer = MultiHeadAttention(
        num_heads=2, key_dim=4, rotary_max_wavelength=WAVELENGTH, dtype="mixed_bfloat16"
    )
    layer(x, x)
    layer.set_weights(reference.get_weights())
    output = layer(x, x, use_causal_mask=True)
    assert keras.backend.standardize_dtype(output.dtype) == "bfloat16"
    output = np.asarray(output).astype("float32")
    assert np.all(np.isfinite(output))
    np.testing.assert_allclose(
        output, expected, rtol=0, atol=0.1 * max(1.0, np.abs(expected).max())
    )
