"""The model contract of DESIGN.md, checked by one helper for every backbone and task.

A model test describes its backbone (and the task around it) with a `ModelSpec`
and runs every check:

    SPEC = ModelSpec("transformer", make_backbone=..., inputs={...}, make_task=..., texts=[...])

    @pytest.mark.parametrize(("spec", "check"), model_checks(SPEC))
    def test_model_contract(spec, check, tmp_path):
        check(spec, tmp_path)

Points of the contract and the checks that show them:
1. `get_config` is the constructor's arguments (JSON, registered class, round trip with
   identical outputs); `.keras` save/load with identical outputs: `check_config_round_trip`,
   `check_keras_save_load`.
2. decoding (backbones with a decoder): the cached decode step, traced once with unknown
   batch size and source length, equals the teacher-forced pass, and so does a prefill
   followed by steps; the state matches `decoding_state_spec`: `check_decode_step`,
   `check_prefill`.
3. tasks: `save`/`Task.load` keeps the predictions (`check_task_save_load`); every string
   signature answers a `status` per input (`keras_attention.tasks.serving_status`): `""`,
   whitespace and NUL are `empty_input`, bytes that are not UTF-8 `invalid_utf8` (both get
   the empty answer), an over-long input `truncated`, and `predict_with_status` reports the
   same (`check_serving_status`); the SavedModel
   export answers in a fresh process exactly as the task in memory, for empty, over-long,
   non-ASCII and undecodable inputs and an empty batch (`check_saved_model`, slow); the LiteRT
   encode/decode loop of the `.tflite` export gives the same outputs as greedy decoding in
   memory (`check_tflite_decoding`, slow).
"""

import base64
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf


@dataclasses.dataclass
class ModelSpec:
    """What the contract checks need to know about one backbone (and its task).

    Attributes:
        name: a short name for test ids.
        make_backbone: builds the backbone (seeded: two calls give the same config).
        inputs: a batch of inputs for the backbone's teacher-forced call.
        decoder: the backbone has `encode` / `call_with_cache` (an `EncoderDecoderBackbone`).
        make_task: optional `make_task(backbone) -> Task` for the task checks.
        texts: inputs of the task (the empty string, an over-long one, non-ASCII text; a
            captioner's encoded images, `bytes`).
        tflite: the task has an on-device file (`convert_task_tflite`) to check.
        causal: the backbone is a causal LM (`init_cache` / `call_with_cache` on token ids).
        signature_inputs: `{signature_name: {input_name: value}}`, the inputs of a serving
            signature besides its `tf.string` batch (scalars such as `max_new_tokens`, `seed`).
        empty_answer: an `empty_input` gets the empty answer (`""`); `False` for a causal LM,
            which continues `[START]`.
    """

    name: str
    make_backbone: Callable
    inputs: dict
    decoder: bool = False
    make_task: Callable = None
    texts: list = dataclasses.field(default_factory=list)
    tflite: bool = True
    causal: bool = False
    signature_inputs: dict = dataclasses.field(default_factory=dict)
    empty_answer: bool = True

    def __str__(self):
        return self.name


def model_checks(*specs):
    """`(spec, check)` pairs of the checks that apply to each spec, as `pytest.param`s.

    The SavedModel and TFLite checks are marked slow.
    """
    params = []
    for spec in specs:
        checks = [check_config_round_trip, check_keras_save_load]
        if spec.decoder:
            checks += [check_decode_step, check_prefill]
        if spec.causal:
            checks += [check_causal_cache]
        if spec.make_task is not None:
            checks += [check_task_save_load, check_serving_status, check_saved_model]
            checks += [check_tflite_decoding] if spec.tflite else []
        for check in checks:
            name = check.__name__[len("check_") :]
            slow = check in (check_saved_model, check_tflite_decoding)
            params.append(
                pytest.param(
                    spec, check, id=f"{spec}-{name}", marks=[pytest.mark.slow] if slow else []
                )
            )
    return params


# -- backbones ------------------------------------------------------------------------------------


