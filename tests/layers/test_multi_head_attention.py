import keras
import numpy as np
import pytest

from keras_attention.layers import MultiHeadAttention
from tests import numpy_reference as npref
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_builtins_only,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand

SPECS = {
    "multi_head": ContractSpec(
        MultiHeadAttention,
        init_kwargs={"num_heads": 2, "key_dim": 4},
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=True,
        dropout_kwargs={"dropout": 0.5},
    ),
    "grouped_query": ContractSpec(
        MultiHeadAttention,
        init_kwargs={
            "num_heads": 4,
            "key_dim": 4,
            "value_dim": 3,
            "num_key_value_heads": 2,
            "output_dim": 5,
        },
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=True,
        dropout_kwargs={"dropout": 0.5},
    ),
    # chunk_size=2 takes the chunked path on every call (scores are not asked for: with
    # scores the layer returns the full weights and so takes the full path).
    "chunked": ContractSpec(
        MultiHeadAttention,
        init_kwargs={"num_heads": 4, "key_dim": 4, "num_key_value_heads": 2, "chunk_size": 2},
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        returns_scores=False,
        causal=True,
        dropout_kwargs={"dropout": 0.5},
    ),
    # Rotary positions on the query and key heads (numbers in test_multi_head_attention_rotary).
    "rotary": ContractSpec(
        MultiHeadAttention,
        init_kwargs={
            "num_heads": 4,
            "key_dim": 4,
            "num_key_value_heads": 2,
            "rotary_max_wavelength": 100.0,
        },
        inputs={"query": ("Tq", 8), "value": ("Tv", 6)},
        value_masks={"value_mask": "Tv"},
        query_mask="query_mask",
        causal=True,
        dropout_kwargs={"dropout": 0.5},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


def _copy_from_keras(ours, theirs, query, value, key=None):
    theirs(query, value, key=key)
    ours(query, value, key=key)
    ours.set_weights(theirs.get_weights())


CASES = {
    "self": dict(query=(2, 6, 8), value=None, key=None, causal=False, padded=False),
    "cross": dict(query=(2, 4, 8), value=(2, 7, 6), key=(2, 7, 5), causal=False, padded=False),
    "causal": dict(query=(2, 6, 8), value=None, key=None, causal=True, padded=False),
    "padded": dict(query=(3, 5, 8), value=(3, 7, 6), key=None, causal=False, padded=True),
    "padded_causal": dict(query=(3, 6, 8), value=None, key=None, causal=True, padded=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_keras_multi_head_attention(case):
    c = CASES[case]
    query = rand(*c["query"])
    value = query if c["value"] is None else rand(*c["value"])
    key = None if c["key"] is None else rand(*c["key"])
    kwargs = {"use_causal_mask": c["causal"], "return_attention_scores": True}
    query_mask = np.ones(query.shape[:2], bool)
    if c["padded"]:
        query_mask[0, -2:] = False
        value_mask = np.arange(value.shape[1])[None, :] < np.array([[value.shape[1] - 2], [3], [1]])
        kwargs.update(query_mask=query_mask, value_mask=value_mask)
    theirs = keras.layers.MultiHeadAttention(num_heads=3, key_dim=4, value_dim=5)
    ours = MultiHeadAttention(num_heads=3, key_dim=4, value_dim=5)
    _copy_from_keras(ours, theirs, query, value, key)
    expected, expected_scores = theirs(query, value, key=key, **kwargs)
    actual, actual_scores = ours(query, value, key=key, **kwargs)
    # keras leaves padded query rows unmasked in the output; ours are exactly zero there.
    np.testing.assert_allclose(
        np.asarray(actual)[query_mask], np.asarray(expected)[query_mask], rtol=0, atol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(actual)[~query_mask], 0.0)
    rows = np.moveaxis(np.asarray(actual_scores), 1, 2)[query_mask]
    np.testing.assert_allclose(
        rows, np.moveaxis(np.asarray(expected_scores), 1, 2)[query_mask], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_matches_keras_grouped_query_attention(causal):
    x, memory = rand(2, 6, 8), rand(2, 6, 7)
    theirs = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)
    ours = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    _copy_from_keras(ours, theirs, x, memory)
    expected, expected_scores = theirs(
        x, memory, use_causal_mask=causal, return_attention_scores=True
    )
    actual, actual_scores = ours(x, memory, use_causal_mask=causal, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(actual_scores), np.asarray(expected_scores), rtol=0, atol=1e-5
    )


def test_implicit_masks_are_used_and_the_callers_tensors_keep_them(recwarn):
    tokens = np.array([[3, 5, 0, 0], [2, 0, 0, 0]])
    x = keras.layers.Embedding(10, 8, mask_zero=True)(tokens)
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    output, scores = layer(x, x, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(x._keras_mask), tokens > 0)  # not stripped
    np.testing.assert_array_equal(np.asarray(output._keras_mask), tokens > 0)
    assert np.all(
        np.asarray(scores)[np.broadcast_to(~(tokens > 0)[:, None, None, :], scores.shape)] == 0
    )
    assert not [w for w in recwarn if "destroy the mask" in str(w.message)]


def test_multi_query_attention_has_one_key_value_head():
    layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=1)
    layer(rand(2, 3, 16), rand(2, 5, 16))
    assert tuple(layer._key_dense.kernel.shape) == (16, 1, 8)
    assert tuple(layer._query_dense.kernel.shape) == (16, 4, 8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"num_heads": 0, "key_dim": 4},
            r"`num_heads` must be a positive integer. Received: num_heads=0",
        ),
        (
            {"num_heads": 2, "key_dim": -1},
            r"`key_dim` must be a positive integer. Received: key_dim=-1",
        ),
        (
            {"num_heads": 4, "key_dim": 4, "num_key_value_heads": 3},
            r"multiple of `num_key_value_heads`. Received: num_heads=4, num_key_value_heads=3",
        ),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.0}, r"Received: dropout=1.0"),
        ({"num_heads": 2, "key_dim": 4, "output_dim": 0}, r"Received: output_dim=0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**kwargs)


@pytest.mark.parametrize(
    ("query_shape", "value_shape", "key_shape", "message"),
    [
        ((2, 8), (2, 5, 8), None, r"`query` must have rank 3 .* Received: query.shape=\(2, 8\)"),
        ((2, 3, 8), (2, 5, 8), (2, 4, 8), r"same length. Received: key.shape=\(2, 4, 8\)"),
    ],
)
def test_bad_shapes_raise(query_shape, value_shape, key_shape, message):
    key = None if key_shape is None else rand(*key_shape)
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(num_heads=2, key_dim=4)(rand(*query_shape), rand(*value_shape), key=key)


def _causal_model(layer):
    x = keras.Input((None, 8), name="x")
    return keras.Model(x, layer(x, x, use_causal_mask=True))


@pytest.mark.slow
def test_causal_self_attention_converts_to_tflite_builtins(tmp_path):
    model = _causal_model(MultiHeadAttention(num_heads=2, key_dim=4, num_key_value_heads=1))
    flatbuffer = convert_builtins_only(model, tmp_path)
    for length in (5, 11):
        x = rand(2, length, 8)
        actual = next(iter(run_tflite(flatbuffer, {"x": x}).values()))
        np.testing.assert_allclose(actual, np.asarray(model(x)), rtol=0, atol=1e-5)


def _decode_with_cache(layer, x, prefill, **kwargs):
    """Prefill `prefill` tokens, then feed one token at a time; returns outputs, scores, cache."""
    cache = layer.init_cache(x.shape[0], x.shape[1])
    out, scores, cache = layer(
        x[:, :prefill],
        x[:, :prefill],
        cache=cache,
        cache_update_index=0,
        return_attention_scores=True,
        **kwargs,
    )
    outputs, all_scores = [np.asarray(out)], [np.asarray(scores)]
    for t in range(prefill, x.shape[1]):
        out, scores, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            cache=cache,
            cache_update_index=t,
            return_attention_scores=True,
            **kwargs,
        )
        outputs.append(np.asarray(out))
        all_scores.append(np.asarray(scores))
    return np.concatenate(outputs, 1), np.concatenate(all_scores, 2), cache


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_cached_decoding_equals_the_full_causal_pass(kv_heads):
    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=kv_heads)
    x = rand(2, 9, 8)
    full, full_scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    decoded, scores, (key_cache, value_cache) = _decode_with_cache(layer, x, prefill=4)
    np.testing.assert_allclose(decoded, np.asarray(full), rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores, np.asarray(full_scores), rtol=0, atol=1e-5)
    assert tuple(key_cache.shape) == (2, 9, kv_heads, 4)  # only the key/value heads are cached
    keys = np.asarray(layer._key_dense(x))
    np.testing.assert_allclose(np.asarray(key_cache), keys, rtol=0, atol=1e-6)


