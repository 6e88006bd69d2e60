"""On-device decoding: LiteRT's generative signature names, prefill/decode parity, the loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.export import (
    TFLiteGenerator,
    convert_decoding_tflite,
    convert_tflite,
    decoding_signatures,
    tflite_ops,
)
from keras_attention.export.tflite import _interpreter
from keras_attention.models import pointer_network, seq2seq_translator, transformer_translator

SOURCE = np.array([[5, 6, 7, 8, 9, 0], [10, 11, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]], "int32")
TARGET_IN = np.array([[2, 12, 13, 14, 0], [2, 15, 16, 0, 0], [2, 17, 18, 19, 20]], "int32")


def _transformer():
    return transformer_translator(21, 25, sequence_length=8, num_layers=2, hidden_dim=8,
                                  num_heads=2, intermediate_dim=16)  # fmt: skip


def test_signatures_refuse_other_models():
    with pytest.raises(ValueError, match="must be an EncoderDecoderBackbone"):
        decoding_signatures(pointer_network(10, hidden_dim=8, num_heads=2))
    with pytest.raises(ValueError, match="Received: max_length=9, the model's sequence_length=8"):
        decoding_signatures(_transformer(), max_length=9)


@pytest.mark.slow
def test_transformer_signatures_use_litert_names_and_builtins_only():
    model = _transformer()
    flatbuffer = convert_decoding_tflite(model, max_length=6)
    assert "VAR_HANDLE" not in tflite_ops(flatbuffer)
    interpreter = _interpreter(flatbuffer)
    signatures = interpreter.get_signature_list()
    assert sorted(signatures) == ["decode", "encode", "prefill"]
    caches = sorted(f"kv_cache_{kind}_{i}" for i in range(2) for kind in "kv")
    cross = sorted(f"cross_{kind}_{i}" for i in range(2) for kind in "kv")
    assert signatures["encode"]["inputs"] == ["tokens"]
    assert sorted(signatures["encode"]["outputs"]) == sorted(
        ["encoder_padding_mask", *caches, *cross]
    )
    for name in ("prefill", "decode"):
        assert sorted(signatures[name]["inputs"]) == sorted(
            ["tokens", "input_pos", "encoder_padding_mask", *caches, *cross]
        )
        # Only what a step changes comes back: the logits and the self-attention caches.
        assert sorted(signatures[name]["outputs"]) == sorted(["logits", *caches])
    decode = interpreter.get_signature_runner("decode").get_input_details()
    assert list(decode["kv_cache_k_0"]["shape"]) == [1, 6, 2, 4]  # (batch, max_length, heads, dim)
    assert list(decode["tokens"]["shape_signature"]) == [-1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transformer", "seq2seq"])
def test_prefill_then_decode_reproduces_the_teacher_forced_logits(kind):
    model = _transformer() if kind == "transformer" else seq2seq_translator(21, 25, 6, units=8)
    expected = np.asarray(model({"source": SOURCE, "target_in": TARGET_IN}))
    valid = TARGET_IN != 0
    generator = TFLiteGenerator(convert_decoding_tflite(model, max_length=8))
    # A recurrent encoder converts with a fixed batch of one: the generator encodes row by row.
    assert generator.encode_batch_size == (None if kind == "transformer" else 1)
    assert generator.cache_length == (8 if kind == "transformer" else None)
    state = generator.encode(SOURCE)
    runner = _interpreter(generator._flatbuffer).get_signature_runner("prefill")
    feed = {name: state[name] for name in generator._state_inputs}
    prefill = runner(tokens=TARGET_IN[:, :3], input_pos=np.arange(3, dtype="int32"), **feed)
    np.testing.assert_allclose(prefill["logits"][valid[:, :3]], expected[:, :3][valid[:, :3]],
                               rtol=0, atol=1e-5)  # fmt: skip
    state.update({name: value for name, value in prefill.items() if name != "logits"})
    for t in (3, 4):
        logits, state = generator.step(TARGET_IN[:, t], state, t)
        np.testing.assert_allclose(logits[valid[:, t]], expected[:, t][valid[:, t]], rtol=0,
                                   atol=1e-5)  # fmt: skip


@pytest.mark.slow
def test_the_generator_checks_its_arguments():
    generator = TFLiteGenerator(convert_decoding_tflite(_transformer(), max_length=4))
    with pytest.raises(ValueError, match="may not exceed the file's KV cache.*max_length=5"):
        generator.generate(SOURCE, max_length=5)
    with pytest.raises(ValueError, match=r"Received: source_ids.shape=\(6,\)"):
        generator.encode(SOURCE[0])
    tokens, lengths = generator.generate(SOURCE)  # the cache size by default
    assert tokens.shape == (3, 4) and np.all((lengths >= 1) & (lengths <= 4))
    with pytest.raises(ValueError, match="no signature 'decode'"):
        TFLiteGenerator(_encoder_only_flatbuffer())


def _encoder_only_flatbuffer():
    """A `.tflite` file with an `encode` signature and nothing to decode with."""
    inputs = keras.Input((None,), dtype="int32", name="tokens")
    model = keras.Model(inputs, {"embedded": keras.layers.Embedding(10, 4)(inputs)})
    spec = tf.TensorSpec((None, None), tf.int32, name="tokens")
    return convert_tflite(model, signatures={"encode": (lambda tokens: model(tokens), [spec])})


@pytest.mark.slow
def test_a_multi30k_shaped_transformer_generates_the_same_tokens_on_device():
    """The shape of the README's Multi30K Transformer: 3+3 pre-LN blocks, width 256, 64 positions."""
    from keras_attention.generation import greedy_search

    keras.utils.set_random_seed(0)
    model = transformer_translator(
        2900, 3500, sequence_length=65, num_layers=3, hidden_dim=256, num_heads=4,
        intermediate_dim=1024, normalize_first=True,
    )  # fmt: skip
    generator = TFLiteGenerator(convert_decoding_tflite(model, max_length=64))
    rng = np.random.default_rng(0)
    source = rng.integers(5, 2900, (6, 20)).astype("int32")
    source[np.arange(20)[None, :] >= rng.integers(4, 21, (6, 1))] = 0
    tokens, lengths = generator.generate(source, max_length=24)
    never = tf.constant(np.isin(np.arange(3500), generator.never_generated))

    def step_fn(token_ids, state, step):
        logits, state = model.call_with_cache(token_ids, state, step)
        return tf.where(never, logits.dtype.min, logits), state

    expected = greedy_search(step_fn, model.encode(source, max_length=64), tf.fill([6], 2), 3, 24)
    np.testing.assert_array_equal(tokens, expected.tokens.numpy())
    np.testing.assert_array_equal(lengths, expected.lengths.numpy())