def _outputs(model, inputs):
    outputs = model(inputs, training=False)
    if isinstance(outputs, dict):  # several outputs: flattened, in sorted key order
        return np.concatenate([np.asarray(outputs[key]).reshape(-1) for key in sorted(outputs)])
    return np.asarray(outputs)


def check_config_round_trip(spec, tmp_path):
    model = spec.make_backbone()
    expected = _outputs(model, spec.inputs)
    config = model.get_config()
    json.dumps(config)  # plain JSON, as `.keras` files and task.json need
    clone = type(model).from_config(config)
    assert type(clone) is type(model)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(_outputs(clone, spec.inputs), expected)
    serialized = keras.saving.serialize_keras_object(model)
    assert serialized["registered_name"].startswith("keras_attention>")
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(model) and revived.get_config() == config


def check_keras_save_load(spec, tmp_path):
    model = spec.make_backbone()
    expected = _outputs(model, spec.inputs)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    np.testing.assert_array_equal(_outputs(restored, spec.inputs), expected)


def _teacher_forcing(spec, model):
    # What `encode` takes: source ids, or a captioner's images.
    source = spec.inputs["images" if "images" in spec.inputs else "source"]
    target_in = spec.inputs["target_in"]
    return source, target_in, _outputs(model, spec.inputs), target_in != 0


def check_decode_step(spec, tmp_path):
    model = spec.make_backbone()
    source, target_in, expected, valid = _teacher_forcing(spec, model)
    max_length = None if model.target_sequence_length is None else target_in.shape[1]
    state_spec = model.decoding_state_spec(max_length)
    signature = {
        name: tf.TensorSpec(shape, tf.as_dtype(dtype)) for name, (shape, dtype) in state_spec.items()
    }
    _, input_shape, input_dtype = model.encode_input
    encode = tf.function(
        lambda ids: model.encode(ids, max_length=max_length),
        input_signature=[tf.TensorSpec((None, *input_shape), input_dtype)],
    )
    step = tf.function(
        model.call_with_cache,
        input_signature=[
            tf.TensorSpec((None,), tf.int32),
            signature,
            tf.TensorSpec((), tf.int32),
        ],
    )
    for batch in (source, source[:1]):  # two batch sizes, one trace
        state = encode(batch)
        assert sorted(state) == sorted(state_spec)
        for name, (shape, dtype) in state_spec.items():
            assert state[name].dtype == tf.as_dtype(dtype), name
            assert all(d is None or d == s for d, s in zip(shape, state[name].shape, strict=True))
        logits = []
        for t in range(target_in.shape[1]):
            step_logits, state = step(target_in[: len(batch), t], state, t)
            logits.append(np.asarray(step_logits))
        actual = np.stack(logits, axis=1)
        rows = valid[: len(batch)]
        np.testing.assert_allclose(actual[rows], expected[: len(batch)][rows], rtol=0, atol=1e-5)
    assert encode.experimental_get_tracing_count() == 1
    assert step.experimental_get_tracing_count() == 1


def check_prefill(spec, tmp_path):
    model = spec.make_backbone()
    source, target_in, expected, valid = _teacher_forcing(spec, model)
    max_length = None if model.target_sequence_length is None else target_in.shape[1]
    state = model.encode(source, max_length=max_length)
    split = target_in.shape[1] // 2
    prefix_logits, state = model.call_with_cache(target_in[:, :split], state, 0)
    logits = [np.asarray(prefix_logits)]
    for t in range(split, target_in.shape[1]):
        step_logits, state = model.call_with_cache(target_in[:, t], state, t)
        logits.append(np.asarray(step_logits)[:, None])
    actual = np.concatenate(logits, axis=1)
    np.testing.assert_allclose(actual[valid], expected[valid], rtol=0, atol=1e-5)