def test_cached_step_under_xla_with_a_tensor_index():
    import tensorflow as tf

    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 6, 8)
    full = np.asarray(layer(x, x, use_causal_mask=True))

    @tf.function(jit_compile=True)
    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)

    cache = layer.init_cache(2, 6)
    for t in range(6):
        out, cache = step(x[:, t : t + 1], cache, tf.constant(t))
        np.testing.assert_allclose(np.asarray(out)[:, 0], full[:, t], rtol=0, atol=1e-5)


def test_cache_padding_mask_with_left_padded_prompts():
    """value_mask over cache positions: left padding of a prompt gets no weight at any step."""
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 6, 8)
    valid = np.ones((2, 6), bool)
    valid[1, :2] = False  # second prompt is left-padded by two tokens
    decoded, scores, _ = _decode_with_cache(layer, x, prefill=3, value_mask=valid)
    assert np.all(scores[1, :, :, :2] == 0.0)
    full = layer(x, x, use_causal_mask=True, value_mask=valid)
    np.testing.assert_allclose(decoded[:, 2:], np.asarray(full)[:, 2:], rtol=0, atol=1e-5)


def test_bad_cache_raises():
    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    x = rand(2, 1, 8)
    with pytest.raises(ValueError, match=r"`cache` needs `cache_update_index`"):
        layer(x, x, cache=layer.init_cache(2, 5))
    wrong = MultiHeadAttention(num_heads=4, key_dim=4).init_cache(2, 5)  # 4 kv heads, not 2
    with pytest.raises(
        ValueError, match=r"\(batch_size, max_length, 2, 4\).*Received: cache=\[\(2, 5, 4, 4\)"
    ):
        layer(x, x, cache=wrong, cache_update_index=0)
    with pytest.raises(ValueError, match=r"`cache_update_index` is the write position in a `cache`"):
        layer(x, x, cache_update_index=3)  # not silently ignored
    import tensorflow as tf

    for index in (2.5, tf.constant(2.0), tf.constant([2]), True):
        with pytest.raises(ValueError, match=r"`cache_update_index` must be a non-negative int or "
                                             r"a scalar integer tensor"):  # fmt: skip
            layer(x, x, cache=layer.init_cache(2, 5), cache_update_index=index)


