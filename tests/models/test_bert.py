import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_attention.models import (
    BertBackbone,
    BertClassifier,
    BertMaskedLM,
    BertTokenClassifier,
    bert_classifier,
    bert_encoder,
    bert_masked_lm,
    bert_token_classifier,
    convert_keras_hub,
)
from tests.model_contract import ModelSpec, model_checks

VOCABULARY_SIZE = 50
TINY = {
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "intermediate_dim": 32,
    "max_sequence_length": 12,
}
LENGTH = 10
VALID = np.array([10, 7, 3])  # real tokens per row; the others are padding


def make_inputs(length=LENGTH, valid=VALID, seed=0):
    rng = np.random.default_rng(seed)
    batch = len(valid)
    padding_mask = np.arange(length)[None] < np.asarray(valid)[:, None]
    return {
        "token_ids": np.where(
            padding_mask, rng.integers(1, VOCABULARY_SIZE, (batch, length)), 0
        ).astype("int32"),
        "segment_ids": ((np.arange(length)[None] >= length // 2) & padding_mask).astype("int32"),
        "padding_mask": padding_mask.astype("int32"),
    }


INPUTS = make_inputs()
MASK_POSITIONS = np.array([[0, 4, 9], [1, 2, 6], [0, 1, 2]], "int32")  # unpadded positions
MLM_INPUTS = {**INPUTS, "mask_positions": MASK_POSITIONS}
UNPADDED = INPUTS["padding_mask"].astype(bool)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# -- the model contract ---------------------------------------------------------------------------

SPECS = [
    ModelSpec("bert_backbone", lambda: bert_encoder(VOCABULARY_SIZE, **TINY), INPUTS),
    ModelSpec("bert_masked_lm", lambda: bert_masked_lm(VOCABULARY_SIZE, **TINY), MLM_INPUTS),
    ModelSpec(
        "bert_classifier",
        lambda: bert_classifier(3, vocabulary_size=VOCABULARY_SIZE, **TINY),
        INPUTS,
    ),
    ModelSpec(
        "bert_classifier_mean_pooling",
        lambda: BertClassifier(bert_encoder(VOCABULARY_SIZE, **TINY), 3, pooling="mean"),
        INPUTS,
    ),
    ModelSpec(
        "bert_token_classifier",
        lambda: bert_token_classifier(5, vocabulary_size=VOCABULARY_SIZE, **TINY),
        INPUTS,
    ),
]


@pytest.mark.parametrize(("spec", "check"), model_checks(*SPECS))
def test_model_contract(spec, check, tmp_path):
    check(spec, tmp_path)


def test_config_is_every_constructor_argument():
    model = BertBackbone(
        VOCABULARY_SIZE, dropout=0.2, num_segments=3, layer_norm_epsilon=1e-6, **TINY
    )
    config = model.get_config()
    assert {k: config[k] for k in TINY} == TINY
    assert (config["vocabulary_size"], config["dropout"]) == (VOCABULARY_SIZE, 0.2)
    assert (config["num_segments"], config["layer_norm_epsilon"]) == (3, 1e-6)
    assert [type(b).__name__ for b in model.encoder_blocks] == ["TransformerEncoderBlock"] * 2
    assert not any(b.normalize_first for b in model.encoder_blocks)
    classifier = BertClassifier(model, 4, dropout=0.3, activation="softmax")
    config = classifier.get_config()
    assert (config["num_classes"], config["dropout"], config["activation"]) == (4, 0.3, "softmax")
    assert config["backbone"]["config"]["num_segments"] == 3
    json.dumps(config)


def test_masked_lm_head_stays_tied_after_loading(tmp_path):
    model = bert_masked_lm(VOCABULARY_SIZE, **TINY)
    assert model.masked_lm_head.token_embedding is model.backbone.token_embedding
    model.save(tmp_path / "mlm.keras")
    restored = keras.saving.load_model(tmp_path / "mlm.keras")
    assert restored.masked_lm_head.token_embedding is restored.backbone.token_embedding
    np.testing.assert_array_equal(_np(restored(MLM_INPUTS)), _np(model(MLM_INPUTS)))
    assert len(restored.weights) == len(model.weights)  # the table is stored once


# -- parity with keras_hub ------------------------------------------------------------------------


def _keras_hub_backbone():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCABULARY_SIZE, **TINY)
    return backbone


def _randomize(model, seed=0):
    """Random values for every weight (biases and layer norms too), so that no swap goes unseen."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = 0.3 * rng.standard_normal(weight.shape) + ("gamma" in weight.path)
        weight.assign(value.astype("float32"))


def _check_backbone_parity(ours, theirs):
    expected, actual = theirs(INPUTS), ours(INPUTS)
    sequence = np.abs(
        _np(actual["sequence_output"])[UNPADDED] - _np(expected["sequence_output"])[UNPADDED]
    ).max()
    pooled = np.abs(_np(actual["pooled_output"]) - _np(expected["pooled_output"])).max()
    assert sequence <= 1e-4 and pooled <= 1e-4, (sequence, pooled)
    return sequence, pooled


def test_backbone_matches_keras_hub():
    theirs = _keras_hub_backbone()
    _randomize(theirs)
    ours = convert_keras_hub(theirs)
    assert isinstance(ours, BertBackbone)
    assert {k: getattr(ours, k) for k in TINY} == TINY
    assert ours.layer_norm_epsilon == 1e-12 and ours.dropout == theirs.dropout
    _check_backbone_parity(ours, theirs)
    # The check can fail: a fresh model with other weights is far off.
    other = _np(bert_encoder(VOCABULARY_SIZE, **TINY)(INPUTS)["pooled_output"])
    assert np.abs(other - _np(theirs(INPUTS)["pooled_output"])).max() > 1e-2


def test_masked_lm_matches_keras_hub():
    theirs = keras_hub.models.BertMaskedLM(_keras_hub_backbone(), preprocessor=None)
    _randomize(theirs, seed=1)
    ours = convert_keras_hub(theirs)
    assert isinstance(ours, BertMaskedLM)
    logits = _np(ours(MLM_INPUTS))
    assert logits.shape == (3, 3, VOCABULARY_SIZE) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, _np(theirs(MLM_INPUTS)), rtol=0, atol=1e-4)
    _check_backbone_parity(ours.backbone, theirs.backbone)


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_classifier_matches_keras_hub(activation):
    theirs = keras_hub.models.BertTextClassifier(
        _keras_hub_backbone(), num_classes=4, preprocessor=None, activation=activation, dropout=0.2
    )
    _randomize(theirs, seed=2)
    ours = convert_keras_hub(theirs)
    assert isinstance(ours, BertClassifier)
    assert (ours.num_classes, ours.dropout) == (4, 0.2)
    np.testing.assert_allclose(_np(ours(INPUTS)), _np(theirs(INPUTS)), rtol=0, atol=1e-4)


def test_converts_local_preset_directories(tmp_path):
    backbone = _keras_hub_backbone()
    _randomize(backbone, seed=3)
    models = {
        "backbone": backbone,
        "masked_lm": keras_hub.models.BertMaskedLM(backbone, preprocessor=None),
        "classifier": keras_hub.models.BertTextClassifier(
            backbone, num_classes=3, preprocessor=None
        ),
    }
    expected_types = {
        "backbone": BertBackbone,
        "masked_lm": BertMaskedLM,
        "classifier": BertClassifier,
    }
    for name, model in models.items():
        model.save_to_preset(str(tmp_path / name))
        converted = convert_keras_hub(tmp_path / name)  # a path object works too
        assert type(converted) is expected_types[name]
        feed = MLM_INPUTS if name == "masked_lm" else INPUTS
        expected = model(feed)
        actual = converted(feed)
        if name == "backbone":
            _check_backbone_parity(converted, model)
        else:
            np.testing.assert_allclose(_np(actual), _np(expected), rtol=0, atol=1e-4)


# -- padding and shapes ---------------------------------------------------------------------------


def test_padded_tokens_change_no_unpadded_output():
    model = bert_masked_lm(VOCABULARY_SIZE, **TINY)
    outputs = model.backbone(INPUTS)
    changed = {k: v.copy() for k, v in INPUTS.items()}
    rng = np.random.default_rng(9)
    noise = rng.integers(1, VOCABULARY_SIZE, changed["token_ids"].shape)
    changed["token_ids"] = np.where(UNPADDED, changed["token_ids"], noise).astype("int32")
    changed["segment_ids"] = np.where(UNPADDED, changed["segment_ids"], 1).astype("int32")
    assert not np.array_equal(changed["token_ids"], INPUTS["token_ids"])
    moved = model.backbone(changed)
    sequence = _np(outputs["sequence_output"])
    np.testing.assert_allclose(
        _np(moved["sequence_output"])[UNPADDED], sequence[UNPADDED], rtol=0, atol=1e-6
    )
    np.testing.assert_array_equal(sequence[~UNPADDED], 0.0)  # padded rows are zeros
    np.testing.assert_allclose(
        _np(moved["pooled_output"]), _np(outputs["pooled_output"]), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        _np(model({**changed, "mask_positions": MASK_POSITIONS})),
        _np(model(MLM_INPUTS)),
        rtol=0,
        atol=1e-5,
    )


def test_unknown_batch_and_sequence_length():
    model = bert_token_classifier(5, vocabulary_size=VOCABULARY_SIZE, **TINY)
    spec = tf.TensorSpec((None, None), tf.int32)
    call = tf.function(
        lambda token_ids, segment_ids, padding_mask: model(
            {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        ),
        input_signature=[spec, spec, spec],
    )
    for length, valid in ((LENGTH, VALID), (12, [12, 1]), (4, [2])):
        inputs = make_inputs(length, valid, seed=length)
        np.testing.assert_allclose(_np(call(**inputs)), _np(model(inputs)), rtol=0, atol=1e-5)
        assert _np(call(**inputs)).shape == (len(valid), length, 5)
    assert call.experimental_get_tracing_count() == 1


def test_classifier_can_start_from_a_masked_lm_backbone():
    masked_lm = bert_masked_lm(VOCABULARY_SIZE, **TINY)
    classifier = bert_classifier(3, vocabulary_size=VOCABULARY_SIZE, **TINY)
    tagger = bert_token_classifier(4, vocabulary_size=VOCABULARY_SIZE, **TINY)
    for task in (classifier, tagger):
        task.backbone.set_weights(masked_lm.backbone.get_weights())
        for key in ("sequence_output", "pooled_output"):
            np.testing.assert_array_equal(
                _np(task.backbone(INPUTS)[key]), _np(masked_lm.backbone(INPUTS)[key])
            )
    # The pooled output feeds the classifier: a backbone with these weights gives its logits.
    pooled = _np(masked_lm.backbone(INPUTS)["pooled_output"])
    kernel, bias = (_np(w) for w in classifier.output_dense.weights)
    np.testing.assert_allclose(_np(classifier(INPUTS)), pooled @ kernel + bias, rtol=0, atol=1e-5)


def test_mean_pooling_averages_the_real_tokens_outputs():
    backbone = bert_encoder(VOCABULARY_SIZE, **TINY)
    classifier = BertClassifier(backbone, 3, pooling="mean")
    assert classifier.get_config()["pooling"] == "mean"
    sequence = _np(backbone(INPUTS)["sequence_output"])
    pooled = np.stack([sequence[row, :valid].mean(0) for row, valid in enumerate(VALID)])
    kernel, bias = (_np(w) for w in classifier.output_dense.weights)
    np.testing.assert_allclose(_np(classifier(INPUTS)), pooled @ kernel + bias, rtol=0, atol=1e-5)
    # Padding does not move it: the same rows padded further give the same logits.
    longer = {key: np.pad(value, [(0, 0), (0, 2)]) for key, value in INPUTS.items()}
    np.testing.assert_allclose(
        _np(classifier(longer)), _np(classifier(INPUTS)), rtol=0, atol=1e-5
    )
    # The first-position classifier on the same backbone reads the pooler instead.
    first = BertClassifier(backbone, 3)
    first.output_dense.set_weights(classifier.output_dense.get_weights())
    assert not np.allclose(_np(first(INPUTS)), _np(classifier(INPUTS)), atol=1e-3)


def test_builders_share_a_given_backbone():
    backbone = bert_encoder(VOCABULARY_SIZE, **TINY)
    assert bert_masked_lm(backbone=backbone).backbone is backbone
    assert bert_classifier(2, backbone=backbone).backbone is backbone
    tagger = bert_token_classifier(2, backbone=backbone)
    assert tagger.backbone is backbone and tagger.dropout == backbone.dropout


def test_dropout_only_in_training():
    model = bert_classifier(3, vocabulary_size=VOCABULARY_SIZE, dropout=0.5, **TINY)
    inference = _np(model(INPUTS))
    np.testing.assert_array_equal(_np(model(INPUTS, training=False)), inference)
    assert not np.allclose(_np(model(INPUTS, training=True)), inference)


def test_mixed_bfloat16_outputs_are_finite():
    masked_lm = bert_masked_lm(VOCABULARY_SIZE, dtype="mixed_bfloat16", **TINY)
    outputs = masked_lm.backbone(INPUTS)
    assert keras.backend.standardize_dtype(outputs["sequence_output"].dtype) == "bfloat16"
    for value in outputs.values():
        assert np.all(np.isfinite(_np(value).astype("float32")))
    logits = masked_lm(MLM_INPUTS)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(_np(logits)))
    assert all(w.dtype == "float32" for w in masked_lm.weights)
    classifier = BertClassifier(masked_lm.backbone, 3)
    assert np.all(np.isfinite(_np(classifier(INPUTS))))


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_classifier_converts_to_tflite_builtins(pooling):
    from keras_attention.export import convert_tflite, run_tflite

    model = BertClassifier(bert_encoder(VOCABULARY_SIZE, **TINY), 3, pooling=pooling)
    flatbuffer = convert_tflite(model)
    for length, valid in ((LENGTH, VALID), (6, [6, 2])):
        inputs = make_inputs(length, valid, seed=length)
        actual = run_tflite(flatbuffer, inputs)
        (output,) = actual.values()
        np.testing.assert_allclose(output, _np(model(inputs)), rtol=0, atol=1e-4)


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"vocabulary_size": 0},
            r"BertBackbone: `vocabulary_size` must be a positive integer. "
            r"Received: vocabulary_size=0",
        ),
        ({"num_layers": 1.5}, r"`num_layers` must be a positive integer. Received: num_layers=1.5"),
        (
            {"num_heads": 3},
            r"`hidden_dim` must be divisible by `num_heads`. "
            r"Received: hidden_dim=16, num_heads=3",
        ),
        ({"dropout": 1.0}, r"`dropout` must be a float in \[0, 1\). Received: dropout=1.0"),
        ({"max_sequence_length": None}, r"Received: max_sequence_length=None"),
        ({"num_segments": -1}, r"Received: num_segments=-1"),
        ({"layer_norm_epsilon": 0.0}, r"`layer_norm_epsilon` must be a positive number"),
    ],
)
def test_bad_constructor_arguments_raise(overrides, message):
    arguments = {"vocabulary_size": VOCABULARY_SIZE, **TINY, **overrides}
    with pytest.raises(ValueError, match=message):
        BertBackbone(**arguments)


def test_bad_task_arguments_raise():
    backbone = bert_encoder(VOCABULARY_SIZE, **TINY)
    with pytest.raises(ValueError, match=r"BertMaskedLM: `backbone` must be a `BertBackbone`"):
        BertMaskedLM(keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"`num_classes` must be a positive integer"):
        BertClassifier(backbone, 0)
    with pytest.raises(ValueError, match=r"BertClassifier: `pooling` must be one of \('first', "
                       r"'mean'\). Received: pooling='max'"):  # fmt: skip
        BertClassifier(backbone, 2, pooling="max")
    with pytest.raises(ValueError, match=r"BertTokenClassifier: `dropout` must be a float"):
        BertTokenClassifier(backbone, 3, dropout=-0.1)
    with pytest.raises(ValueError, match=r"give either a `backbone` or the options"):
        bert_classifier(2, backbone=backbone, num_layers=3)
    with pytest.raises(ValueError, match=r"give a `backbone` or a `vocabulary_size`"):
        bert_masked_lm()


def test_sequence_longer_than_max_sequence_length_raises():
    model = bert_masked_lm(VOCABULARY_SIZE, **TINY)
    too_long = make_inputs(13, [13, 5])
    with pytest.raises(
        ValueError,
        match=r"longer than `max_sequence_length`. Received: "
        r"token_ids.shape=\(2, 13\), max_sequence_length=12",
    ):
        model.backbone(too_long)
    with pytest.raises(ValueError, match=r"max_sequence_length=12"):
        model({**too_long, "mask_positions": np.zeros((2, 1), "int32")})
    model.backbone(make_inputs(12, [12, 5]))  # the longest that fits


def test_convert_refuses_unsupported_types():
    with pytest.raises(
        ValueError,
        match=r"unsupported model type keras.src.layers.core.dense.Dense. Supported keras_hub "
        r"types: BertBackbone, BertMaskedLM, BertTextClassifier, GPT2Backbone, GPT2CausalLM",
    ):
        convert_keras_hub(keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"unsupported model type .*BertBackbone"):
        convert_keras_hub(bert_encoder(VOCABULARY_SIZE, **TINY))  # ours is not keras_hub's
    distilbert = keras_hub.models.DistilBertBackbone(
        vocabulary_size=20,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=8,
    )
    with pytest.raises(ValueError, match=r"unsupported model type .*DistilBertBackbone"):
        convert_keras_hub(distilbert)


def test_convert_refuses_paths_that_are_not_local_presets(tmp_path):
    for path in (tmp_path / "missing", "bert_base_en_uncased", "hf://google/bert"):
        with pytest.raises(
            ValueError,
            match=r"existing local preset directory; nothing is "
            r"downloaded. Received: model=",
        ):
            convert_keras_hub(path)
    with pytest.raises(ValueError, match=r"not a keras_hub preset \(it has no config.json\)"):
        convert_keras_hub(tmp_path)
    config = {"registered_name": "keras_hub>DistilBertBackbone"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unsupported model type 'DistilBertBackbone' in the"):
        convert_keras_hub(tmp_path)
    # A supported type whose preset is broken: keras_hub's own error, named as the preset's.
    (tmp_path / "config.json").write_text(json.dumps({"registered_name": "keras_hub>GPT2Backbone"}))
    with pytest.raises(ValueError, match=r"could not be loaded by keras_hub"):
        convert_keras_hub(tmp_path)


def test_convert_names_a_mismatched_weight():
    from keras_attention.models.convert import _assign

    ours, theirs = keras.layers.Dense(3, name="ours"), keras.layers.Dense(4, name="theirs")
    ours.build((None, 2))
    theirs.build((None, 2))
    with pytest.raises(
        ValueError,
        match=r"the shape of the weight logits kernel does not match: "
        r"keras_hub 'theirs/kernel' has \(2, 4\)",
    ):
        _assign([("logits kernel", ours.kernel, theirs.kernel)])


def test_masked_lm_runs_its_last_block_at_the_masked_positions_only():
    """The logits and gradients are those of the full backbone gathered at the positions."""
    model = bert_masked_lm(VOCABULARY_SIZE, **{**TINY, "dropout": 0.0})
    positions = np.array([[0, 4, 9, 11], [1, 2, 6, 6], [0, 1, 2, 8]], "int32")  # 11, 8: outside
    inputs = {**INPUTS, "mask_positions": positions}

    def full_path():
        return model.masked_lm_head(model.backbone(INPUTS)["sequence_output"], positions)

    with tf.GradientTape(persistent=True) as tape:
        logits = model(inputs, training=True)
        reference = tf.cast(full_path(), "float32")
        losses = [tf.reduce_sum(tf.nn.log_softmax(x)[..., 3]) for x in (logits, reference)]
    np.testing.assert_allclose(_np(logits), _np(reference), rtol=0, atol=1e-5)
    grads = [tape.gradient(loss, model.trainable_variables) for loss in losses]
    for path, a, b in zip([v.path for v in model.trainable_variables], *grads, strict=True):
        if "pooled_dense" in path:  # the masked LM never reads the pooled output
            assert a is None
            continue
        np.testing.assert_allclose(_np(a), _np(b), rtol=0, atol=1e-5, err_msg=path)
    # The last block computes 4 rows per sequence, not 10 (zeros outside the sequence).
    encoded = _np(model.backbone.encode_positions(INPUTS, positions))
    assert encoded.shape == (3, 4, 16) and not encoded[0, 3].any() and encoded[0, 2].any()
