import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.models import (
    GPTBackbone,
    GPTCausalLM,
    convert_keras_hub,
    gpt_backbone,
    gpt_causal_lm,
)
from tests.model_contract import (
    ModelSpec,
    check_config_round_trip,
    check_keras_save_load,
)

VOCABULARY_SIZE = 40
TINY = {
    "num_layers": 2,
    "num_heads": 4,
    "hidden_dim": 32,
    "intermediate_dim": 64,
    "max_sequence_length": 32,
}
SMALL = {**TINY, "hidden_dim": 16, "intermediate_dim": 32, "max_sequence_length": 12, "dropout": 0}
ROTARY_GQA = {**SMALL, "position_embedding": "rotary", "num_key_value_heads": 2}
LENGTH = 10
VALID = np.array([10, 6, 2])  # real tokens per row; the others are padding


def make_inputs(length=LENGTH, valid=VALID, seed=0):
    rng = np.random.default_rng(seed)
    padding_mask = np.arange(length)[None] < np.asarray(valid)[:, None]
    token_ids = np.where(padding_mask, rng.integers(1, VOCABULARY_SIZE, (len(valid), length)), 0)
    return {"token_ids": token_ids.astype("int32"), "padding_mask": padding_mask.astype("int32")}


INPUTS = make_inputs()
UNPADDED = INPUTS["padding_mask"].astype(bool)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _seeded(build):
    def make():
        keras.utils.set_random_seed(0)
        return build()

    return make


# -- the model contract ---------------------------------------------------------------------------

SPECS = [
    ModelSpec("gpt_causal_lm", _seeded(lambda: gpt_causal_lm(VOCABULARY_SIZE, **SMALL)), INPUTS),
    ModelSpec(
        "gpt_backbone_rotary_gqa",
        _seeded(lambda: gpt_backbone(VOCABULARY_SIZE, **ROTARY_GQA)),
        INPUTS,
    ),
]


@pytest.mark.parametrize("check", [check_config_round_trip, check_keras_save_load])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)


def test_config_is_every_constructor_argument():
    arguments = {
        "vocabulary_size": VOCABULARY_SIZE,
        **SMALL,
        "dropout": 0.2,
        "num_key_value_heads": 2,
        "position_embedding": "rotary",
        "rotary_max_wavelength": 500.0,
        "layer_norm_epsilon": 1e-6,
    }
    model = GPTBackbone(**arguments)
    config = model.get_config()
    assert {k: config[k] for k in arguments} == arguments
    json.dumps(config)
    assert model.position_embedding_type == "rotary"
    assert all(b.normalize_first for b in model.decoder_blocks)
    lm = GPTCausalLM(model)
    assert lm.get_config()["backbone"]["config"]["rotary_max_wavelength"] == 500.0
    assert (lm.vocabulary_size, lm.max_sequence_length, lm.num_layers) == (VOCABULARY_SIZE, 12, 2)


# -- parity with keras_hub ------------------------------------------------------------------------


def _keras_hub_backbone():
    return keras_hub.models.GPT2Backbone(vocabulary_size=VOCABULARY_SIZE, **TINY)