def test_projected_key_value_checks_its_memory_and_a_list_bias_works():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = rand(2, 3, 8), rand(2, 5, 6)
    layer(query, value)
    with pytest.raises(ValueError, match=r"project_key_value: `value` must have shape "
                                         r"`\(batch_size, Tv, 6\)`"):  # fmt: skip
        layer.project_key_value(rand(2, 5, 8))
    bias = np.random.default_rng(1).standard_normal((1, 2, 3, 5)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(layer(query, value, attention_bias=bias.tolist())),
        np.asarray(layer(query, value, attention_bias=bias)),
    )


def test_a_traced_bias_of_the_wrong_size_is_named_at_run_time():
    import tensorflow as tf

    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 5, 8)
    layer(x, x)
    spec = tf.TensorSpec((None, None, 8))
    call = tf.function(lambda q, v, b: layer(q, v, attention_bias=b),
                       input_signature=[spec, spec, tf.TensorSpec((None,) * 4)])  # fmt: skip
    np.testing.assert_allclose(
        np.asarray(call(x, x, np.zeros((1, 2, 5, 5), "float32"))), np.asarray(layer(x, x)),
        rtol=0, atol=1e-6,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`attention_bias` must have rank 4 "
                                                             r"and be broadcastable"):  # fmt: skip
        call(x, x, np.zeros((1, 2, 5, 4), "float32"))  # Tv is 5


