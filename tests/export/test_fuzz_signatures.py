"""Random unicode and bytes against every string serving signature of every text task.

Every answer has one row per input, the declared outputs, UTF-8 strings and a valid `status`
(`keras_attention.tasks.serving_status`); nothing raises. The translator is
exported once and fuzzed through the loaded SavedModel (what TF Serving runs); the other tasks
through their traced serving functions (the ones their export holds). `-m slow` runs many more
examples, and every task through its export.
"""

import unicodedata

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_attention.export import export_task
from keras_attention.tasks.serving_status import STATUSES
from tests.tasks import test_bert_contract, test_causal_lm_contract, test_translator_contract

_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u3000"
_WORDS = ["the", "cat", "sat", "[MASK]", "march", "3", "2021", "october", "café", "日本", "."]


def _utf8(text):
    return text.encode("utf-8")


_texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=40).map(_utf8)
_controls = st.text(st.characters(max_codepoint=0x9F, categories=("Cc",)), max_size=8).map(_utf8)
_whitespace = st.text(st.sampled_from(_WHITESPACE), max_size=10).map(_utf8)
_wordy = st.lists(st.sampled_from(_WORDS), max_size=12).map(" ".join).map(_utf8)
_long = st.integers(100, 600).map(lambda n: (" ".join(_WORDS) + " ") * n).map(_utf8)
_raw = st.binary(max_size=40)  # mostly not UTF-8
_broken = st.tuples(_wordy, st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82"]))
_broken = _broken.map(lambda parts: parts[0] + parts[1])
_inputs = st.one_of(_texts, _controls, _whitespace, _wordy, _long, _raw, _broken, st.just(b""))
_batches = st.lists(_inputs, min_size=1, max_size=4)


def _is_utf8(value):
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _blank(value):
    """Only whitespace, control and format characters (no token for any tokenizer)."""
    text = value.decode("utf-8")
    return all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _signatures(task, path=None):
    """`[(name, call, string_input, other_inputs)]` of the task's string signatures."""
    loaded = tf.saved_model.load(path).signatures if path else None
    calls = []
    for name, (fn, specs) in task.serving_signatures().items():
        (argument,) = [key for key, spec in specs.items() if spec.dtype == tf.string]
        spec = test_causal_lm_contract.SPECS[0]
        other = {key: tf.constant(value, specs[key].dtype)
                 for key, value in spec.signature_inputs.get(name, {}).items()}  # fmt: skip
        if loaded is not None:
            signature = loaded[name]
            calls.append(
                (name, lambda batch, s=signature, a=argument, o=other: s(**{a: batch}, **o))
            )
        else:
            calls.append((name, lambda batch, f=fn, o=other: f(batch, **o)))
    return calls


def _task(module, index=0):
    spec = module.SPECS[index]
    return spec.make_task(spec.make_backbone())


_TASKS = {
    "translator": (test_translator_contract, 0, True),
    "causal_lm": (test_causal_lm_contract, 0, False),
    "masked_lm": (test_bert_contract, 0, True),
    "classifier": (test_bert_contract, 1, True),
    "token_classifier": (test_bert_contract, 2, True),
}
_EXPORTED = ("translator",)  # the default run fuzzes it through its export (the rest: -m slow)


def _served(name, tmp_path_factory, export):
    module, index, empty_answer = _TASKS[name]
    task = _task(module, index)
    path = None
    if export:
        import pipelines.text  # noqa: F401  (registers the tensorflow-text ops)

        path = export_task(task, tmp_path_factory.mktemp(name), name=name.replace("_", "-"))
    return task, _signatures(task, path), empty_answer


@pytest.fixture(scope="module", params=list(_TASKS))
def served(request, tmp_path_factory):
    return _served(request.param, tmp_path_factory, request.param in _EXPORTED)


def _check(task, calls, empty_answer, batch):
    tensor = tf.constant(batch, tf.string, shape=[len(batch)])
    for name, call in calls:
        outputs = call(tensor)
        expected = set(type(task).serving_outputs[name])
        assert set(outputs) == expected, (name, sorted(outputs))
        status = [s.decode() for s in outputs["status"].numpy()]
        for key, value in outputs.items():
            assert value.shape[0] == len(batch), (name, key, value.shape)
            if value.dtype == tf.string:
                assert all(_is_utf8(v) for v in value.numpy().reshape(-1)), (name, key)
            else:
                assert tf.reduce_all(tf.math.is_finite(tf.cast(value, tf.float32))), (name, key)
        for text, state in zip(batch, status, strict=True):
            assert state in STATUSES, state
            assert (state == "invalid_utf8") == (not _is_utf8(text)), (name, text, state)
            if _is_utf8(text) and _blank(text):
                assert state == "empty_input", (name, text, state)
        main = next((o for o in ("translation", "completion", "sequence", "label", "tagged")
                     if o in outputs), None)  # fmt: skip
        if main is None:
            continue
        for text, state, answer in zip(batch, status, outputs[main].numpy(), strict=True):
            if state == "invalid_utf8" or (state == "empty_input" and empty_answer):
                assert answer == b"", (name, text, state, answer)


_FAST = settings(max_examples=12, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
_SLOW = settings(max_examples=30, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@_FAST
@given(batch=_batches)
def test_random_input_gets_a_valid_answer_and_status(served, batch):
    _check(*served, batch)


@pytest.fixture(scope="module", params=list(_TASKS))
def exported(request, tmp_path_factory):
    return _served(request.param, tmp_path_factory, export=True)


@pytest.mark.slow
@_SLOW
@given(batch=_batches)
def test_many_random_inputs_through_every_export(exported, batch):
    _check(*exported, batch)


def test_the_degenerate_cases_themselves(served):
    _check(*served, [b"", b" \t\n", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", "ü日本".encode()])