def check_causal_cache(spec, tmp_path):
    """A causal LM's prefill of a prefix, then one cached token at a time, equals the full pass."""
    model = spec.make_backbone()
    token_ids = np.asarray(spec.inputs["token_ids"])
    expected = _outputs(model, spec.inputs)
    valid = np.asarray(spec.inputs["padding_mask"]).astype(bool)
    length = token_ids.shape[1]
    spec_of = model.cache_spec(length)
    signature = {name: tf.TensorSpec(shape, tf.as_dtype(dtype)) for name, (shape, dtype) in spec_of.items()}
    step = tf.function(model.call_with_cache, input_signature=[
        tf.TensorSpec((None, None), tf.int32), signature, tf.TensorSpec((), tf.int32)])  # fmt: skip
    split = length // 2
    for batch in (token_ids, token_ids[:1]):  # two batch sizes, one trace per shape kind
        cache = model.init_cache(len(batch), length)
        assert sorted(cache) == sorted(spec_of)
        logits, cache = step(batch[:, :split], cache, 0)
        pieces = [np.asarray(logits)]
        for t in range(split, length):
            logits, cache = step(batch[:, t : t + 1], cache, t)
            pieces.append(np.asarray(logits))
        actual = np.concatenate(pieces, axis=1)
        rows = valid[: len(batch)]
        np.testing.assert_allclose(actual[rows], expected[: len(batch)][rows], rtol=0, atol=1e-5)
    assert step.experimental_get_tracing_count() == 1


# -- tasks ------------------------------------------------------------------------------------------


def check_task_save_load(spec, tmp_path):
    from keras_attention.tasks import Task

    task = spec.make_task(spec.make_backbone())
    expected = task.predict(spec.texts)
    task.save(tmp_path / "task")
    assert {"task.json", "assets", "model.weights.h5"} <= set(os.listdir(tmp_path / "task"))
    reloaded = Task.load(tmp_path / "task")
    assert type(reloaded) is type(task) and reloaded.get_config() == task.get_config()
    assert reloaded.backbone.get_config() == task.backbone.get_config()
    assert reloaded.preprocessor.get_config() == task.preprocessor.get_config()
    assert reloaded.predict(spec.texts) == expected


# Inputs every text task must answer with a defined status (added to the spec's texts).
DEGENERATE = {"": "empty_input", " \t\n ": "empty_input", "\x00": "empty_input",
              b"\xff\xfe bad": "invalid_utf8", b"ok \xed\xa0\x80": "invalid_utf8"}  # fmt: skip
STATUSES = ("ok", "truncated", "empty_input", "invalid_utf8")


def _takes_text(specs):
    """The name of a signature's `tf.string` input, or `None` when it takes images."""
    names = [key for key, value in specs.items() if value.dtype == tf.string]
    return names[0] if names and names[0] != "image" else None


def contract_texts(spec, task):
    """The spec's inputs, plus the degenerate ones for a text task."""
    _, specs = task.serving_signatures()["serving_default"]
    return [*spec.texts, *DEGENERATE] if _takes_text(specs) else list(spec.texts)


def check_serving_status(spec, tmp_path):
    """Every string signature answers a valid `status`; degenerate inputs get the empty answer."""
    task = spec.make_task(spec.make_backbone())
    _, default_specs = task.serving_signatures()["serving_default"]
    if not _takes_text(default_specs):
        pytest.skip("the task takes images, not text")
    texts = contract_texts(spec, task)
    batch = tf.constant(texts, tf.string, shape=[len(texts)])
    default_status = None
    for name, (fn, specs) in task.serving_signatures().items():
        if _takes_text(specs) is None:
            continue
        other = {key: tf.constant(value, specs[key].dtype)
                 for key, value in spec.signature_inputs.get(name, {}).items()}  # fmt: skip
        outputs = fn(batch, **other)
        assert "status" in outputs, f"signature {name!r} has no status output"
        status = [s.decode() for s in outputs["status"].numpy()]
        assert outputs["status"].shape == (len(texts),) and set(status) <= set(STATUSES), status
        assert status[len(spec.texts):] == list(DEGENERATE.values()), (name, status)
        assert "truncated" in status[: len(spec.texts)], f"{name}: no over-long input in texts"
        assert fn(batch[:0], **other)["status"].shape == (0,)
        default_status = status if name == "serving_default" else default_status
    result = task.predict_with_status(texts)
    assert result["status"] == default_status
    assert result["outputs"] == task.predict(texts)
    for text, output, state in zip(texts, result["outputs"], status, strict=True):
        if state == "invalid_utf8" or (state == "empty_input" and spec.empty_answer):
            assert output == "", (text, output)
    assert task.predict_with_status([]) == {"outputs": [], "status": []}