def test_cached_decoding_from_keras_masked_inputs():
    """An embedding's Keras mask `(B, Tq)` is no mask over the cache: decoding from it works."""
    from keras_attention.layers import TokenAndPositionEmbedding, TransformerDecoderBlock

    embedding = TokenAndPositionEmbedding(20, 8, 8, mask_zero=True)
    tokens = np.array([[3, 4, 5, 6]])
    for layer in (TransformerDecoderBlock(16, 2), MultiHeadAttention(num_heads=2, key_dim=4)):
        x = embedding(tokens)
        if isinstance(layer, TransformerDecoderBlock):
            full = np.asarray(layer(x, use_causal_mask=True))
            cache = layer.init_cache(1, 8)
            out, cache = layer(embedding(tokens[:, :3]), self_attention_cache=cache,
                               self_attention_cache_update_index=0)  # fmt: skip
            step, _ = layer(embedding(tokens[:, 3:], start_index=3), self_attention_cache=cache,
                            self_attention_cache_update_index=3)  # fmt: skip
        else:
            full = np.asarray(layer(x, x, use_causal_mask=True))
            cache = layer.init_cache(1, 8)
            prefix = embedding(tokens[:, :3])
            out, cache = layer(prefix, prefix, cache=cache, cache_update_index=0)
            last = embedding(tokens[:, 3:], start_index=3)
            step, _ = layer(last, last, cache=cache, cache_update_index=3)
        np.testing.assert_allclose(np.asarray(out), full[:, :3], rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(step), full[:, 3:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_projected_key_value_equals_projecting_the_memory(kv_heads):
    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=kv_heads)
    query, value, key = rand(2, 3, 8), rand(2, 5, 6), rand(2, 5, 7)
    valid = np.arange(5)[None, :] < np.array([[5], [2]])
    full, full_scores = layer(query, value, key=key, value_mask=valid, return_attention_scores=True)
    key_value = layer.project_key_value(value, key)
    assert [tuple(x.shape) for x in key_value] == [(2, 5, kv_heads, 4)] * 2
    out, scores = layer(
        query, None, value_mask=valid, projected_key_value=key_value, return_attention_scores=True
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(full_scores), rtol=0, atol=1e-6)
    assert np.all(np.asarray(scores)[1, :, :, 2:] == 0.0)
    # Symbolic inputs: a functional model that takes the projected memory.
    inputs = [
        keras.Input((None, 8)),
        keras.Input((None, kv_heads, 4)),
        keras.Input((None, kv_heads, 4)),
    ]
    outputs = layer(inputs[0], None, projected_key_value=inputs[1:], return_attention_scores=True)
    assert tuple(outputs[0].shape) == (None, None, 8)
    assert tuple(outputs[1].shape) == (None, 4, None, None)
    model = keras.Model(inputs, outputs)
    out, scores = model([query, *[np.asarray(x) for x in key_value]])
    expected, expected_scores = layer(query, value, key=key, return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(expected_scores), rtol=0, atol=1e-6)


def test_bad_projected_key_value_raises():
    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    x, memory = rand(2, 1, 8), rand(2, 5, 8)
    with pytest.raises(ValueError, match=r"`project_key_value` needs a built layer"):
        layer.project_key_value(memory)
    layer(x, memory)
    key_value = layer.project_key_value(memory)
    with pytest.raises(ValueError, match=r"`value` is required .*Received: value=None"):
        layer(x, None)
    with pytest.raises(ValueError, match=r"`value` and `key` must be `None`.*value=\(2, 5, 8\)"):
        layer(x, memory, projected_key_value=key_value)
    with pytest.raises(ValueError, match=r"building needs the shape of `value`"):
        MultiHeadAttention(num_heads=4, key_dim=4)(x, None, projected_key_value=key_value)
    with pytest.raises(ValueError, match=r"cannot be used together"):
        layer(
            x,
            None,
            projected_key_value=key_value,
            cache=layer.init_cache(2, 5),
            cache_update_index=0,
        )
    with pytest.raises(
        ValueError,
        match=r"`projected_key_value` must be .*\(batch_size, Tv, 2, 4\).*"
        r"Received: projected_key_value=\[\(2, 5, 2, 4\), \(2, 4, 2, 4\)\]",
    ):
        layer(x, None, projected_key_value=(key_value[0], key_value[1][:, :4]))
    # An attention bias is checked against the projected memory's length (5), as with `value`.
    layer(x, None, projected_key_value=key_value, attention_bias=np.zeros((1, 4, 1, 5)))
    with pytest.raises(ValueError, match=r"broadcastable to .*\(2, 4, 1, 5\).*shape=\(1, 4, 1, 6\)"):
        layer(x, None, projected_key_value=key_value, attention_bias=np.zeros((1, 4, 1, 6)))


@pytest.mark.slow
def test_cached_decode_step_converts_to_tflite_builtins(tmp_path):
    """One decode step (token, caches, index) -> (output, caches): builtins only, rank-4 caches."""
    import tensorflow as tf

    layer = MultiHeadAttention(num_heads=4, key_dim=4, num_key_value_heads=2)
    x = rand(2, 7, 8)
    full = np.asarray(layer(x, x, use_causal_mask=True))

    def step(token, key_cache, value_cache, index):
        out, (k, v) = layer(token, token, cache=(key_cache, value_cache), cache_update_index=index)
        return {"output": out, "key_cache": k, "value_cache": v}

    flatbuffer = convert_endpoint_builtins_only(
        layer,
        step,
        [
            tf.TensorSpec((None, 1, 8), tf.float32, name="token"),
            tf.TensorSpec((None, None, 2, 4), tf.float32, name="key_cache"),
            tf.TensorSpec((None, None, 2, 4), tf.float32, name="value_cache"),
            tf.TensorSpec((), tf.int32, name="index"),
        ],
        tmp_path,
    )
    key_cache, value_cache = (np.asarray(c) for c in layer.init_cache(2, 7))
    for t in range(7):
        result = run_tflite(
            flatbuffer,
            {
                "token": x[:, t : t + 1],
                "key_cache": key_cache,
                "value_cache": value_cache,
                "index": np.int32(t),
            },
        )
        key_cache, value_cache = result["key_cache"], result["value_cache"]
        np.testing.assert_allclose(result["output"][:, 0], full[:, t], rtol=0, atol=1e-5)


# -- the chunked path -------------------------------------------------------------------------


def _loss_and_grads(layer, query, value, **kwargs):
    import tensorflow as tf

    query, value = tf.constant(query), tf.constant(value)
    with tf.GradientTape() as tape:
        tape.watch([query, value])
        output = layer(query, value, **kwargs)
        weight = np.random.default_rng(2).standard_normal(output.shape).astype("float32")
        loss = tf.reduce_sum(output * weight)
    variables = [v.value for v in layer.trainable_variables]
    return np.asarray(output), [
        np.asarray(g) for g in tape.gradient(loss, variables + [query, value])
    ]


CHUNK_CASES = {
    "self_causal": dict(kv_heads=4, causal=True, cross=False, padded=False),
    "cross_padded": dict(kv_heads=4, causal=False, cross=True, padded=True),
    "grouped_causal_padded": dict(kv_heads=2, causal=True, cross=False, padded=True),
    "multi_query_explicit_mask": dict(kv_heads=1, causal=False, cross=True, explicit=True),
    "key_bias_padded": dict(kv_heads=4, causal=False, cross=True, padded=True, bias=(3, 1, 1)),
    # A bias of size 1 on the key axis (the chunked path broadcasts it over the key blocks).
    "row_bias_causal": dict(kv_heads=2, causal=True, cross=False, bias=(1, 4, 9), key_axis=1),
}


@pytest.mark.parametrize("case", list(CHUNK_CASES))
def test_chunked_path_equals_full_path_in_outputs_and_gradients(case):
    c = CHUNK_CASES[case]
    query = rand(3, 9, 8)
    value = rand(3, 13, 6) if c["cross"] else query
    kwargs = {"use_causal_mask": c["causal"]}
    if c.get("padded"):
        length = value.shape[1]
        kwargs["value_mask"] = np.arange(length)[None, :] < np.array([[length - 3], [1], [length]])
        kwargs["query_mask"] = np.arange(9)[None, :] < np.array([[9], [7], [4]])
    if c.get("explicit"):
        kwargs["attention_mask"] = np.random.default_rng(4).random((3, 9, value.shape[1])) > 0.3
    if c.get("bias"):
        bias_shape = (*c["bias"], c.get("key_axis", value.shape[1]))
        kwargs["attention_bias"] = np.random.default_rng(5).standard_normal(bias_shape) * 2
    init = {"num_heads": 4, "key_dim": 4, "num_key_value_heads": c["kv_heads"]}
    full = MultiHeadAttention(**init, chunk_size=None)
    chunked = MultiHeadAttention(**init, chunk_size=3)
    full(query, value)
    chunked(query, value)
    chunked.set_weights(full.get_weights())
    expected, expected_grads = _loss_and_grads(full, query, value, **kwargs)
    actual, actual_grads = _loss_and_grads(chunked, query, value, **kwargs)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    assert len(actual_grads) == len(expected_grads) == len(full.trainable_variables) + 2
    for a, e in zip(actual_grads, expected_grads, strict=True):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)