def _randomize(model, seed=0):
    """Random values for every weight (biases and layer norms too), so that no swap goes unseen."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = 0.1 * rng.standard_normal(weight.shape) + ("gamma" in weight.path)
        weight.assign(value.astype("float32"))


def _assert_close_unpadded(actual, expected, atol=1e-4):
    actual, expected = _np(actual), _np(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual[UNPADDED], expected[UNPADDED], rtol=0, atol=atol)


def test_causal_lm_matches_keras_hub():
    theirs = keras_hub.models.GPT2CausalLM(backbone=_keras_hub_backbone(), preprocessor=None)
    _randomize(theirs)
    ours = convert_keras_hub(theirs)
    assert type(ours) is GPTCausalLM and type(ours.backbone) is GPTBackbone
    assert {k: getattr(ours.backbone, k) for k in TINY} == TINY
    assert ours.backbone.position_embedding_type == "learned"
    assert ours.backbone.dropout == theirs.backbone.dropout
    expected = _np(theirs(INPUTS))
    logits = ours(INPUTS)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    _assert_close_unpadded(logits, expected)
    assert np.abs(expected[UNPADDED]).max() > 0.5  # the weights are not near zero
    # The check can fail: a fresh model with other weights is far off.
    other = _np(gpt_causal_lm(VOCABULARY_SIZE, **TINY)(INPUTS))
    assert np.abs(other[UNPADDED] - expected[UNPADDED]).max() > 1e-2
    # The cached decode step of the converted model gives keras_hub's logits too.
    cache = ours.init_cache(3, LENGTH)
    step_logits, _ = ours.call_with_cache(INPUTS["token_ids"], cache, 0)
    _assert_close_unpadded(step_logits, expected)


def test_backbone_matches_keras_hub():
    theirs = _keras_hub_backbone()
    _randomize(theirs, seed=1)
    ours = convert_keras_hub(theirs)
    assert type(ours) is GPTBackbone
    _assert_close_unpadded(ours(INPUTS), theirs(INPUTS))
    np.testing.assert_array_equal(_np(ours(INPUTS))[~UNPADDED], 0.0)  # padded rows: zeros


def test_converts_local_preset_directories(tmp_path):
    backbone = _keras_hub_backbone()
    _randomize(backbone, seed=2)
    backbone.save_to_preset(str(tmp_path / "backbone"))
    converted = convert_keras_hub(tmp_path / "backbone")  # a path object works too
    assert type(converted) is GPTBackbone
    _assert_close_unpadded(converted(INPUTS), backbone(INPUTS))
    # A task preset without a preprocessor (no tokenizer saved) loads as the causal LM.
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    causal_lm.save_to_preset(str(tmp_path / "causal_lm"))
    converted = convert_keras_hub(str(tmp_path / "causal_lm"))
    assert type(converted) is GPTCausalLM
    _assert_close_unpadded(converted(INPUTS), causal_lm(INPUTS))


def test_convert_refuses_unsupported_models(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported model type .*GPTBackbone\. Supported"):
        convert_keras_hub(gpt_backbone(VOCABULARY_SIZE, **SMALL))  # ours is not keras_hub's
    other = keras_hub.models.OPTBackbone(
        vocabulary_size=20,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=8,
    )
    with pytest.raises(
        ValueError, match=r"unsupported model type keras_hub\.\S*OPTBackbone.*GPT2CausalLM"
    ):
        convert_keras_hub(other)
    (tmp_path / "config.json").write_text(json.dumps({"registered_name": "keras_hub>OPTBackbone"}))
    with pytest.raises(ValueError, match=r"unsupported model type 'OPTBackbone' in the preset"):
        convert_keras_hub(tmp_path)


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        (
            "vocabulary_size",
            VOCABULARY_SIZE + 1,
            r"the shape of the weight token_embedding does not match: keras_hub "
            r"'.*' has \(40, 32\), ours '.*' has \(41, 32\)",
        ),
        (
            "intermediate_dim",
            48,
            r"the shape of the weight transformer_layers\[0\] .*kernel does not match",
        ),
        ("num_layers", 1, r"2 transformer layers for 1 decoder blocks"),
    ],
)
def test_convert_names_mismatched_shapes(attribute, value, message):
    theirs = _keras_hub_backbone()
    setattr(theirs, attribute, value)  # a config that does not describe the weights
    with pytest.raises(ValueError, match=message):
        convert_keras_hub(theirs)


# -- cached decoding ------------------------------------------------------------------------------

MODELS = {
    "learned": lambda: gpt_causal_lm(VOCABULARY_SIZE, **SMALL),
    "rotary_gqa": lambda: gpt_causal_lm(VOCABULARY_SIZE, **ROTARY_GQA),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_prefill_then_one_token_at_a_time_equals_the_full_pass(kind):
    model = MODELS[kind]()
    expected = _np(model(INPUTS))
    token_ids = INPUTS["token_ids"]
    for prefix in (1, 4):
        cache = model.init_cache(3, LENGTH)
        logits, cache = model.call_with_cache(token_ids[:, :prefix], cache, 0)
        pieces = [_np(logits)]
        for t in range(prefix, LENGTH):
            logits, cache = model.call_with_cache(token_ids[:, t : t + 1], cache, t)
            pieces.append(_np(logits))
        actual = np.concatenate(pieces, axis=1)
        assert actual.dtype == np.float32
        np.testing.assert_allclose(actual[UNPADDED], expected[UNPADDED], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_cache_spec_matches_init_cache(kind, dtype):
    keras.config.set_dtype_policy(dtype)
    model = MODELS[kind]()
    spec = model.cache_spec(LENGTH)
    cache = model.init_cache(3, LENGTH)
    heads = 2 if kind == "rotary_gqa" else 4
    assert (
        sorted(spec)
        == sorted(cache)
        == sorted(f"kv_cache_{kind}_{i}" for i in range(2) for kind in "kv")
    )
    for name, (shape, cache_dtype) in spec.items():
        assert shape == (None, LENGTH, heads, 4), name
        assert tuple(cache[name].shape) == (3, *shape[1:]), name
        assert keras.backend.standardize_dtype(cache[name].dtype) == cache_dtype, name
    assert spec["kv_cache_k_0"][1] == ("bfloat16" if dtype == "mixed_bfloat16" else "float32")
    # The caches a step returns keep the spec.
    _, new_cache = model.call_with_cache(INPUTS["token_ids"][:, :2], cache, 0)
    for name, (shape, cache_dtype) in spec.items():
        assert tuple(new_cache[name].shape) == (3, *shape[1:])
        assert keras.backend.standardize_dtype(new_cache[name].dtype) == cache_dtype


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_traced_call_with_cache_traces_once_for_two_batch_sizes(kind):
    model = MODELS[kind]()
    expected = _np(model(INPUTS))
    signature = {
        name: tf.TensorSpec(shape, tf.as_dtype(dtype))
        for name, (shape, dtype) in model.cache_spec(LENGTH).items()
    }
    step = tf.function(
        model.call_with_cache,
        input_signature=[
            tf.TensorSpec((None, None), tf.int32),
            signature,
            tf.TensorSpec((), tf.int32),
        ],
    )
    for batch in (3, 1):
        token_ids = INPUTS["token_ids"][:batch]
        cache = model.init_cache(batch, LENGTH)
        logits, cache = step(token_ids[:, :3], cache, tf.constant(0))
        pieces = [_np(logits)]
        for t in range(3, LENGTH):
            logits, cache = step(token_ids[:, t : t + 1], cache, tf.constant(t))
            pieces.append(_np(logits))
        rows = UNPADDED[:batch]
        actual = np.concatenate(pieces, axis=1)
        np.testing.assert_allclose(actual[rows], expected[:batch][rows], rtol=0, atol=1e-5)
    assert step.experimental_get_tracing_count() == 1


def test_cache_padding_mask_hides_cache_positions(recwarn):
    """`padding_mask` over the cache positions: masked slots are not attended to."""
    model = MODELS["learned"]()
    token_ids = INPUTS["token_ids"][:1, :6]
    cache = model.init_cache(1, 6)
    mask = np.ones((1, 6), bool)
    mask[0, 1] = False
    logits, _ = model.call_with_cache(token_ids, cache, 0, padding_mask=mask)
    unmasked, _ = model.call_with_cache(token_ids, model.init_cache(1, 6), 0)
    np.testing.assert_allclose(_np(logits)[:, 0], _np(unmasked)[:, 0], rtol=0, atol=1e-6)
    assert np.abs(_np(logits)[:, 2:] - _np(unmasked)[:, 2:]).max() > 1e-4
    assert not [w for w in recwarn if "destroy the mask" in str(w.message)]


# -- rotary positions -----------------------------------------------------------------------------


def test_rotary_model_has_no_position_table_and_runs_past_max_sequence_length():
    model = gpt_causal_lm(VOCABULARY_SIZE, **ROTARY_GQA)
    backbone = model.backbone
    assert backbone.position_embedding is None
    assert not [w.path for w in model.weights if "position" in w.path]
    learned = gpt_causal_lm(VOCABULARY_SIZE, **SMALL)
    table = learned.backbone.position_embedding.embeddings
    assert len(learned.weights) == len(model.weights) + 1 and tuple(table.shape) == (12, 16)
    assert tuple(backbone.decoder_blocks[0]._self_attention._key_dense.kernel.shape) == (16, 2, 4)
    long = make_inputs(20, [20, 15], seed=3)  # max_sequence_length is 12
    logits = _np(model(long))
    assert logits.shape == (2, 20, VOCABULARY_SIZE) and np.all(np.isfinite(logits))
    # Causal: the first 12 positions are those of the 12-token prefix.
    prefix = {k: v[:, :12] for k, v in long.items()}
    np.testing.assert_allclose(logits[:, :12], _np(model(prefix)), rtol=0, atol=1e-5)
    cache = model.init_cache(2, 20)  # no length limit for the caches either
    step_logits, _ = model.call_with_cache(long["token_ids"], cache, 0)
    np.testing.assert_allclose(_np(step_logits)[0], logits[0], rtol=0, atol=1e-5)


def test_rotary_logits_depend_on_token_order():
    """Without a position table, the rotation is what tells the positions apart."""
    model = gpt_causal_lm(VOCABULARY_SIZE, **ROTARY_GQA)
    inputs = make_inputs(6, [6])
    swapped = {**inputs, "token_ids": inputs["token_ids"][:, [1, 0, 2, 3, 4, 5]]}
    assert np.abs(_np(model(inputs))[:, -1] - _np(model(swapped))[:, -1]).max() > 1e-4


# -- precision ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_mixed_bfloat16_logits_are_float32_and_finite(kind):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = MODELS[kind]()
    assert model.dtype_policy.name == "mixed_bfloat16"
    logits = model(INPUTS)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(_np(logits)))
    assert all(w.dtype == "float32" for w in model.weights)
    hidden = model.backbone(INPUTS)
    assert keras.backend.standardize_dtype(hidden.dtype) == "bfloat16"
    step_logits, _ = model.call_with_cache(INPUTS["token_ids"], model.init_cache(3, LENGTH), 0)
    assert keras.backend.standardize_dtype(step_logits.dtype) == "float32"
    assert np.all(np.isfinite(_np(step_logits)))


def test_dtype_argument_sets_the_policy():
    model = gpt_causal_lm(VOCABULARY_SIZE, dtype="mixed_bfloat16", **SMALL)
    assert model.dtype_policy.name == model.backbone.dtype_policy.name == "mixed_bfloat16"
    assert keras.backend.standardize_dtype(model(INPUTS).dtype) == "float32"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"position_embedding": "alibi"},
            r"GPTBackbone: `position_embedding` must be one of \('learned', 'rotary'\).*"
            r"Received: position_embedding='alibi'",
        ),
        (
            {"position_embedding": "rotary", "hidden_dim": 24, "num_heads": 8},
            r"head size `hidden_dim // num_heads` must be even. "
            r"Received: hidden_dim=24, num_heads=8",
        ),
        (
            {"num_key_value_heads": 3},
            r"`num_heads` must be a multiple of `num_key_value_heads`. "
            r"Received: num_heads=4, num_key_value_heads=3",
        ),
        ({"num_key_value_heads": 0}, r"Received: num_key_value_heads=0"),
        ({"vocabulary_size": 0}, r"`vocabulary_size` must be a positive integer"),
        ({"hidden_dim": 18}, r"divisible by `num_heads`. Received: hidden_dim=18, num_heads=4"),
        ({"dropout": 1.0}, r"Received: dropout=1.0"),
        ({"rotary_max_wavelength": 0}, r"Received: rotary_max_wavelength=0"),
        ({"layer_norm_epsilon": -1.0}, r"Received: layer_norm_epsilon=-1.0"),
        ({"max_sequence_length": None}, r"Received: max_sequence_length=None"),
    ],
)
def test_bad_constructor_arguments_raise(overrides, message):
    arguments = {"vocabulary_size": VOCABULARY_SIZE, **SMALL, **overrides}
    with pytest.raises(ValueError, match=message):
        GPTBackbone(**arguments)


def test_causal_lm_needs_a_gpt_backbone():
    with pytest.raises(ValueError, match=r"GPTCausalLM: `backbone` must be a GPTBackbone"):
        GPTCausalLM(keras.layers.Dense(2))


def test_init_cache_beyond_the_learned_positions_raises():
    model = gpt_causal_lm(VOCABULARY_SIZE, **SMALL)
    with pytest.raises(
        ValueError,
        match=r"GPTBackbone.init_cache: `max_length` may not exceed the model's "
        r"max_sequence_length \(12 learned positions\). Received: max_length=13",
    ):
        model.init_cache(2, 13)
    with pytest.raises(ValueError, match=r"`max_length` must be a positive integer"):
        model.init_cache(2, 0)
    assert sorted(model.init_cache(2, 12))  # the longest that fits
    rotary = gpt_causal_lm(VOCABULARY_SIZE, **ROTARY_GQA)
    assert tuple(rotary.init_cache(1, 100)["kv_cache_k_0"].shape) == (1, 100, 2, 4)


def test_wrong_cache_dict_raises():
    model = gpt_causal_lm(VOCABULARY_SIZE, **SMALL)
    cache = model.init_cache(2, 6)
    token_ids = INPUTS["token_ids"][:2, :1]
    message = r"`cache` must be the dict of `init_cache` \(4 KV caches"
    with pytest.raises(ValueError, match=message + r".*Received: \['kv_cache_k_0'\]"):
        model.call_with_cache(token_ids, {"kv_cache_k_0": cache["kv_cache_k_0"]}, 0)
    with pytest.raises(ValueError, match=message):
        model.call_with_cache(token_ids, list(cache.values()), 0)
    other = gpt_causal_lm(VOCABULARY_SIZE, **{**SMALL, "num_layers": 1}).init_cache(2, 6)
    with pytest.raises(ValueError, match=message):
        model.call_with_cache(token_ids, other, 0)
    gqa = gpt_causal_lm(VOCABULARY_SIZE, **ROTARY_GQA).init_cache(2, 6)  # 2 heads, not 4
    with pytest.raises(ValueError, match=r"`cache` must be .*Received: cache=\[\(2, 6, 2, 4\)"):
        model.call_with_cache(token_ids, gqa, 0)


def test_sequence_longer_than_max_sequence_length_raises():
    model = gpt_causal_lm(VOCABULARY_SIZE, **SMALL)
    too_long = make_inputs(13, [13, 5])
    message = (
        r"`token_ids` is longer than `max_sequence_length`. Received: "
        r"token_ids.shape=\(2, 13\), max_sequence_length=12"
    )
    with pytest.raises(ValueError, match=message):
        model.backbone(too_long)
    with pytest.raises(ValueError, match=message):
        model(too_long)
    model(make_inputs(12, [12, 5]))  # the longest that fits


def test_bad_inputs_raise():
    model = gpt_backbone(VOCABULARY_SIZE, **SMALL)
    with pytest.raises(ValueError, match=r"padding_mask"):  # Keras names the missing input
        model({"token_ids": INPUTS["token_ids"]})
    with pytest.raises(
        ValueError, match=r"a dict with `token_ids` and `padding_mask`. Received: \['padding_mask"
    ):
        model({**INPUTS, "segment_ids": INPUTS["token_ids"]})
    with pytest.raises(ValueError, match=r"Received: padding_mask.shape=\(3,\)"):
        model({**INPUTS, "padding_mask": np.ones(3, "int32")})
