import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.layers import TransformerDecoderBlock, TransformerEncoderBlock
from tests import numpy_reference as ref
from tests.layer_contract import (
    ContractSpec,
    contract_checks,
    convert_builtins_only,
    convert_endpoint_builtins_only,
    run_tflite,
)
from tests.layers.score_specs import rand

SPECS = {
    # GPT style: causal self-attention only; the contract checks its scores.
    "decoder_only_pre_ln": ContractSpec(
        TransformerDecoderBlock,
        init_kwargs={"intermediate_dim": 16, "num_heads": 2, "normalize_first": True},
        inputs={"decoder_sequence": ("Tq", 8)},
        query_mask="decoder_padding_mask",
        scores_key="self_attention",
        causal=True,
        dropout_kwargs={"dropout": 0.3},
    ),
    # Encoder-decoder: the contract checks the cross-attention scores. Not `causal` for the
    # contract (its causal check also cuts and shifts the encoder sequence); causality and
    # encoder padding are tested below.
    "encoder_decoder_grouped_query": ContractSpec(
        TransformerDecoderBlock,
        init_kwargs={"intermediate_dim": 12, "num_heads": 4, "num_key_value_heads": 2},
        inputs={"decoder_sequence": ("Tq", 8), "encoder_sequence": ("Tv", 6)},
        query_mask="decoder_padding_mask",
        scores_key="cross_attention",
        dropout_kwargs={"dropout": 0.3},
    ),
}


@pytest.mark.parametrize("spec", list(SPECS.values()), ids=list(SPECS))
@pytest.mark.parametrize("check", contract_checks())
def test_layer_contract(check, spec, tmp_path):
    check(spec, tmp_path)


def _lengths_mask(lengths, max_length):
    return np.arange(max_length)[None, :] < np.asarray(lengths)[:, None]


def _block(normalize_first=False, **kwargs):
    return TransformerDecoderBlock(
        intermediate_dim=12,
        num_heads=4,
        normalize_first=normalize_first,
        bias_initializer="random_normal",
        **kwargs,
    )


def _np(x):
    return np.asarray(x)


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("explicit_masks", [False, True], ids=["padding", "padding_explicit"])
def test_matches_numpy_reference(normalize_first, explicit_masks):
    block = _block(normalize_first, num_key_value_heads=2, layer_norm_epsilon=1e-3)
    x, memory = rand(3, 6, 8), rand(3, 7, 5)
    dec_pad, enc_pad = _lengths_mask([6, 4, 1], 6), _lengths_mask([7, 2, 5], 7)
    kwargs = {"decoder_padding_mask": dec_pad, "encoder_padding_mask": enc_pad}
    self_mask = dec_pad[:, :, None] & dec_pad[:, None, :] & np.tril(np.ones((6, 6), bool))
    cross_mask = dec_pad[:, :, None] & enc_pad[:, None, :]
    if explicit_masks:
        rng = np.random.default_rng(0)
        explicit_self, explicit_cross = rng.random((3, 6, 6)) > 0.3, rng.random((3, 6, 7)) > 0.3
        kwargs.update(self_attention_mask=explicit_self, cross_attention_mask=explicit_cross)
        self_mask, cross_mask = self_mask & explicit_self, cross_mask & explicit_cross
    output, scores = block(x, memory, return_attention_scores=True, **kwargs)
    expected, expected_scores = ref.transformer_block(
        x, ref.weights_by_path(block), normalize_first, 1e-3, self_mask, memory, cross_mask
    )
    np.testing.assert_allclose(
        _np(output), np.where(dec_pad[..., None], expected, 0.0), rtol=0, atol=1e-5
    )
    assert sorted(scores) == ["cross_attention", "self_attention"]
    for name, weights in scores.items():
        np.testing.assert_allclose(_np(weights), expected_scores[name], rtol=0, atol=1e-5)