def test_chunked_prefill_into_a_cache_equals_the_full_path():
    x = rand(2, 9, 8)
    full = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=None)
    chunked = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=2)
    full(x, x)
    chunked(x, x)
    chunked.set_weights(full.get_weights())
    expected = np.asarray(full(x, x, use_causal_mask=True))
    cache = chunked.init_cache(2, 12)  # longer than the prompt: the rest stays masked
    out, cache = chunked(x[:, :6], x[:, :6], cache=cache, cache_update_index=0)
    np.testing.assert_allclose(np.asarray(out), expected[:, :6], rtol=0, atol=1e-5)
    out, cache = chunked(x[:, 6:], x[:, 6:], cache=cache, cache_update_index=6)
    np.testing.assert_allclose(np.asarray(out), expected[:, 6:], rtol=0, atol=1e-5)


def test_attention_bias_is_added_to_the_scores_in_both_paths():
    query, value = rand(2, 5, 8), rand(2, 7, 8)
    bias = np.random.default_rng(3).standard_normal((1, 2, 5, 7)).astype("float32")
    full = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=None)
    out, scores = full(query, value, attention_bias=bias, return_attention_scores=True)
    q = np.asarray(full._query_dense(query)) / 2.0  # 1 / sqrt(key_dim)
    k = np.asarray(full._key_dense(value))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) + bias
    np.testing.assert_allclose(np.asarray(scores), npref.softmax(logits), rtol=0, atol=1e-5)
    chunked = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=3)
    chunked(query, value)
    chunked.set_weights(full.get_weights())
    np.testing.assert_allclose(
        np.asarray(chunked(query, value, attention_bias=bias)), np.asarray(out), rtol=0, atol=1e-5
    )


