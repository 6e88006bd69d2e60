"""TFLite conversion and LiteRT verification: keras_attention.export.tflite."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.export.tflite import (
    convert_tflite,
    run_tflite,
    tflite_ops,
    verify_tflite,
)
from keras_attention.layers import (
    AdditiveAttention,
    MultiHeadAttention,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

VOCAB = 50


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _ids(batch, length, seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (batch, length)).astype("int32")


def _tiny_model():
    inputs = keras.Input((None, 3), name="x")
    return keras.Model(inputs, {"y": keras.layers.Dense(2, name="dense")(inputs)})


def _causal_lm(hidden=16, heads=4):
    """Token ids -> TokenAndPositionEmbedding -> decoder-only block -> causal MHA -> logits."""
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = TokenAndPositionEmbedding(VOCAB, 32, hidden, name="embedding")(ids)
    x = TransformerDecoderBlock(2 * hidden, heads, name="decoder_0")(x)
    x = MultiHeadAttention(heads, hidden // heads, name="causal_attention")(
        x, x, use_causal_mask=True
    )
    return keras.Model(ids, {"logits": keras.layers.Dense(VOCAB, name="head")(x)})


def _encoder(hidden, intermediate, heads, blocks=2):
    source = keras.Input((None, hidden), name="source")
    x = source
    for i in range(blocks):
        x = TransformerEncoderBlock(intermediate, heads, name=f"encoder_{i}")(x)
    return keras.Model(source, {"output": x})


# -- arguments (no conversion) ----------------------------------------------------------------


def test_bad_arguments_raise_naming_them(tmp_path):
    model = _tiny_model()
    with pytest.raises(ValueError, match="quantization.*Received: quantization='int4'"):
        convert_tflite(model, quantization="int4")
    with pytest.raises(ValueError, match="Received: representative_data=None"):
        convert_tflite(model, quantization="int8")
    with pytest.raises(ValueError, match="`representative_data` is only used"):
        convert_tflite(model, representative_data=[{"x": np.ones((1, 2, 3))}])
    with pytest.raises(ValueError, match="Received: obj=42"):
        convert_tflite(42)
    with pytest.raises(ValueError, match="saved_model.pb.*Received: obj="):
        convert_tflite(str(tmp_path))
    with pytest.raises(ValueError, match=r"Received: signatures\[.encode.\]"):
        convert_tflite(model, signatures={"encode": "not a pair"})
    with pytest.raises(ValueError, match="needs `signatures`"):
        convert_tflite(keras.layers.Dense(2))
    existing = tmp_path / "model.tflite"
    existing.write_bytes(b"first")
    with pytest.raises(FileExistsError, match="overwrite=True.*Received: output_path="):
        convert_tflite(model, output_path=str(existing))
    assert existing.read_bytes() == b"first"
    with pytest.raises(ValueError, match="Received: flatbuffer="):
        run_tflite("no/such/file.tflite", {})
    with pytest.raises(ValueError, match="Received: examples="):
        verify_tflite(b"", [])


# -- conversions (slow) -----------------------------------------------------------------------


@pytest.mark.slow
def test_float32_causal_lm_matches_keras_and_writes_output_path(tmp_path):
    """Embedding + decoder block + causal MHA, dynamic batch and length, to 1e-5."""
    model = _causal_lm()
    path = tmp_path / "lm.tflite"
    flatbuffer = convert_tflite(model, output_path=str(path))
    assert path.read_bytes() == flatbuffer
    again = convert_tflite(model, output_path=str(path), overwrite=True)
    assert path.read_bytes() == again
    examples = [{"ids": _ids(2, 7)}, {"ids": _ids(3, 4, seed=1)}]
    report = verify_tflite(str(path), examples, model, atol=1e-5, repeats=5)
    assert report.ok, str(report)
    assert report.max_abs_diff["logits"] <= 1e-5
    assert "FULLY_CONNECTED" in report.ops and "SOFTMAX" in report.ops
    assert report.size_bytes == len(again) and report.latency_ms > 0
    assert "max abs diff logits" in str(report) and "OK" in str(report)


@pytest.mark.slow
def test_score_attention_with_padding_mask_matches_keras():
    query = keras.Input((None, 8), name="query")
    value = keras.Input((None, 8), name="value")
    value_mask = keras.Input((None,), dtype="bool", name="value_mask")
    output, scores = AdditiveAttention(units=16, name="additive")(
        query, value=value, value_mask=value_mask, return_attention_scores=True
    )
    model = keras.Model(
        {"query": query, "value": value, "value_mask": value_mask},
        {"output": output, "scores": scores},
    )
    flatbuffer = convert_tflite(model)
    mask = np.arange(6)[None, :] < np.array([[6], [2]])
    example = {"query": _rand(2, 3, 8), "value": _rand(2, 6, 8, seed=1), "value_mask": mask}
    report = verify_tflite(flatbuffer, example, model, repeats=3)
    assert report.ok, str(report)
    np.testing.assert_array_equal(run_tflite(flatbuffer, example)["scores"][1][:, 2:], 0.0)


@pytest.mark.slow
def test_quantization_tolerances_and_sizes():
    """A 2-block Transformer (hidden 256, intermediate 1024, >= 1M parameters).

    float32 to 1e-5, float16 to 1e-2, dynamic-range int8 to 0.1 and full int8 to 0.4
    (the tolerances documented in `convert_tflite`; outputs are LayerNorm-ed, of unit
    scale); the int8 files are at most 30% of the float32 size.
    """
    model = _encoder(hidden=256, intermediate=1024, heads=4)
    assert model.count_params() >= 1_000_000, model.count_params()
    examples = [{"source": _rand(2, 12, 256, seed=s)} for s in range(2)]
    calibration = [{"source": _rand(1, 12, 256, seed=10 + s)} for s in range(8)]
    flatbuffers, reports = {}, {}
    for quantization, atol in ((None, 1e-5), ("float16", 1e-2), ("dynamic", 0.1), ("int8", 0.4)):
        flatbuffers[quantization] = convert_tflite(
            model,
            quantization=quantization,
            representative_data=calibration if quantization == "int8" else None,
        )
        report = verify_tflite(flatbuffers[quantization], examples, model, atol=atol, repeats=5)
        assert report.ok, str(report)
        reports[quantization] = report
    float_size = reports[None].size_bytes
    assert reports["float16"].size_bytes <= 0.55 * float_size
    assert reports["dynamic"].size_bytes <= 0.30 * float_size
    assert reports["int8"].size_bytes <= 0.30 * float_size
    assert "DEQUANTIZE" in reports["float16"].ops and "QUANTIZE" in reports["int8"].ops
    # float16 is not float32-exact: `ok` judges by `atol`.
    strict = verify_tflite(flatbuffers["float16"], examples[:1], model, atol=1e-6, repeats=1)
    assert not strict.ok and "MISMATCH" in str(strict)


@pytest.mark.slow
def test_encode_and_decode_step_signatures_in_one_flatbuffer():
    """`encode` (source -> memory) and `decode_step` (token, memory, rank-4 caches, index)."""
    hidden, heads, kv_heads, max_length = 16, 4, 2, 6
    source = keras.Input((None, hidden), name="source")
    source_mask = keras.Input((None,), dtype="bool", name="source_padding_mask")
    target = keras.Input((None, hidden), name="target")
    memory = TransformerEncoderBlock(32, heads, name="encoder_0")(source, padding_mask=source_mask)
    x = target
    decoders = []
    for i in range(2):
        block = TransformerDecoderBlock(
            32, heads, num_key_value_heads=kv_heads, normalize_first=True, name=f"decoder_{i}"
        )
        decoders.append(block)
        x = block(x, memory, encoder_padding_mask=source_mask)
    model = keras.Model(
        {"source": source, "source_padding_mask": source_mask, "target": target}, {"output": x}
    )
    encoder = model.get_layer("encoder_0")

    def encode(source, source_padding_mask):
        return {"memory": encoder(source, padding_mask=source_padding_mask)}

    def decode_step(token, memory, memory_mask, key_0, value_0, key_1, value_1, index):
        x, outputs = token, {}
        for i, (block, cache) in enumerate(
            zip(decoders, ((key_0, value_0), (key_1, value_1)), strict=True)
        ):
            x, (outputs[f"key_{i}"], outputs[f"value_{i}"]) = block(
                x,
                memory,
                encoder_padding_mask=memory_mask,
                self_attention_cache=cache,
                self_attention_cache_update_index=index,
            )
        return {"output": x, **outputs}

    cache = tf.TensorSpec((None, None, kv_heads, hidden // heads), tf.float32)
    flatbuffer = convert_tflite(
        model,
        signatures={
            "encode": (
                encode,
                [
                    tf.TensorSpec((None, None, hidden), tf.float32, name="source"),
                    tf.TensorSpec((None, None), tf.bool, name="source_padding_mask"),
                ],
            ),
            "decode_step": (
                decode_step,
                [
                    tf.TensorSpec((None, 1, hidden), tf.float32, name="token"),
                    tf.TensorSpec((None, None, hidden), tf.float32, name="memory"),
                    tf.TensorSpec((None, None), tf.bool, name="memory_mask"),
                    *(
                        tf.TensorSpec(cache.shape, cache.dtype, name=f"{kind}_{i}")
                        for i in range(2)
                        for kind in ("key", "value")
                    ),
                    tf.TensorSpec((), tf.int32, name="index"),
                ],
            ),
        },
    )
    assert "VAR_HANDLE" not in tflite_ops(flatbuffer)
    src, mask = _rand(2, 5, hidden), np.arange(5)[None, :] < np.array([[5], [3]])
    tgt = _rand(2, max_length, hidden, seed=1)
    feed = {"source": src, "source_padding_mask": mask}
    report = verify_tflite(
        flatbuffer, feed, lambda feed: encode(**feed), signature="encode", repeats=3
    )
    assert report.ok, str(report)
    memory = run_tflite(flatbuffer, feed, signature="encode")["memory"]
    full = np.asarray(model({**feed, "target": tgt})["output"])
    caches = {
        f"{kind}_{i}": np.asarray(c)
        for i, block in enumerate(decoders)
        for kind, c in zip(("key", "value"), block.init_cache(2, max_length), strict=True)
    }
    for t in range(max_length):
        step_feed = {
            "token": tgt[:, t : t + 1],
            "memory": memory,
            "memory_mask": mask,
            **caches,
            "index": np.int32(t),
        }
        result = run_tflite(flatbuffer, step_feed, signature="decode_step")
        caches = {name: result[name] for name in caches}
        np.testing.assert_allclose(result["output"][:, 0], full[:, t], rtol=0, atol=1e-5)
    step_report = verify_tflite(
        flatbuffer,
        step_feed,
        lambda feed: decode_step(**{k: tf.constant(v) for k, v in feed.items()}),
        signature="decode_step",
        repeats=3,
    )
    assert step_report.ok, str(step_report)


@pytest.mark.slow
def test_keras_causal_attention_fails_naming_the_flex_op_and_the_layer():
    inputs = keras.Input((None, 16), name="x")
    outputs = keras.layers.MultiHeadAttention(2, 8, name="keras_causal_attention")(
        inputs, inputs, use_causal_mask=True
    )
    with pytest.raises(ValueError) as info:
        convert_tflite(keras.Model(inputs, outputs))
    message = str(info.value)
    assert "StridedSlice" in message and "Flex" in message
    assert "layer 'keras_causal_attention'" in message
    assert "keras_attention.layers.MultiHeadAttention" in message  # the suggested fix
    assert "Traceback" not in message and "func.func" not in message


@pytest.mark.slow
def test_tf_module_saved_model_with_unfrozen_variables_is_refused(tmp_path):
    layer = MultiHeadAttention(2, 4)
    layer(_rand(1, 3, 8), _rand(1, 3, 8))

    class Wrapper(tf.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        @tf.function(input_signature=[tf.TensorSpec((None, None, 8), tf.float32, name="x")])
        def serve(self, x):
            return {"output": self.layer(x, x)}

    wrapper = Wrapper()
    path = str(tmp_path / "module")
    tf.saved_model.save(wrapper, path, signatures={"serving_default": wrapper.serve})
    with pytest.raises(ValueError, match="VAR_HANDLE.*not frozen.*Received: obj="):
        convert_tflite(path)


@pytest.mark.slow
def test_tensorflow_text_tokenizers_run_through_the_registrar(tmp_path):
    tf_text = pytest.importorskip("tensorflow_text")
    vocab = ["[UNK]", "the", "cat", "sat", "on", "mat", "##s", "dog"]

    class Tokenizer(tf.Module):
        def __init__(self):
            super().__init__()
            self.wordpiece = tf_text.FastWordpieceTokenizer(vocab, token_out_type=tf.int32)
            self.whitespace = tf_text.WhitespaceTokenizer()

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name="text")])
        def serve(self, text):
            ids = self.wordpiece.tokenize(text)
            return {"ids": ids.to_tensor(), "words": self.whitespace.tokenize(text).row_lengths()}

    tokenizer = Tokenizer()
    path = str(tmp_path / "tokenizer")
    tf.saved_model.save(tokenizer, path, signatures={"serving_default": tokenizer.serve})
    flatbuffer = convert_tflite(path, signatures=["serving_default"])
    assert "FastWordpieceTokenizeWithOffsets" in tflite_ops(flatbuffer)
    text = np.array(["the cats sat", "dog on the mat mat"])
    report = verify_tflite(
        flatbuffer, {"text": text}, lambda feed: tokenizer.serve(tf.constant(feed["text"]))
    )
    assert report.ok, str(report)
    np.testing.assert_array_equal(
        run_tflite(flatbuffer, {"text": text})["ids"], [[1, 2, 6, 3, 0], [7, 4, 1, 5, 5]]
    )