def test_decoder_only_matches_numpy_reference():
    block = _block(normalize_first=True)
    x = rand(2, 5, 8)
    output, scores = block(x, return_attention_scores=True)
    assert list(scores) == ["self_attention"]
    causal = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (2, 5, 5))
    expected, expected_scores = ref.transformer_block(
        x, ref.weights_by_path(block), True, 1e-5, causal
    )
    np.testing.assert_allclose(_np(output), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        _np(scores["self_attention"]), expected_scores["self_attention"], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("with_encoder", [True, False], ids=["encoder_decoder", "decoder_only"])
def test_matches_keras_hub_transformer_decoder(normalize_first, with_encoder):
    """Same weight order and layout: `set_weights(keras_hub_decoder.get_weights())` copies."""
    kwargs = {"intermediate_dim": 16, "num_heads": 2, "normalize_first": normalize_first}
    theirs = keras_hub.layers.TransformerDecoder(**kwargs, bias_initializer="random_normal")
    ours = TransformerDecoderBlock(**kwargs)
    x, memory = rand(3, 6, 8), (rand(3, 7, 8) if with_encoder else None)
    dec_pad = _lengths_mask([6, 4, 2], 6)
    masks = {"decoder_padding_mask": dec_pad}
    if with_encoder:
        masks["encoder_padding_mask"] = _lengths_mask([7, 3, 5], 7)
    theirs(x, memory)
    ours(x, memory)
    ours.set_weights(theirs.get_weights())
    expected, actual = _np(theirs(x, memory, **masks)), _np(ours(x, memory, **masks))
    # keras_hub leaves padded query rows unmasked; ours are exactly zero there.
    np.testing.assert_allclose(actual[dec_pad], expected[dec_pad], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(actual[~dec_pad], 0.0)


def test_future_decoder_tokens_move_no_past_output_or_score():
    """With dropout in training (two blocks, one seed) and with every score returned."""
    x, memory = rand(2, 7, 8), rand(2, 5, 8)
    future = x.copy()
    future[:, 4:] += 50.0 * rand(2, 3, 8)
    block = _block(dropout=0.3, seed=9)
    twin = TransformerDecoderBlock.from_config(block.get_config())
    block(x, memory)
    twin(x, memory)  # inference calls draw no dropout randomness
    twin.set_weights(block.get_weights())
    for training in (False, True):
        a, a_scores = block(x, memory, return_attention_scores=True, training=training)
        b, b_scores = twin(future, memory, return_attention_scores=True, training=training)
        np.testing.assert_allclose(_np(b)[:, :4], _np(a)[:, :4], rtol=0, atol=1e-5)
        assert not np.allclose(_np(b)[:, 4:], _np(a)[:, 4:])
        for name in ("self_attention", "cross_attention"):
            np.testing.assert_allclose(
                _np(b_scores[name])[:, :, :4], _np(a_scores[name])[:, :, :4], rtol=0, atol=1e-6
            )
        upper = np.triu(np.ones((7, 7), bool), k=1)
        assert np.all(_np(a_scores["self_attention"])[..., upper] == 0.0)


def test_padded_encoder_positions_get_zero_weight_and_change_nothing():
    x, memory = rand(3, 5, 8), rand(3, 6, 8)
    enc_pad = _lengths_mask([6, 2, 0], 6)  # the last source is empty
    noisy = np.where(enc_pad[..., None], memory, 100.0 * rand(3, 6, 8) - 3.0).astype("float32")
    block = _block()
    a, a_scores = block(x, memory, encoder_padding_mask=enc_pad, return_attention_scores=True)
    b, b_scores = block(x, noisy, encoder_padding_mask=enc_pad, return_attention_scores=True)
    cross = _np(a_scores["cross_attention"])  # (B, H, Tq, S)
    assert np.all(cross[np.broadcast_to(~enc_pad[:, None, None, :], cross.shape)] == 0.0)
    np.testing.assert_array_equal(cross[2], 0.0)  # nothing to attend to: zeros, not NaN
    np.testing.assert_allclose(cross[:2].sum(-1), 1.0, rtol=0, atol=1e-5)
    assert np.all(np.isfinite(_np(a)))
    np.testing.assert_allclose(_np(b), _np(a), rtol=0, atol=1e-5)
    np.testing.assert_allclose(_np(b_scores["cross_attention"]), cross, rtol=0, atol=1e-6)
    # The implicit Keras mask of the encoder sequence is used the same way.
    masked_memory = keras.layers.Masking(mask_value=0.0)(np.where(enc_pad[..., None], memory, 0.0))
    np.testing.assert_allclose(_np(block(x, masked_memory)), _np(a), rtol=0, atol=1e-5)


def _decode(block, x, memory, prefill, **kwargs):
    """Prefill, then one token per call; returns outputs and scores concatenated over steps."""
    cache = block.init_cache(x.shape[0], x.shape[1])
    outputs, scores = [], {}
    steps = [(0, prefill)] + [(t, t + 1) for t in range(prefill, x.shape[1])]
    for start, stop in steps:
        out, step_scores, cache = block(
            x[:, start:stop],
            memory,
            self_attention_cache=cache,
            self_attention_cache_update_index=start,
            return_attention_scores=True,
            **kwargs,
        )
        outputs.append(_np(out))
        for name, value in step_scores.items():
            scores.setdefault(name, []).append(_np(value))
    return np.concatenate(outputs, 1), {k: np.concatenate(v, 2) for k, v in scores.items()}


@pytest.mark.parametrize(
    ("normalize_first", "with_encoder", "kv_heads"),
    [(False, True, 2), (True, True, 4), (True, False, 1)],
    ids=["post_ln_encoder_decoder_gqa", "pre_ln_encoder_decoder", "pre_ln_decoder_only_mqa"],
)
def test_cached_decoding_equals_the_full_causal_pass(normalize_first, with_encoder, kv_heads):
    block = _block(normalize_first, num_key_value_heads=kv_heads)
    x, memory = rand(2, 8, 8), (rand(2, 5, 8) if with_encoder else None)
    enc_kwargs = {"encoder_padding_mask": _lengths_mask([5, 3], 5)} if with_encoder else {}
    full, full_scores = block(x, memory, return_attention_scores=True, **enc_kwargs)
    decoded, scores = _decode(block, x, memory, prefill=3, **enc_kwargs)
    np.testing.assert_allclose(decoded, _np(full), rtol=0, atol=1e-5)
    assert sorted(scores) == sorted(full_scores)
    for name, value in scores.items():
        np.testing.assert_allclose(value, _np(full_scores[name]), rtol=0, atol=1e-5)


def test_cached_step_under_xla_with_a_tensor_index():
    """Also with a padding mask over the cache positions (sliced at the tensor index)."""
    block = _block(num_key_value_heads=2)
    x, memory = rand(2, 6, 8), rand(2, 4, 8)
    valid = np.ones((2, 6), bool)
    valid[1, :2] = False  # a left-padded prompt
    full, full_scores = block(x, memory, decoder_padding_mask=valid, return_attention_scores=True)

    @tf.function(jit_compile=True)
    def step(token, cache, index):
        return block(
            token,
            memory,
            decoder_padding_mask=valid,
            self_attention_cache=cache,
            self_attention_cache_update_index=index,
            return_attention_scores=True,
        )

    cache = block.init_cache(2, 6)
    for t in range(6):
        out, scores, cache = step(x[:, t : t + 1], cache, tf.constant(t))
        np.testing.assert_allclose(_np(out)[:, 0], _np(full)[:, t], rtol=0, atol=1e-5)
        for name in ("self_attention", "cross_attention"):
            np.testing.assert_allclose(
                _np(scores[name])[:, :, 0], _np(full_scores[name])[:, :, t], rtol=0, atol=1e-5
            )


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_cross_attention_cache_equals_projecting_the_encoder_sequence(normalize_first):
    """Keys and values of the encoder projected once give the full pass's outputs and scores."""
    block = _block(normalize_first, num_key_value_heads=2)
    x, memory = rand(2, 8, 8), rand(2, 5, 6)
    enc_mask = _lengths_mask([5, 3], 5)
    full, full_scores = block(
        x, memory, encoder_padding_mask=enc_mask, return_attention_scores=True
    )
    cross_cache = block.compute_cross_attention_cache(memory)
    assert [tuple(c.shape) for c in cross_cache] == [(2, 5, 2, 2), (2, 5, 2, 2)]
    decoded, scores = _decode(
        block, x, None, prefill=3, encoder_padding_mask=enc_mask, cross_attention_cache=cross_cache
    )
    np.testing.assert_allclose(decoded, _np(full), rtol=0, atol=1e-5)
    for name in ("self_attention", "cross_attention"):
        np.testing.assert_allclose(scores[name], _np(full_scores[name]), rtol=0, atol=1e-5)
    assert np.all(scores["cross_attention"][1, :, :, 3:] == 0.0)  # padded encoder positions
    # Without a cache too (a whole sequence), and the Keras mask of a passed encoder_sequence
    # is still read.
    masked_memory = keras.layers.Masking(mask_value=0.0)(np.where(enc_mask[..., None], memory, 0.0))
    out = block(x, masked_memory, cross_attention_cache=cross_cache)
    np.testing.assert_allclose(_np(out), _np(full), rtol=0, atol=1e-5)


def test_cross_attention_cache_in_a_compiled_decode_step():
    block = _block(num_key_value_heads=2)
    x, memory = rand(2, 6, 8), rand(2, 4, 8)
    full = _np(block(x, memory))

    @tf.function(jit_compile=True)
    def step(token, cache, cross_cache, index):
        return block(
            token,
            self_attention_cache=cache,
            self_attention_cache_update_index=index,
            cross_attention_cache=cross_cache,
        )

    cache, cross_cache = block.init_cache(2, 6), block.compute_cross_attention_cache(memory)
    for t in range(6):
        out, cache = step(x[:, t : t + 1], cache, cross_cache, tf.constant(t))
        np.testing.assert_allclose(_np(out)[:, 0], full[:, t], rtol=0, atol=1e-5)


def test_bad_cross_attention_cache_arguments_raise():
    decoder_only, encoder_decoder = _block(), _block()
    x, memory = rand(2, 3, 8), rand(2, 4, 8)
    with pytest.raises(ValueError, match=r"`compute_cross_attention_cache` .*an unbuilt block"):
        encoder_decoder.compute_cross_attention_cache(memory)
    decoder_only(x)
    encoder_decoder(x, memory)
    with pytest.raises(ValueError, match=r"Received: a decoder-only block"):
        decoder_only.compute_cross_attention_cache(memory)
    cross_cache = encoder_decoder.compute_cross_attention_cache(memory)
    with pytest.raises(
        ValueError, match=r"no `cross_attention_cache`. Received: cross_attention_cache with shapes"
    ):
        decoder_only(x, cross_attention_cache=cross_cache)
    with pytest.raises(
        ValueError,
        match=r"TransformerDecoderBlock: `cross_attention_cache` must be .*"
        r"see `compute_cross_attention_cache`. "
        r"Received: cross_attention_cache=\[\(2, 4, 1, 2\), \(2, 4, 4, 2\)\]",
    ):
        encoder_decoder(x, cross_attention_cache=(cross_cache[0][:, :, :1], cross_cache[1]))


def test_cache_padding_mask_covers_cache_positions():
    """Left-padded prompts: the mask over the cache positions, as in the full pass."""
    block = _block()
    x, memory = rand(2, 6, 8), rand(2, 4, 8)
    valid = np.ones((2, 6), bool)
    valid[1, :2] = False  # the second prompt is left-padded by two tokens
    full = _np(block(x, memory, decoder_padding_mask=valid))
    decoded, scores = _decode(block, x, memory, prefill=3, decoder_padding_mask=valid)
    np.testing.assert_allclose(decoded, full, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(decoded[1, :2], 0.0)
    assert np.all(scores["self_attention"][1, :, :, :2] == 0.0)


def test_cross_attention_is_fixed_when_built():
    decoder_only, encoder_decoder = _block(), _block()
    x, memory = rand(2, 4, 8), rand(2, 3, 8)
    decoder_only(x)
    encoder_decoder(x, memory)
    assert not any("cross_attention" in v.path for v in decoder_only.weights)
    assert any("cross_attention" in v.path for v in encoder_decoder.weights)
    with pytest.raises(ValueError, match=r"built without cross-attention.*encoder_sequence.shape"):
        decoder_only(x, memory)
    with pytest.raises(ValueError, match=r"Received: encoder_padding_mask.shape=\(2, 3\)"):
        decoder_only(x, encoder_padding_mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"built with cross-attention.*encoder_sequence=None"):
        encoder_decoder(x)


def test_bad_cache_arguments_raise():
    block = _block()
    x = rand(2, 1, 8)
    with pytest.raises(ValueError, match=r"`init_cache` needs a built block"):
        block.init_cache(2, 4)
    block(rand(2, 3, 8))
    cache = block.init_cache(2, 4)
    with pytest.raises(ValueError, match=r"Received: self_attention_cache_update_index=None"):
        block(x, self_attention_cache=cache)
    with pytest.raises(ValueError, match=r"Received: self_attention_cache=None"):
        block(x, self_attention_cache_update_index=0)
    with pytest.raises(ValueError, match=r"`cache` must be `\(key_cache, value_cache\)`"):
        block(x, self_attention_cache=cache[:1], self_attention_cache_update_index=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intermediate_dim": -1, "num_heads": 2}, r"Received: intermediate_dim=-1"),
        ({"intermediate_dim": 8, "num_heads": True}, r"Received: num_heads=True"),
        ({"intermediate_dim": 8, "num_heads": 2, "dropout": "0.1"}, r"Received: dropout='0.1'"),
        (
            {"intermediate_dim": 8, "num_heads": 2, "attention_dropout": 1.0},
            r"Received: attention_dropout=1.0",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerDecoderBlock(**kwargs)


def test_hidden_dim_not_divisible_by_num_heads_raises_without_key_dim():
    with pytest.raises(ValueError, match=r"Received: num_heads=3, hidden_dim=8"):
        TransformerDecoderBlock(intermediate_dim=8, num_heads=3)(rand(2, 4, 8))
    block = TransformerDecoderBlock(intermediate_dim=8, num_heads=3, key_dim=4)
    assert tuple(block(rand(2, 4, 8), rand(2, 5, 6)).shape) == (2, 4, 8)


# -- export (slow) ----------------------------------------------------------------------------

HIDDEN = 16


def _seq2seq_model():
    """2 post-LN encoder blocks + 2 pre-LN causal decoder blocks, padding masks as inputs."""
    source = keras.Input((None, HIDDEN), name="source")
    source_mask = keras.Input((None,), dtype="bool", name="source_padding_mask")
    target = keras.Input((None, HIDDEN), name="target")
    target_mask = keras.Input((None,), dtype="bool", name="target_padding_mask")
    memory = source
    for i in range(2):
        block = TransformerEncoderBlock(
            intermediate_dim=32, num_heads=4, bias_initializer="random_normal", name=f"encoder_{i}"
        )
        memory = block(memory, padding_mask=source_mask)
    x = target
    for i in range(2):
        block = TransformerDecoderBlock(
            intermediate_dim=32,
            num_heads=4,
            num_key_value_heads=2,
            normalize_first=True,
            bias_initializer="random_normal",
            name=f"decoder_{i}",
        )
        x = block(x, memory, decoder_padding_mask=target_mask, encoder_padding_mask=source_mask)
    inputs = {
        "source": source,
        "source_padding_mask": source_mask,
        "target": target,
        "target_padding_mask": target_mask,
    }
    return keras.Model(inputs, {"output": x})


@pytest.mark.slow
def test_seq2seq_model_converts_to_tflite_builtins(tmp_path):
    model = _seq2seq_model()
    flatbuffer = convert_builtins_only(model, tmp_path)
    for source_length, target_length in ((7, 5), (4, 9)):
        feed = {
            "source": rand(2, source_length, HIDDEN),
            "source_padding_mask": _lengths_mask([source_length, 3], source_length),
            "target": rand(2, target_length, HIDDEN),
            "target_padding_mask": _lengths_mask([target_length, target_length - 2], target_length),
        }
        expected = _np(model(feed)["output"])
        actual = run_tflite(flatbuffer, feed)["output"]
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_cached_decode_step_converts_to_tflite_builtins(tmp_path):
    """(token, encoder output, its mask, per-layer rank-4 caches, index) -> (output, caches)."""
    model = _seq2seq_model()
    decoders = [model.get_layer(f"decoder_{i}") for i in range(2)]
    source, source_mask, target = rand(2, 5, HIDDEN), _lengths_mask([5, 3], 5), rand(2, 6, HIDDEN)
    feed = {"source": source, "source_padding_mask": source_mask, "target": target}
    full = _np(model({**feed, "target_padding_mask": np.ones((2, 6), bool)})["output"])
    memory = source
    for i in range(2):
        memory = model.get_layer(f"encoder_{i}")(memory, padding_mask=source_mask)

    def step(
        token, memory, memory_mask, key_cache_0, value_cache_0, key_cache_1, value_cache_1, index
    ):
        caches = [(key_cache_0, value_cache_0), (key_cache_1, value_cache_1)]
        x, outputs = token, {}
        for i, (block, cache) in enumerate(zip(decoders, caches, strict=True)):
            x, (key_cache, value_cache) = block(
                x,
                memory,
                encoder_padding_mask=memory_mask,
                self_attention_cache=cache,
                self_attention_cache_update_index=index,
            )
            outputs[f"key_cache_{i}"], outputs[f"value_cache_{i}"] = key_cache, value_cache
        return {"output": x, **outputs}

    cache_spec = (None, None, 2, HIDDEN // 4)  # (batch, max_length, kv heads, key_dim)
    flatbuffer = convert_endpoint_builtins_only(
        model,
        step,
        [
            tf.TensorSpec((None, 1, HIDDEN), tf.float32, name="token"),
            tf.TensorSpec((None, None, HIDDEN), tf.float32, name="memory"),
            tf.TensorSpec((None, None), tf.bool, name="memory_mask"),
            *(
                tf.TensorSpec(cache_spec, tf.float32, name=f"{kind}_cache_{i}")
                for i in range(2)
                for kind in ("key", "value")
            ),
            tf.TensorSpec((), tf.int32, name="index"),
        ],
        tmp_path,
    )
    caches = {
        f"{kind}_cache_{i}": _np(c)
        for i, block in enumerate(decoders)
        for kind, c in zip(("key", "value"), block.init_cache(2, 6), strict=True)
    }
    for t in range(6):
        result = run_tflite(
            flatbuffer,
            {
                "token": target[:, t : t + 1],
                "memory": _np(memory),
                "memory_mask": source_mask,
                **caches,
                "index": np.int32(t),
            },
        )
        caches = {name: result[name] for name in caches}
        np.testing.assert_allclose(result["output"][:, 0], full[:, t], rtol=0, atol=1e-5)


def test_relative_position_bias_in_cached_decoding_equals_the_full_pass():
    """T5-style decoding: the bias rows of each step (query_offset) over the cache positions."""
    from keras_attention.layers import RelativePositionBias

    block = _block(normalize_first=True, chunk_size=None)
    relative = RelativePositionBias(num_heads=4, bidirectional=False)
    x, memory = rand(2, 7, 8), rand(2, 5, 8)
    full = block(x, memory, self_attention_bias=relative(x))
    without = block(x, memory)
    assert not np.allclose(_np(full), _np(without))
    cache = block.init_cache(2, 7)
    outputs = []
    for start, stop in [(0, 3)] + [(t, t + 1) for t in range(3, 7)]:
        bias = relative(x[:, start:stop], cache[0], query_offset=start)  # (1, 4, steps, 7)
        out, cache = block(
            x[:, start:stop],
            memory,
            self_attention_cache=cache,
            self_attention_cache_update_index=start,
            self_attention_bias=bias,
        )
        outputs.append(_np(out))
    np.testing.assert_allclose(np.concatenate(outputs, 1), _np(full), rtol=0, atol=1e-5)