def test_a_bias_of_minus_infinity_gives_no_nan_in_any_path():
    import tensorflow as tf

    x = rand(1, 6, 8)
    bias = np.zeros((1, 1, 1, 6), "float32")
    bias[..., 3:] = -np.inf  # keys 3.. forbidden by the bias alone
    layers = [MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=c) for c in (None, 2)]
    layers[0](x, x)
    layers[1](x, x)
    layers[1].set_weights(layers[0].get_weights())
    outputs, grads = [], []
    for layer in layers:
        with tf.GradientTape() as tape:
            xt = tf.constant(x)
            tape.watch(xt)
            out = layer(xt, xt, attention_bias=bias)
            total = tf.reduce_sum(out)
        outputs.append(np.asarray(out))
        grads.append(np.asarray(tape.gradient(total, xt)))
    _, weights = layers[0](x, x, attention_bias=bias, return_attention_scores=True)
    np.testing.assert_array_equal(np.asarray(weights)[..., 3:], 0.0)
    for out, grad in zip(outputs, grads, strict=True):
        assert np.isfinite(out).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(grads[1], grads[0], rtol=0, atol=1e-5)
    # Under mixed_float16 a bias of -1e9 becomes -inf when cast: still finite.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for chunk_size in (None, 2):
            layer = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=chunk_size)
            out = np.asarray(layer(x, x, attention_bias=np.where(bias < 0, -1e9, 0.0)))
            assert np.isfinite(out.astype("float32")).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_chunk_size_chooses_by_length():
    import tensorflow as tf

    layer = MultiHeadAttention(num_heads=1, key_dim=2)
    assert layer.chunk_size == "auto"

    def choice(q_len, k_len, scores=False):
        q = keras.KerasTensor((1, q_len, 1, 2))
        k = keras.KerasTensor((1, k_len, 1, 2))
        return layer._chunk_size_for(q, k, scores)

    assert choice(2048, 2048) == 512
    assert choice(1, 1 << 22) == 512  # one query over a 4M-position cache
    assert choice(2048, 2047) is None
    assert choice(4096, 4096, scores=True) is None  # the full weights are returned
    fixed = MultiHeadAttention(num_heads=1, key_dim=2, chunk_size=64)
    assert (
        fixed._chunk_size_for(
            keras.KerasTensor((1, 8, 1, 2)), keras.KerasTensor((1, 65, 1, 2)), False
        )
        == 64
    )
    assert (
        fixed._chunk_size_for(
            keras.KerasTensor((1, 8, 1, 2)), keras.KerasTensor((1, 64, 1, 2)), False
        )
        is None
    )
    # Unknown lengths: decided at run time; both branches agree with the full path.
    full = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=None)
    auto = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(1, 2048, 8)
    full(x[:, :4], x[:, :4])
    auto(x[:, :4], x[:, :4])
    auto.set_weights(full.get_weights())

    @tf.function(input_signature=[tf.TensorSpec((None, None, 8))])
    def dynamic(x):
        return auto(x, x, use_causal_mask=True)

    for length in (16, 2048):  # below and at the threshold
        expected = np.asarray(full(x[:, :length], x[:, :length], use_causal_mask=True))
        np.testing.assert_allclose(np.asarray(dynamic(x[:, :length])), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, "big", True])
