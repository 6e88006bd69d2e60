"""On-device causal LM: LiteRT's prefill/decode layout, builtins only, the tokens of `generate`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.export.litert_causal_lm import (
    TFLiteCausalLM,
    causal_lm_signatures,
    convert_causal_lm_tflite,
)
from keras_attention.export.tflite import _interpreter, convert_tflite, tflite_ops
from keras_attention.generation.generate import generate
from keras_attention.models import gpt_backbone, gpt_causal_lm, transformer_translator

VOCAB = 40
CACHE = 12  # the KV cache of the converted files (the model has 16 learned positions)
KINDS = {
    "learned": {},
    "rotary_gqa": {"position_embedding": "rotary", "num_key_value_heads": 1},
}
# Five ragged prompts, one of a single token (the start token `2`); `0` pads.
PROMPTS = np.array(
    [[2, 7, 9, 5, 11, 3], [2, 5, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0], [2, 30, 31, 8, 0, 0],
     [2, 17, 0, 0, 0, 0]],
    "int32",
)  # fmt: skip


def _model(kind, **sizes):
    keras.utils.set_random_seed(0)
    vocabulary_size = sizes.pop("vocabulary_size", VOCAB)
    config = {"num_layers": 2, "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32,
              "max_sequence_length": 16, "dropout": 0.0, **KINDS[kind], **sizes}  # fmt: skip
    return gpt_causal_lm(vocabulary_size, **config)


@pytest.fixture(scope="module", params=sorted(KINDS))
def converted(request):
    """`(kind, model, flatbuffer)`: one float32 conversion per kind, shared by the module."""
    model = _model(request.param)
    return request.param, model, convert_causal_lm_tflite(model, max_length=CACHE)


# -- arguments and signatures (no conversion) ----------------------------------------------------


def test_signatures_refuse_other_models_and_long_caches():
    with pytest.raises(ValueError, match=r"must be a causal LM.*Received: model='gpt_backbone'"):
        causal_lm_signatures(gpt_backbone(VOCAB, num_layers=1, hidden_dim=8, num_heads=2,
                                          intermediate_dim=8, max_sequence_length=8))  # fmt: skip
    translator = transformer_translator(20, 20, sequence_length=8, num_layers=1, hidden_dim=8,
                                        num_heads=2, intermediate_dim=8)  # fmt: skip
    with pytest.raises(ValueError, match="must be a causal LM"):
        convert_causal_lm_tflite(translator)
    with pytest.raises(ValueError, match="max_sequence_length.*Received: max_length=17"):
        causal_lm_signatures(_model("learned"), max_length=17)
    with pytest.raises(ValueError, match="Received: max_length=0"):
        causal_lm_signatures(_model("rotary_gqa"), max_length=0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_signature_specs_are_litert_generative_ones(kind):
    model = _model(kind)
    signatures = causal_lm_signatures(model)  # the model's 16 positions by default
    assert sorted(signatures) == ["decode", "prefill"]
    heads = 1 if kind == "rotary_gqa" else 2
    caches = [f"kv_cache_{part}_{i}" for i in range(2) for part in "kv"]
    for name, length in (("prefill", None), ("decode", 1)):
        fn, specs = signatures[name]
        assert [spec.name for spec in specs] == ["tokens", "input_pos", *caches]
        assert specs[0].shape.as_list() == [1, length] and specs[0].dtype == tf.int32
        assert specs[1].shape.as_list() == [length] and specs[1].dtype == tf.int32
        assert all(spec.shape.as_list() == [1, 16, heads, 8] for spec in specs[2:])
    # The endpoint is the cached forward pass: a prompt at position 0 gives the model's logits.
    fn, specs = signatures["prefill"]
    cache = [tf.zeros(spec.shape, spec.dtype) for spec in specs[2:]]
    outputs = fn(tf.constant(PROMPTS[:1]), tf.range(6), *cache)
    assert sorted(outputs) == sorted(["logits", *caches])
    expected = model({"token_ids": PROMPTS[:1], "padding_mask": np.ones_like(PROMPTS[:1])})
    np.testing.assert_allclose(outputs["logits"], expected, rtol=0, atol=1e-5)


# -- the converted file --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_file_has_litert_signatures_and_builtin_ops_only(converted):
    kind, model, flatbuffer = converted
    ops = tflite_ops(flatbuffer)
    assert ops and all(op.isupper() for op in ops), ops  # builtins: no Flex, no custom ops
    assert not {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"} & set(ops)
    signatures = _interpreter(flatbuffer).get_signature_list()
    caches = sorted(f"kv_cache_{part}_{i}" for i in range(2) for part in "kv")
    assert sorted(signatures) == ["decode", "prefill"]
    for name in ("prefill", "decode"):
        assert sorted(signatures[name]["inputs"]) == sorted(["tokens", "input_pos", *caches])
        assert sorted(signatures[name]["outputs"]) == sorted(["logits", *caches])
    lm = TFLiteCausalLM(flatbuffer)
    assert lm.signatures == ("decode", "prefill")
    assert (lm.cache_length, lm.vocabulary_size) == (CACHE, VOCAB)
    heads = model.backbone.cache_heads
    assert all(shape == (1, CACHE, heads, 8) for shape, _ in lm._caches.values())
    for name, length in (("prefill", -1), ("decode", 1)):
        inputs = _interpreter(flatbuffer).get_signature_runner(name).get_input_details()
        assert list(inputs["tokens"]["shape_signature"]) == [1, length]
        assert list(inputs["input_pos"]["shape_signature"]) == [length]


@pytest.mark.slow
@pytest.mark.parametrize("stop", [False, True])
def test_litert_greedy_tokens_are_those_of_generate(converted, stop):
    _, model, flatbuffer = converted
    lm = TFLiteCausalLM(flatbuffer)
    mask = PROMPTS != 0
    expected = generate(model, PROMPTS, mask, max_length=CACHE, jit_compile=False).numpy()
    stop_token_ids = ()
    if stop:  # a token the rows generate, so that some of them end early
        stop_token_ids = (int(expected[2, 3]),)
        expected = generate(model, PROMPTS, mask, max_length=CACHE, stop_token_ids=stop_token_ids,
                            jit_compile=False).numpy()  # fmt: skip
        assert (expected[:, -1] == 0).any()
    tokens = lm.generate(PROMPTS, mask, max_length=CACHE, stop_token_ids=stop_token_ids)
    assert tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, expected)
    shorter = lm.generate(PROMPTS, max_length=8, stop_token_ids=stop_token_ids)  # mask: ids != 0
    expected = generate(model, PROMPTS, mask, max_length=8, stop_token_ids=stop_token_ids,
                        jit_compile=False).numpy()  # fmt: skip
    np.testing.assert_array_equal(shorter, expected)


@pytest.mark.slow
def test_prefill_and_decode_logits_match_the_model(converted):
    _, model, flatbuffer = converted
    lm = TFLiteCausalLM(flatbuffer)
    token_ids = np.array([[2, 7, 9, 5, 11, 3, 8, 1], [2, 30, 31, 8, 4, 4, 6, 9]], "int32")
    expected = np.asarray(model({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}))
    np.testing.assert_allclose(lm.logits(token_ids), expected, rtol=0, atol=1e-4)
    logits, cache = lm.run(token_ids[0, :5], 0, lm.empty_cache())  # prefill
    for position in range(5, 8):  # then one decode step per token
        step, cache = lm.run(token_ids[0, position : position + 1], position, cache)
        np.testing.assert_allclose(step[0], expected[0, position], rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dynamic_int8_quantization_converts_smaller_and_runs(kind):
    # Wide enough for int8 weights to outweigh the graph: the converter keeps tensors of fewer
    # than 1024 elements in float32 (all of them at width 16).
    model = _model(kind, vocabulary_size=64, hidden_dim=64, intermediate_dim=256)
    float_size = len(convert_causal_lm_tflite(model, max_length=CACHE))
    flatbuffer = convert_causal_lm_tflite(model, max_length=CACHE, quantization="dynamic")
    assert len(flatbuffer) <= 0.5 * float_size, (len(flatbuffer), float_size)  # about 42%
    assert all(op.isupper() for op in tflite_ops(flatbuffer))
    tensors = _interpreter(flatbuffer).get_tensor_details()
    assert sum(t["dtype"] == np.int8 and len(t["shape"]) == 2 for t in tensors) >= 12  # 6 a block
    tokens = TFLiteCausalLM(flatbuffer).generate(PROMPTS, max_length=CACHE, stop_token_ids=3)
    assert tokens.shape == (5, CACHE)
    np.testing.assert_array_equal(tokens[:, :6][PROMPTS != 0], PROMPTS[PROMPTS != 0])
    assert ((tokens >= 0) & (tokens < 64)).all()


@pytest.mark.slow
def test_the_host_loop_checks_its_arguments(converted, tmp_path):
    _, _, flatbuffer = converted
    path = tmp_path / "lm.tflite"
    path.write_bytes(flatbuffer)
    lm = TFLiteCausalLM(str(path))  # a path works too
    too_long = np.arange(2, 2 + CACHE + 1, dtype="int32")[None]
    with pytest.raises(ValueError, match=r"longer than the file's KV cache \(12 positions\)"):
        lm.generate(too_long)
    with pytest.raises(ValueError, match=r"longer than the file's KV cache.*shape=\(1, 13\)"):
        lm.logits(too_long)
    with pytest.raises(ValueError, match=r"longer than `max_length` \(4 positions\)"):
        lm.generate(PROMPTS, max_length=4)
    with pytest.raises(ValueError, match=r"may not exceed the file's KV cache.*max_length=13"):
        lm.generate(PROMPTS, max_length=CACHE + 1)
    with pytest.raises(ValueError, match=r"left-aligned.*Received: padding_mask\[0\]=\[0, 1, 1\]"):
        lm.generate(np.array([[0, 2, 5]]))
    with pytest.raises(ValueError, match=r"at least one token.*padding_mask\[1\]=\[0, 0\]"):
        lm.generate(np.array([[2, 5], [0, 0]]))
    with pytest.raises(ValueError, match="shape of `token_ids`"):
        lm.generate(PROMPTS, PROMPTS[:, :3] != 0)
    with pytest.raises(ValueError, match=r"integer ids.*Received: token_ids.shape=\(6,\)"):
        lm.generate(PROMPTS[0])
    # Ids outside the vocabulary: refused, naming the argument (LiteRT would gather out of
    # range: garbage for a negative id, a raw error past the end).
    for prompt in ([[2, -3, 9]], [[2, VOCAB, 9]]):
        with pytest.raises(ValueError, match=r"generate: `token_ids` must be tokens of the "
                                             r"vocabulary of size 40"):  # fmt: skip
            lm.generate(np.array(prompt), np.ones((1, 3)), max_length=6)
    with pytest.raises(ValueError, match=r"`suppress_token_ids` must be tokens.*holds 45"):
        lm.generate(PROMPTS, max_length=10, suppress_token_ids=[45])
    with pytest.raises(ValueError, match=r"`stop_token_ids` must be tokens.*holds 40"):
        lm.generate(PROMPTS, max_length=10, stop_token_ids=40)
    with pytest.raises(ValueError, match=r"logits: `token_ids` must be tokens"):
        lm.logits(np.array([[2, -1]]))
    # None means none, as in `generate`.
    np.testing.assert_array_equal(
        lm.generate(PROMPTS, max_length=8, stop_token_ids=None, suppress_token_ids=None),
        lm.generate(PROMPTS, max_length=8),
    )
    # `run` keeps its positions inside the cache (LiteRT would clamp them silently).
    cache = lm.empty_cache()
    for start, tokens in ((CACHE, [5]), (-1, [5]), (CACHE - 1, [5, 6])):
        with pytest.raises(ValueError, match=r"run: .*(start|KV cache)"):
            lm.run(tokens, start, cache)
    with pytest.raises(ValueError, match=r"run: `token_ids` must be integer ids of shape"):
        lm.run([], 0, cache)
    assert lm.run([5], CACHE - 1, cache)[0].shape == (1, VOCAB)
    with pytest.raises(ValueError, match="Received: pad_id=-1"):
        TFLiteCausalLM(flatbuffer, pad_id=-1)
    with pytest.raises(ValueError, match="no signature 'prefill'"):
        TFLiteCausalLM(_other_flatbuffer())


def _other_flatbuffer():
    """A `.tflite` file with one `decode` signature and no `prefill`."""
    inputs = keras.Input((None,), dtype="int32", name="tokens")
    model = keras.Model(inputs, {"logits": keras.layers.Embedding(10, 4)(inputs)})
    spec = tf.TensorSpec((1, None), tf.int32, name="tokens")
    return convert_tflite(model, signatures={"decode": (lambda tokens: model(tokens), [spec])})
