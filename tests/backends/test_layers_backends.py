"""Layer behaviour the contract does not cover, on the current backend (`pytest -m backends`).

- `MultiHeadAttention`'s KV cache: prefill plus one token at a time equals the full causal
  pass, eagerly and compiled (`jax.jit`, `torch.compile`, XLA) with a tensor index.
- The chunked path (`chunk_size`, `ops.chunked_attention` and its hand-written backward pass)
  equals the full path in outputs and in gradients w.r.t. inputs, bias and weights.
- `ops.full_attention` (the full path's hand-written backward pass, used on TensorFlow and
  public on every backend) equals a NumPy reference and its numeric gradient.
- Without the weights asked for (PyTorch's fused kernel, `ops.fused_attention`), outputs and
  gradients equal the einsum/masked-softmax path; rows with no allowed key are zero.
- `ops.gelu` (fused float32 kernels on TensorFlow, `keras.activations.gelu` elsewhere)
  equals the formulas in values and gradients, and a GELU block trains like it infers.
- Implicit Keras masks from `Embedding(mask_zero=True)` reach stacked layers, eagerly and in
  a functional model, and give the numbers of explicit masks.
"""

import math
import warnings

import keras
import numpy as np
import pytest

from keras_attention.layers import (
    AdditiveAttention,
    AttentionPooling,
    MultiHeadAttention,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)
from keras_attention.ops import (
    chunked_attention,
    dropout_mask,
    full_attention,
    gelu,
    gelu_approximate,
)
from keras_attention.utils.masking import keras_mask
from tests import autodiff


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _np(x):
    return autodiff.to_numpy(x)


# -- KV cache ---------------------------------------------------------------------------------


def _decode(layer, x, prefill, **kwargs):
    """Prefill `prefill` positions, then one token at a time; `(outputs, scores, cache)`."""
    cache = layer.init_cache(x.shape[0], x.shape[1])
    outputs, all_scores = [], []
    for start, stop in [(0, prefill)] + [(t, t + 1) for t in range(prefill, x.shape[1])]:
        chunk = x[:, start:stop]
        out, scores, cache = layer(
            chunk, chunk, cache=cache, cache_update_index=start, return_attention_scores=True,
            **kwargs,
        )  # fmt: skip
        outputs.append(_np(out))
        all_scores.append(_np(scores))
    return np.concatenate(outputs, 1), np.concatenate(all_scores, 2), cache


@pytest.mark.parametrize(
    "init",
    [
        {"num_key_value_heads": 4},
        {"num_key_value_heads": 2},
        {"num_key_value_heads": 1},
        {"num_key_value_heads": 2, "rotary_max_wavelength": 100.0},
    ],
    ids=["multi_head", "grouped_query", "multi_query", "rotary"],
)
def test_cached_decoding_equals_the_full_causal_pass(init):
    layer = MultiHeadAttention(num_heads=4, key_dim=4, **init)
    x = _rand(2, 9, 8)
    full, full_scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    decoded, scores, (key_cache, value_cache) = _decode(layer, x, prefill=4)
    np.testing.assert_allclose(decoded, _np(full), rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, _np(full_scores), rtol=0, atol=1e-5)
    kv_heads = init["num_key_value_heads"]
    assert tuple(key_cache.shape) == (2, 9, kv_heads, 4)
    assert tuple(value_cache.shape) == (2, 9, kv_heads, 4)
    if "rotary_max_wavelength" not in init:  # the cache holds the projected keys and values
        np.testing.assert_allclose(_np(key_cache), _np(layer._key_dense(x)), rtol=0, atol=1e-6)
        np.testing.assert_allclose(_np(value_cache), _np(layer._value_dense(x)), rtol=0, atol=1e-6)


def test_cached_decoding_with_left_padded_prompts():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = _rand(2, 8, 8)
    valid = np.ones((2, 8), bool)
    valid[1, :2] = False  # the second prompt is left padded
    full = layer(x, x, use_causal_mask=True, value_mask=valid)
    decoded, scores, _ = _decode(layer, x, prefill=3, value_mask=valid)
    np.testing.assert_allclose(decoded, _np(full), rtol=0, atol=1e-5)
    assert np.all(scores[1, :, :, :2] == 0.0)  # padding never gets weight