def test_bad_chunk_size_raises(chunk_size):
    with pytest.raises(
        ValueError, match=r"`chunk_size` must be \"auto\", a positive integer or None"
    ):
        MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=chunk_size)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fast_decoding_gives_the_layer_outputs(policy):
    """`fast_decoding` (what decoding loops use): 2-D kernels made once, the same outputs."""
    import tensorflow as tf

    from keras_attention.layers.multi_head_attention import _decoding_state, fast_decoding

    keras.config.set_dtype_policy(policy)
    try:
        layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2)
        inputs = keras.Input((5, 16))
        model = keras.Model(inputs, layer(inputs, inputs))  # found through the model's layers
        x = np.random.default_rng(0).random((3, 5, 16)).astype("float32")
        expected, _ = layer(x, x, return_attention_scores=True)

        @tf.function
        def hoisted(x):
            with fast_decoding(model):
                assert len(_decoding_state().kernels[id(layer)]) == 4
                return layer(x, x)

        actual = hoisted(x)

        @tf.function
        def decode(x):  # heads-first caches inside the block: the causal pass, step by step
            with fast_decoding(model):
                key_cache, value_cache = layer.init_cache(3, 5)
                assert tuple(key_cache.shape) == (3, 2, 5, 8)  # (B, Hkv, max_length, d)
                steps = []
                for t in range(5):
                    y, (key_cache, value_cache) = layer(
                        x[:, t : t + 1], x[:, t : t + 1], cache=(key_cache, value_cache),
                        cache_update_index=t,
                    )  # fmt: skip
                    steps.append(y)
                return tf.concat(steps, axis=1)

        causal = layer(x, x, use_causal_mask=True)
        np.testing.assert_allclose(np.asarray(decode(x), "float32"),
                                   np.asarray(causal, "float32"),
                                   atol=1e-5 if policy == "float32" else 3e-2)  # fmt: skip
        assert _decoding_state().kernels == {}  # nothing changes outside the block
        tolerance = 1e-6 if policy == "float32" else 2e-2
        np.testing.assert_allclose(np.asarray(actual, "float32"), np.asarray(expected, "float32"),
                                   atol=tolerance)  # fmt: skip
        assert actual.dtype == expected.dtype
    finally:
        keras.config.set_dtype_policy("float32")