_CHILD = """
import base64, json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops
loaded = tf.saved_model.load(sys.argv[1])
texts = [base64.b64decode(text) for text in json.loads(sys.argv[2])]
extras = json.loads(sys.argv[3])
def strings(value):  # nested lists of bytes -> of str, any rank
    return [strings(v) for v in value] if isinstance(value, list) else value.decode()
answers = {}
for name, signature in loaded.signatures.items():
    specs = signature.structured_input_signature[1]
    (argument,) = [key for key, spec in specs.items() if spec.dtype == tf.string]
    other = {key: tf.constant(value, specs[key].dtype) for key, value in extras.get(name, {}).items()}
    for key, batch in (("texts", texts), ("empty", [])):
        batch = tf.constant(batch, tf.string, shape=[len(batch)])
        outputs = signature(**{argument: batch}, **other)
        answers[f"{name}/{key}"] = {
            k: v.numpy().tolist() if v.dtype != tf.string else strings(v.numpy().tolist())
            for k, v in outputs.items()
        }
print(json.dumps(answers))
"""


def check_saved_model(spec, tmp_path):
    from keras_attention.export import export_task, verify_export

    task = spec.make_task(spec.make_backbone())
    path = export_task(task, tmp_path / "saved_models", name="contract", version=1)
    all_texts = contract_texts(spec, task)
    texts = np.array(all_texts, dtype=object)
    serve, input_spec = task.serving_signatures()["serving_default"]
    expected = {key: np.asarray(v) for key, v in serve(tf.constant(all_texts)).items()}
    # TF Serving's loader and REST bodies in a fresh process (`verify_export`).
    report = verify_export(path, {next(iter(input_spec)): texts}, model=lambda inputs: expected)
    assert report.ok, str(report)
    # Every signature in a fresh process, also for an empty batch, against the task in memory.
    encoded = [
        base64.b64encode(t.encode("utf-8") if isinstance(t, str) else t).decode("ascii")
        for t in all_texts
    ]
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, path, json.dumps(encoded), json.dumps(spec.signature_inputs)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    from keras_attention.tasks import ServedTask

    if "status" in expected:  # the CLI's loader reports the statuses the task reports
        served = ServedTask(path).predict_with_status(all_texts)
        assert served == task.predict_with_status(all_texts)
    for name, (fn, specs) in task.serving_signatures().items():
        other = {
            key: tf.constant(value, specs[key].dtype)
            for key, value in spec.signature_inputs.get(name, {}).items()
        }
        for key, batch in (("texts", all_texts), ("empty", [])):
            outputs = fn(tf.constant(batch, tf.string, shape=[len(batch)]), **other)
            for output, value in outputs.items():
                value = value.numpy()
                served = answers[f"{name}/{key}"][output]
                if value.size == 0:
                    assert np.asarray(served).size == 0, output
                elif value.dtype == object:
                    value = np.vectorize(lambda s: s.decode(), otypes=[object])(value)
                    assert np.asarray(served, dtype=object).tolist() == value.tolist(), output
                else:
                    np.testing.assert_allclose(np.asarray(served), value, rtol=0, atol=1e-5)
                    assert np.asarray(served).shape == value.shape


def check_tflite_decoding(spec, tmp_path):
    from keras_attention.export import convert_task_tflite, tflite_predictor

    task = spec.make_task(spec.make_backbone())
    if getattr(task, "beam_width", 1) != 1:
        pytest.skip("the on-device loop is greedy")
    path = tmp_path / "task.tflite"
    convert_task_tflite(task, output_path=path)
    predict = tflite_predictor(task, path)
    assert predict(spec.texts) == task.predict(spec.texts)
    assert predict([]) == []
    if hasattr(task, "predict_with_status"):  # each input's status, as in memory and served
        texts = contract_texts(spec, task)  # with empty, undecodable and over-long inputs
        assert predict.with_status(texts) == task.predict_with_status(texts)
        assert predict.with_status([]) == {"outputs": [], "status": []}