def test_compiled_decode_step_with_a_tensor_index():
    """One compiled step (jax.jit / torch.compile / XLA) serves every position."""
    layer = MultiHeadAttention(num_heads=2, key_dim=4, num_key_value_heads=1)
    x = _rand(2, 7, 8)
    expected = _np(layer(x, x, use_causal_mask=True))

    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)

    compiled = autodiff.jit_function(layer, step)
    cache = layer.init_cache(2, 7)
    for t in range(7):
        index = keras.ops.convert_to_tensor(t, "int32")
        out, cache = compiled(x[:, t : t + 1], cache, index)
        np.testing.assert_allclose(_np(out)[:, 0], expected[:, t], rtol=0, atol=1e-5)


def test_out_of_range_cache_index_is_refused_naming_it():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = _rand(2, 3, 8)
    cache = layer.init_cache(2, 4)
    with pytest.raises(ValueError, match="`cache_update_index`"):
        layer(x, x, cache=cache, cache_update_index=2)  # 2 + 3 > 4
    with pytest.raises(ValueError, match="`cache_update_index`"):
        layer(x, x, cache=cache, cache_update_index=keras.ops.convert_to_tensor(-1, "int32"))


# -- the chunked path -------------------------------------------------------------------------

CHUNK_CASES = {
    "self_causal": dict(kv_heads=4, causal=True, cross=False),
    "cross_padded": dict(kv_heads=4, cross=True, padded=True),
    "grouped_causal_padded": dict(kv_heads=2, causal=True, cross=False, padded=True),
    "multi_query_explicit_mask": dict(kv_heads=1, cross=True, explicit=True),
    "bias": dict(kv_heads=2, cross=True, bias=True, padded=True),
}


def _chunk_inputs(case):
    inputs = {"query": _rand(3, 9, 8)}
    if case.get("cross"):
        inputs["value"] = _rand(3, 13, 6, seed=1)
    length = 13 if case.get("cross") else 9
    kwargs = {"use_causal_mask": case.get("causal", False)}
    if case.get("padded"):
        kwargs["value_mask"] = np.arange(length)[None, :] < np.array([[length - 3], [1], [length]])
        kwargs["query_mask"] = np.arange(9)[None, :] < np.array([[9], [7], [4]])
    if case.get("explicit"):
        kwargs["attention_mask"] = np.random.default_rng(4).random((3, 9, length)) > 0.3
    if case.get("bias"):
        inputs["attention_bias"] = _rand(1, 4, 9, length, seed=3)
    return inputs, kwargs


def _loss_and_grads(layer, inputs, kwargs, return_scores=False):
    """Loss and gradients of a fixed projection of the output; with `return_scores` the call
    also returns the weights (the einsum path; without them PyTorch takes its fused kernel)."""
    projection = {}

    def loss_fn(tensors):
        value = tensors.get("value", tensors["query"])
        extra = {"attention_bias": tensors["attention_bias"]} if "attention_bias" in tensors else {}
        if return_scores:
            extra["return_attention_scores"] = True
        output = layer(tensors["query"], value, **kwargs, **extra)
        output = output[0] if return_scores else output
        if "r" not in projection:
            projection["r"] = _rand(*output.shape, seed=2)
        return keras.ops.sum(output * keras.ops.convert_to_tensor(projection["r"]))

    return autodiff.value_and_gradients(layer, loss_fn, inputs, list(inputs))


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_chunked_path_equals_full_path_in_outputs_and_gradients(case):
    c = CHUNK_CASES[case]
    inputs, kwargs = _chunk_inputs(c)
    init = {"num_heads": 4, "key_dim": 4, "num_key_value_heads": c["kv_heads"]}
    full = MultiHeadAttention(**init, chunk_size=None)
    chunked = MultiHeadAttention(**init, chunk_size=3)
    value = inputs.get("value", inputs["query"])
    full(inputs["query"], value)
    chunked(inputs["query"], value)
    chunked.set_weights(full.get_weights())
    extra = {"attention_bias": inputs["attention_bias"]} if c.get("bias") else {}
    np.testing.assert_allclose(
        _np(chunked(inputs["query"], value, **kwargs, **extra)),
        _np(full(inputs["query"], value, **kwargs, **extra)),
        rtol=0,
        atol=1e-5,
    )
    loss, weight_grads, input_grads = _loss_and_grads(chunked, inputs, kwargs)
    full_loss, full_weight_grads, full_input_grads = _loss_and_grads(full, inputs, kwargs)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5, atol=1e-5)
    assert len(weight_grads) == len(full.trainable_variables) == 8
    for variable, a, e in zip(
        full.trainable_variables, weight_grads, full_weight_grads, strict=True
    ):
        assert a is not None and e is not None, variable.path
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5, err_msg=variable.path)
    for name, expected in full_input_grads.items():
        assert np.abs(expected).max() > 1e-3, name  # a gradient that can show a difference
        np.testing.assert_allclose(input_grads[name], expected, rtol=0, atol=1e-5, err_msg=name)