# -- cache indices outside the cache (issue 16) -----------------------------------------------


@pytest.mark.parametrize("index, length", [(10, 1), (4, 1), (3, 2), (-1, 1)])
def test_cache_index_outside_the_cache_raises(index, length):
    """A 4-slot cache: a write that does not fit raises instead of being clamped into slot 3."""
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, length, 8)
    cache = layer.init_cache(2, 4)
    cache = layer(x, x, cache=cache, cache_update_index=0)[-1]
    before = [np.asarray(c).copy() for c in cache]
    # (a negative index: "must be a non-negative int"; one past the cache: "must be in [0, ...]")
    with pytest.raises(ValueError, match=r"`cache_update_index` must be (in|a non-negative) .*"
                                         rf"Received: cache_update_index={index}"):  # fmt: skip
        layer(x, x, cache=cache, cache_update_index=index)
    import tensorflow as tf

    with pytest.raises(ValueError, match=r"`cache_update_index`"):  # an eager tensor index
        layer(x, x, cache=cache, cache_update_index=tf.constant(index))
    for b, c in zip(before, cache, strict=True):
        np.testing.assert_array_equal(np.asarray(c), b)  # nothing written


def test_cache_index_outside_the_cache_traced():
    """Traced: a run-time assertion (not XLA); under XLA the write is clamped, as documented."""
    import tensorflow as tf

    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    x = rand(2, 1, 8)
    cache = layer.init_cache(2, 4)
    layer(x, x, cache=cache, cache_update_index=0)

    def step(token, cache, index):
        return layer(token, token, cache=cache, cache_update_index=index)[-1]

    traced = tf.function(step)
    traced(x, cache, tf.constant(3))  # in range
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`cache_update_index` must be in"):
        traced(x, cache, tf.constant(10))
    key_cache, _ = tf.function(step, jit_compile=True)(x, cache, tf.constant(10))
    written = np.abs(np.asarray(key_cache)).sum(axis=(0, 2, 3))
    assert written[3] > 0 and np.all(written[:3] == 0)  # clamped into the last slot


def test_mask_and_batch_checks_at_every_call():
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    q, v = rand(2, 3, 8), rand(2, 5, 6)
    layer(q, v)
    with pytest.raises(ValueError, match=r"`value` must have shape .*`batch_size` = 2"):
        layer(q, v[:1])
    with pytest.raises(ValueError, match=r"`value` must have rank 3"):
        layer(q, v[:, 0])
    with pytest.raises(ValueError, match=r"`value_mask` must have shape .*value_mask.shape=\(2, 4\)"):
        layer(q, v, value_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"`attention_mask` must be a boolean mask"):
        layer(q, v, attention_mask=np.zeros((2, 3, 5), "float32"))
    with pytest.raises(ValueError, match=r"`query` must have shape .*axis 2 must be 8"):
        layer(rand(2, 3, 7), v)


def test_empty_inputs_give_empty_outputs():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, chunk_size=2)
    layer(rand(2, 3, 8), rand(2, 5, 8))
    for q, v in (((0, 3, 8), (0, 5, 8)), ((2, 0, 8), (2, 5, 8)), ((2, 3, 8), (2, 0, 8))):
        out = layer(np.zeros(q, "float32"), np.zeros(v, "float32"))
        assert tuple(out.shape) == q
        assert np.all(np.asarray(out) == np.asarray(out))  # no NaN


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 3, 3, 5), (1, 2, 3, 4), (3, 1, 3, 5)])
def test_attention_bias_of_a_wrong_shape_raises(shape):
    layer = MultiHeadAttention(num_heads=2, key_dim=4)
    q, v = rand(2, 3, 8), rand(2, 5, 6)
    layer(q, v, attention_bias=np.zeros((1, 2, 3, 5), "float32"))  # broadcast over the batch
    with pytest.raises(ValueError, match=r"`attention_bias` must have rank 4 and be broadcastable"):
        layer(q, v, attention_bias=np.zeros(shape, "float32"))