def _reference_attention(q, k, v, mask, drop=1.0):
    """NumPy `softmax(q kᵀ) v` per head; rows without any allowed key give zeros.

    `drop`: the weights are multiplied by it (a dropout keep mask times its scale).
    """
    scores = np.einsum("bqhd,bkhd->bhqk", q, k)
    scores = np.where(mask, scores, -np.inf)
    top = np.max(np.where(mask, scores, -1e30), -1, keepdims=True)
    weights = np.where(mask, np.exp(scores - top), 0.0)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bhqk,bkhd->bqhd", weights * drop, v)


def test_chunked_attention_op_gradient_with_a_fully_masked_row():
    """The hand-written backward pass: finite, zero for a row with no key, numeric gradient."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 7, 2, 3)).astype("float32") for _ in range(3))
    value_mask = np.ones((2, 7), bool)
    value_mask[1] = False  # the second example sees nothing
    value_mask[0, 5:] = False
    out = _np(chunked_attention(q, k, v, value_mask=value_mask, use_causal_mask=True, chunk_size=2))
    causal = np.tril(np.ones((7, 7), bool))
    mask = causal[None, None] & value_mask[:, None, None, :]
    np.testing.assert_allclose(out, _reference_attention(q, k, v, mask), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out[1], 0.0)

    projection = rng.standard_normal(out.shape).astype("float32")
    holder = keras.layers.Identity()  # no weights: gradients w.r.t. the inputs only
    holder.build(None)

    def loss_fn(t):
        result = chunked_attention(
            t["q"], t["k"], t["v"], value_mask=value_mask, use_causal_mask=True, chunk_size=2
        )
        return keras.ops.sum(result * keras.ops.convert_to_tensor(projection))

    arrays = {"q": q, "k": k, "v": v}
    _, _, grads = autodiff.value_and_gradients(holder, loss_fn, arrays, ["q", "k", "v"])
    for name, grad in grads.items():
        assert np.all(np.isfinite(grad)), name
    np.testing.assert_array_equal(grads["q"][1], 0.0)  # nothing attended: no gradient
    np.testing.assert_array_equal(grads["k"][:, 5:], 0.0)  # padded keys
    _assert_numeric_gradients(grads, arrays, mask, projection, [(0, 3, 1, 2), (0, 4, 0, 0), (1, 2, 1, 1)])



def test_full_attention_op_equals_the_reference_and_its_numeric_gradient():
    """The hand-written backward pass on this backend: values, a row with no key, central differences."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 5, 2, 3)).astype("float32") for _ in range(3))
    mask = rng.random((2, 1, 5, 5)) > 0.3
    mask[0, 0, 2] = False  # a query that sees nothing
    out = _np(full_attention(q, k, v, mask=mask))
    np.testing.assert_allclose(out, _reference_attention(q, k, v, mask), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(out[0, 2], 0.0)

    projection = rng.standard_normal(out.shape).astype("float32")
    holder = keras.layers.Identity()  # no weights: gradients w.r.t. the inputs only
    holder.build(None)

    def loss_fn(t):
        result = full_attention(t["q"], t["k"], t["v"], mask=mask)
        return keras.ops.sum(result * keras.ops.convert_to_tensor(projection))

    arrays = {"q": q, "k": k, "v": v}
    _, _, grads = autodiff.value_and_gradients(holder, loss_fn, arrays, ["q", "k", "v"])
    np.testing.assert_array_equal(grads["q"][0, 2], 0.0)  # nothing attended: no gradient
    _assert_numeric_gradients(grads, arrays, mask, projection, [(0, 3, 1, 2), (1, 4, 0, 0), (1, 0, 1, 1)])


def test_full_attention_op_with_dropout_equals_the_reference_and_its_numeric_gradient():
    """Dropout on the weights with `ops.dropout_mask`'s decisions (an int seed: the same mask
    at every call), through the hand-written backward pass on this backend."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 5, 2, 3)).astype("float32") for _ in range(3))
    mask = rng.random((2, 1, 5, 5)) > 0.3
    keep, scale = dropout_mask((2, 2, 5, 5), 0.4, seed=3)
    drop = _np(keep) * scale
    assert 0 < np.mean(drop == 0) < 1
    out = _np(full_attention(q, k, v, mask=mask, dropout_rate=0.4, dropout_seed=3))
    np.testing.assert_allclose(out, _reference_attention(q, k, v, mask, drop), rtol=0, atol=1e-5)
    assert np.abs(out - _reference_attention(q, k, v, mask)).max() > 0.1

    projection = rng.standard_normal(out.shape).astype("float32")
    holder = keras.layers.Identity()
    holder.build(None)

    def loss_fn(t):
        result = full_attention(t["q"], t["k"], t["v"], mask=mask, dropout_rate=0.4, dropout_seed=3)
        return keras.ops.sum(result * keras.ops.convert_to_tensor(projection))

    arrays = {"q": q, "k": k, "v": v}
    _, _, grads = autodiff.value_and_gradients(holder, loss_fn, arrays, ["q", "k", "v"])
    _assert_numeric_gradients(grads, arrays, mask, projection,
                              [(0, 3, 1, 2), (1, 4, 0, 0), (1, 0, 1, 1), (0, 1, 0, 0)], drop)  # fmt: skip


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_op_equals_the_formulas_in_values_and_gradients(approximate):
    x = np.linspace(-6, 6, 61).astype("float32").reshape(1, 61)
    if approximate:
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        value = 0.5 * x * (1 + t)
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    else:
        erf = np.vectorize(math.erf)
        value = 0.5 * x * (1 + erf(x / np.sqrt(2)))
        slope = 0.5 * (1 + erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(_np(gelu(x, approximate=approximate)), value, atol=2e-6)
    holder = keras.layers.Identity()
    holder.build(None)
    _, _, grads = autodiff.value_and_gradients(
        holder, lambda t: keras.ops.sum(gelu(t["x"], approximate=approximate)), {"x": x}, ["x"]
    )
    # Keras's exact GELU on JAX differentiates `1 + erf`, which loses ~5e-6 in the far tail.
    np.testing.assert_allclose(grads["x"], slope, atol=1e-5)


def test_a_gelu_block_trains_like_it_infers_without_dropout():
    block = TransformerEncoderBlock(32, 2, dropout=0.0, activation=gelu_approximate, seed=1)
    x = _rand(2, 5, 8)
    np.testing.assert_allclose(
        _np(block(x, training=True)), _np(block(x, training=False)), rtol=1e-5, atol=1e-6
    )


def _assert_numeric_gradients(grads, arrays, mask, projection, indices, drop=1.0):
    """Each gradient entry at `indices` equals central differences in float64 on the reference."""
    ref = {n: a.astype("float64") for n, a in arrays.items()}
    eps = 1e-4

    def loss(tensors):
        out = _reference_attention(tensors["q"], tensors["k"], tensors["v"], mask, drop)
        return np.sum(out * projection)

    for name in ("q", "k", "v"):
        for index in indices:
            plus, minus = dict(ref), dict(ref)
            plus[name], minus[name] = ref[name].copy(), ref[name].copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            np.testing.assert_allclose(grads[name][index], numeric, rtol=1e-3, atol=1e-4)


# -- fused kernel (PyTorch) -------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_fused_path_equals_the_weights_path_in_outputs_and_gradients(case):
    """Without the weights (fused kernel on PyTorch) = with them (einsum and masked softmax)."""
    c = CHUNK_CASES[case]
    inputs, kwargs = _chunk_inputs(c)
    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=c["kv_heads"])
    value = inputs.get("value", inputs["query"])
    extra = {"attention_bias": inputs["attention_bias"]} if c.get("bias") else {}
    fused = _np(layer(inputs["query"], value, **kwargs, **extra))
    unfused, _ = layer(inputs["query"], value, return_attention_scores=True, **kwargs, **extra)
    np.testing.assert_allclose(fused, _np(unfused), rtol=0, atol=1e-5)
    got = _loss_and_grads(layer, inputs, kwargs)
    want = _loss_and_grads(layer, inputs, kwargs, return_scores=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for variable, a, e in zip(layer.trainable_variables, got[1], want[1], strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5, err_msg=variable.path)
    for name, expected in want[2].items():
        assert np.all(np.isfinite(got[2][name])), name
        np.testing.assert_allclose(got[2][name], expected, rtol=0, atol=1e-5, err_msg=name)


def test_auto_chunk_size_takes_the_fused_kernel_on_torch_only():
    layer = MultiHeadAttention(num_heads=1, key_dim=2)
    q = k = keras.KerasTensor((1, 2048, 1, 2))
    fused = autodiff.backend() == "torch"
    assert layer._chunk_size_for(q, k, False) == (None if fused else 512)
    assert layer._chunk_size_for(q, k, False, dropout_active=True) == 512
    half = keras.KerasTensor((1, 2048, 1, 2), dtype="float16")
    assert layer._chunk_size_for(half, half, False) == 512
    assert layer._chunk_size_for(q, k, True) is None  # weights asked for: the full path


def test_fused_attention_op_zeroes_rows_without_keys_per_head():
    """`ops.fused_attention` against NumPy, with a per-head mask, a bias and empty rows."""
    from keras_attention.ops.fused_attention import fused_attention

    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 5, 3, 4)).astype("float32") for _ in range(3))
    mask = rng.random((2, 3, 5, 5)) > 0.4
    mask[0, 1, 2] = False  # head 1 of query 2 sees nothing
    mask[1, :, 4] = False  # query 4 sees nothing in any head
    bias = rng.standard_normal((1, 3, 5, 5)).astype("float32")
    for b in (None, bias):
        out = _np(fused_attention(q, k, v, mask=mask, bias=b))
        reference = _reference_attention_with_bias(q, k, v, mask, b)
        np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(out[0, 2, 1], 0.0)
        np.testing.assert_array_equal(out[1, 4], 0.0)

    holder = keras.layers.Identity()
    holder.build(None)
    projection = rng.standard_normal(q.shape).astype("float32")

    def loss_fn(t):
        result = fused_attention(t["q"], t["k"], t["v"], mask=mask, bias=bias)
        return keras.ops.sum(result * keras.ops.convert_to_tensor(projection))

    _, _, grads = autodiff.value_and_gradients(holder, loss_fn, {"q": q, "k": k, "v": v}, "qkv")
    for name, grad in grads.items():
        assert np.all(np.isfinite(grad)), name
    np.testing.assert_array_equal(grads["q"][1, 4], 0.0)  # nothing attended: no gradient


def _reference_attention_with_bias(q, k, v, mask, bias):
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) + (0.0 if bias is None else bias)
    top = np.max(np.where(mask, scores, -1e30), -1, keepdims=True)
    weights = np.exp(np.where(mask, scores - top, -np.inf))
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bhqk,bkhd->bqhd", weights, v)


# -- implicit masks ---------------------------------------------------------------------------

TOKENS = np.array([[3, 5, 7, 2, 0, 0], [4, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]], "int32")
PADDING = TOKENS > 0


class _Stack:
    """Embedding(mask_zero) -> 2 encoder blocks -> decoder block -> MHA -> additive -> pooling."""

    def __init__(self):
        keras.utils.set_random_seed(7)
        self.embedding = keras.layers.Embedding(10, 8, mask_zero=True)
        self.encoders = [TransformerEncoderBlock(16, 2) for _ in range(2)]
        self.decoder = TransformerDecoderBlock(16, 2)
        self.attention = MultiHeadAttention(num_heads=2, key_dim=4)
        self.additive = AdditiveAttention(units=5)
        self.pooling = AttentionPooling(units=4)

    def implicit(self, tokens):
        """Every mask implicit; also returns the masks the tensors carried."""
        x = self.embedding(tokens)
        carried = {"embedding": keras_mask(x)}
        for i, block in enumerate(self.encoders):
            x = block(x)
            carried[f"encoder_{i}"] = keras_mask(x)
        y = self.decoder(x, x)
        carried["decoder"] = keras_mask(y)
        y = self.attention(y, x)
        carried["attention"] = keras_mask(y)
        y = self.additive(y, x)
        carried["additive"] = keras_mask(y)
        pooled, weights = self.pooling(y, return_attention_scores=True)
        return pooled, weights, carried

    def explicit(self, tokens, padding):
        x = self.embedding.call(tokens)  # no mask attached
        assert keras_mask(x) is None
        for block in self.encoders:
            x = block(x, padding_mask=padding)
        y = self.decoder(x, x, decoder_padding_mask=padding, encoder_padding_mask=padding)
        y = self.attention(y, x, query_mask=padding, value_mask=padding)
        y = self.additive(y, x, query_mask=padding, value_mask=padding)
        return self.pooling(y, mask=padding, return_attention_scores=True)


def test_implicit_masks_reach_stacked_layers_eagerly():
    stack = _Stack()
    pooled, weights, carried = stack.implicit(TOKENS)
    for name, mask in carried.items():
        np.testing.assert_array_equal(_np(mask), PADDING, err_msg=f"mask carried by {name}")
    expected_pooled, expected_weights = stack.explicit(TOKENS, PADDING)
    np.testing.assert_allclose(_np(pooled), _np(expected_pooled), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_np(weights), _np(expected_weights), rtol=0, atol=1e-6)
    assert np.all(_np(weights)[~PADDING] == 0.0)
    # Without masks the padding would be attended: the masks made a difference.
    unmasked, _ = stack.explicit(TOKENS, np.ones_like(PADDING))
    assert not np.allclose(_np(unmasked)[:2], _np(pooled)[:2], atol=1e-3)
    # More padding changes nothing: the padded positions are ignored everywhere.
    longer = np.pad(TOKENS, ((0, 0), (0, 3)))
    pooled_longer, _, _ = stack.implicit(longer)
    np.testing.assert_allclose(_np(pooled_longer), _np(pooled), rtol=0, atol=1e-5)


def test_implicit_masks_reach_stacked_layers_in_a_functional_model(tmp_path):
    stack = _Stack()
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    pooled, weights, _ = stack.implicit(tokens)
    model = keras.Model(tokens, {"pooled": pooled, "weights": weights})
    result = model(TOKENS)
    expected_pooled, expected_weights = stack.explicit(TOKENS, PADDING)
    np.testing.assert_allclose(_np(result["pooled"]), _np(expected_pooled), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_np(result["weights"]), _np(expected_weights), rtol=0, atol=1e-6)
    assert np.all(_np(result["weights"])[~PADDING] == 0.0)
    path = tmp_path / "stack.keras"
    model.save(path)
    restored = keras.saving.load_model(path)(TOKENS)
    np.testing.assert_array_equal(_np(restored["pooled"]), _np(result["pooled"]))
    # Compiled (`jax.jit`, `torch.compile`, XLA): the masks travel between traced tensors too
    # (JAX keeps a tracer's mask in a side table), and no sublayer is handed a masked input
    # whose mask it would drop. `predict` runs the functional model compiled (JAX, TensorFlow).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled_pooled, compiled_weights, carried = autodiff.jit_function(
            model, lambda t: stack.implicit(t)
        )(TOKENS)
        predicted = model.predict(TOKENS, verbose=0)
    for name, mask in carried.items():
        np.testing.assert_array_equal(_np(mask), PADDING, err_msg=f"compiled: mask of {name}")
    np.testing.assert_allclose(_np(compiled_pooled), _np(expected_pooled), rtol=0, atol=1e-5)
    np.testing.assert_allclose(_np(compiled_weights), _np(expected_weights), rtol=0, atol=1e-5)
    np.testing.assert_allclose(predicted["pooled"], _np(expected_pooled), rtol=0, atol=1e-5)
    dropped = [str(w.message) for w in caught if "destroy the mask" in str(w.message)]
    assert not dropped, dropped[:3]


# -- random draws inside step loops --------------------------------------------------------------


def test_random_draws_in_a_step_loop_differ_per_step_and_training_runs():
    # JAX traces a step loop's body once: a seed generator advanced inside it gave every step
    # the same noise and left a tracer in its state (the next call and `fit` failed).
    from keras_attention.layers import AttentionDecoder, HardAttention
    from keras_attention.models import seq2seq_translator

    rng = np.random.default_rng(0)
    inputs = rng.random((2, 12, 4)).astype("float32")
    memory = rng.random((2, 9, 8)).astype("float32")
    score = HardAttention(seed=1)
    decoder = AttentionDecoder(8, score=score)
    decoder(inputs, memory)
    for weight in score.weights:  # flat scores: the sampled position is the noise's alone
        weight.assign(np.zeros(weight.shape, "float32"))
    calls = [
        _np(decoder(inputs, memory, training=True, return_attention_scores=True)[1]).argmax(-1)
        for _ in range(2)
    ]
    for positions in calls:
        assert all(len(set(row)) >= 4 for row in positions.tolist()), positions  # 12 draws of 9
    assert not np.array_equal(calls[0], calls[1])  # the generator moved on between calls
    assert isinstance(_np(score.seed_generator.state.value), np.ndarray)  # no tracer left
    # Attention dropout in the step loop: a second call after a training one works.
    dropping = AttentionDecoder(8, score=AdditiveAttention(units=8, dropout=0.5))
    for _ in range(2):
        assert np.all(np.isfinite(_np(dropping(inputs, memory, training=True))))
    # `fit` (a compiled train step, called again for the second batch).
    source = rng.integers(1, 30, (16, 7)).astype("int32")
    target = rng.integers(1, 20, (16, 5)).astype("int32")
    model = seq2seq_translator(30, 20, embedding_dim=8, units=16, score="hard")
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit({"source": source, "target_in": target}, target, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# -- -inf biases and float16 scores on every path -------------------------------------------------


@pytest.mark.parametrize("padded", [True, False], ids=["value_mask", "no_mask"])
def test_a_minus_inf_bias_masks_on_every_path(padded):
    # A query row whose allowed keys all carry a -inf bias gives zeros (a fully masked row),
    # and a padded key never changes any output: full, chunked and fused paths alike (the fused
    # kernel let padded keys win the row; the full path spread it over the keys; the chunked one
    # averaged the first chunk).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8)).astype("float32")
    bias = np.zeros((1, 2, 4, 4), "float32")
    bias[:, :, 1, :3] = -np.inf  # row 1: every unpadded key
    bias[:, :, 2, 0] = -np.inf  # row 2: one key
    mask = np.array([[True, True, True, False]]) if padded else None
    if not padded:
        bias[:, :, 1, 3] = -np.inf
    layer = MultiHeadAttention(2, 4, seed=0)
    outputs = {}
    for name, kwargs in (("full", {}), ("weights", {"return_attention_scores": True}),
                         ("chunked", {"chunk_size": 2})):  # fmt: skip
        layer.chunk_size = kwargs.pop("chunk_size", None)
        moved = x.copy()
        moved[0, 3] += 10.0  # the padded key's value
        for inputs, key in ((x, name), (moved, name + "_moved")):
            result = layer(inputs, inputs, value_mask=mask, attention_bias=bias, **kwargs)
            outputs[key] = _np(result[0] if isinstance(result, tuple) else result)
    reference = outputs["weights"]
    assert np.all(np.isfinite(reference))
    np.testing.assert_array_equal(reference[0, 1], 0.0)  # no key left for row 1
    for name in ("full", "weights", "chunked"):
        np.testing.assert_allclose(outputs[name], reference, rtol=0, atol=1e-5, err_msg=name)
        if padded:  # the padded key (the 4th) changes no other position's output
            np.testing.assert_allclose(outputs[name + "_moved"][0, :3], outputs[name][0, :3],
                                       rtol=0, atol=1e-5, err_msg=name)  # fmt: skip
    _, weights = layer(x, x, value_mask=mask, attention_bias=bias, return_attention_scores=True)
    weights = _np(weights)
    np.testing.assert_array_equal(weights[0, :, 1], 0.0)
    np.testing.assert_array_equal(weights[0, :, 2, 0], 0.0)
    np.testing.assert_allclose(weights[0, :, 2].sum(-1), 1.0, rtol=1e-6)


def test_float16_scores_past_its_range_stay_finite_on_every_path():
    # Scores of about 30 * 30 * 4 per head overflow float16 (65,504): computed in float32.
    x = np.tile(np.array([30.0, -30.0], "float32"), (1, 3, 2))
    layer = MultiHeadAttention(2, 4, dtype="mixed_float16", kernel_initializer="ones", seed=0)
    results = {}
    for chunk_size in (None, 2):
        layer.chunk_size = chunk_size
        results[chunk_size] = _np(layer(x, x)).astype("float32")
        assert np.all(np.isfinite(results[chunk_size])), chunk_size
    np.testing.assert_allclose(results[None], results[2], rtol=1e-2, atol=1e-2)


def test_positions_and_ids_known_at_call_time_are_checked():
    # A tensor `start_index` with a value known now is checked like an int (JAX returned NaN
    # rows past the table); concrete JAX ids are checked like NumPy ones.
    from keras_attention.layers import PositionEmbedding, TokenAndPositionEmbedding

    layer = PositionEmbedding(8)
    x = np.zeros((1, 3, 2), "float32")
    assert _np(layer(x, start_index=keras.ops.convert_to_tensor(5))).shape == (1, 3, 2)
    with pytest.raises(ValueError, match="up to 8, beyond the `sequence_length`"):
        layer(x, start_index=keras.ops.convert_to_tensor(6))
    embedding = TokenAndPositionEmbedding(10, 4, 3)
    ids = keras.ops.convert_to_tensor(np.array([[1, 2, 3]], "int32"))
    assert _np(embedding(ids)).shape == (1, 3, 3)  # vocabulary 10, 4 positions, width 3
    if keras.backend.backend() == "jax":
        for bad in ([[1, -1, 2]], [[1, 12, 2]]):
            with pytest.raises(ValueError, match=r"must lie in \[0, vocabulary_size\)"):
                embedding(keras.ops.convert_to_tensor(np.array(bad, "int32")))


def test_nested_step_loops_draw_anew_at_every_inner_and_outer_step():
    from keras import ops

    from keras_attention.ops import dropout
    from keras_attention.ops.loops import step_loop

    generator = keras.random.SeedGenerator(3)
    ones = ops.ones((64,))

    def run():
        def outer(t, masks):
            def inner(u, masks):
                drawn = ops.cast(ops.not_equal(dropout(ones, 0.5, seed=generator), 0), "int32")
                row = t * 2 + u
                return (ops.slice_update(masks, (row, 0), ops.expand_dims(drawn, 0)),)

            return step_loop(2, inner, (masks,))

        (masks,) = step_loop(3, outer, (ops.zeros((6, 64), "int32"),))
        return _np(masks)

    first, second = run(), run()
    assert len({row.tobytes() for row in first}) == 6  # every (outer, inner) step its own draw
    assert not np.array_equal(first, second)  # the generator moved on
    assert isinstance(_np(generator.state.value), np.ndarray)
