"""TFLite / LiteRT export: conversion with builtin ops only, quantization, verification.

`convert_tflite` turns a `keras.Model` (or a SavedModel directory, or several
endpoints of one model) into a `.tflite` flatbuffer that runs on the LiteRT
interpreter without the Flex (TF Select) delegate. `verify_tflite` runs the
flatbuffer in the LiteRT interpreter and compares it with the Keras model;
`run_tflite` runs one signature on one feed.
"""

import dataclasses
import os
import re
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_attention.utils.validation import number

QUANTIZATIONS = (None, "float16", "dynamic", "int8")

# Operators of a flatbuffer whose variables were not frozen into constants. The LiteRT
# interpreter runs them without complaint and returns NaN or garbage.
_VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE")

# TensorFlow ops of tensorflow-text with a TFLite kernel in `tensorflow_text.tflite_registrar`
# (the `TFText>` prefix marks the others of that family).
_TF_TEXT_OPS = frozenset({"FastWordpieceTokenizeWithOffsets", "FastBertNormalize"})
_TF_TEXT_PREFIX = "TFText>"


def convert_tflite(
    obj,
    quantization=None,
    representative_data=None,
    signatures=None,
    allow_custom_ops=False,
    output_path=None,
    overwrite=False,
):
    """Converts a Keras model or a SavedModel to a TFLite flatbuffer, builtin ops only.

    The model goes through `keras.export.ExportArchive` (variables frozen into
    constants) and `tf.lite.TFLiteConverter.from_saved_model` with
    `TFLITE_BUILTINS` only. If an op would need the Flex (TF Select) runtime,
    conversion fails with a `ValueError` naming the op and the layer it comes
    from. A flatbuffer that still holds resource variables (`VAR_HANDLE`,
    `READ_VARIABLE`, `ASSIGN_VARIABLE`: a `tf.Module` saved with
    `tf.saved_model.save`) is refused, since the interpreter would silently
    return NaN. tensorflow-text tokenizer ops inside the model (e.g.
    `FastWordpieceTokenizer`, `WhitespaceTokenizer`) become custom ops whose
    kernels `run_tflite` / `verify_tflite` load from
    `tensorflow_text.tflite_registrar`.

    Quantization, with the accuracy and size measured on a 2-block Transformer
    encoder (hidden size 256, intermediate 1024, 1.6M parameters; outputs of
    unit scale after LayerNorm; `tests/export/test_tflite.py` asserts the
    tolerances):
    - `None`: float32; max abs difference to Keras about `2e-6` (tolerance
      `1e-5`).
    - `"float16"`: float16 weights, float32 compute; about `1e-3` (tolerance
      `1e-2`), 51% of the float32 size.
    - `"dynamic"`: int8 weights, activations quantized on the fly; about
      `0.05` (tolerance `0.1`), 27% of the float32 size.
    - `"int8"`: int8 weights and activations calibrated on
      `representative_data`, float32 inputs and outputs, ops without an int8
      kernel stay float; about `0.2` (tolerance `0.4`), 28% of the float32
      size.

    Args:
        obj: a `keras.Model` (or another Keras layer when `signatures` is
            given), or the path of a SavedModel directory.
        quantization: one of `None`, `"float16"`, `"dynamic"`, `"int8"`.
            Defaults to `None` (float32).
        representative_data: for `quantization="int8"` only: an iterable (or a
            callable returning one) of model inputs, each a dict of arrays
            keyed by input name or a list in input order, used to calibrate
            the activation ranges. For several signatures, items are
            `(signature_key, inputs)` pairs.
        signatures: for a Keras `obj`: a dict `{name: (fn, input_signature)}`
            of endpoints (`fn` calls the model's layers and returns a dict of
            named outputs; `input_signature` a list of `tf.TensorSpec`), all
            written into one flatbuffer. For a SavedModel path: the signature
            keys to convert. Defaults to the model's `serving_default`
            signature (inputs named like the model's inputs).
        allow_custom_ops: bool, let ops without a TFLite builtin become custom
            ops (you then provide their kernels). Set automatically for
            tensorflow-text ops. Defaults to `False`.
        output_path: optional path; the flatbuffer is also written there
            (through a temporary file renamed into place). The path is checked
            before conversion (`check_output_path`): not a folder, in a
            writable folder, not an existing file unless `overwrite=True`.
        overwrite: bool, replace an existing `output_path`. Defaults to
            `False`.

    Returns:
        The flatbuffer, `bytes`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_attention.layers import DotAttention
    >>> from keras_attention.export.tflite import convert_tflite, run_tflite
    >>> query = keras.Input((None, 4), name="query")
    >>> value = keras.Input((None, 4), name="value")
    >>> model = keras.Model(
    ...     {"query": query, "value": value}, {"output": DotAttention()(query, value=value)}
    ... )
    >>> flatbuffer = convert_tflite(model)
    >>> feed = {"query": np.ones((2, 3, 4), "float32"), "value": np.ones((2, 5, 4), "float32")}
    >>> run_tflite(flatbuffer, feed)["output"].shape
    (2, 3, 4)
    """
    _check_quantization(quantization, representative_data)
    check_output_path(output_path, overwrite, "convert_tflite")
    with tempfile.TemporaryDirectory(prefix="keras_attention_tflite_") as tmp:
        path, signature_keys = _saved_model_for(obj, signatures, tmp)
        custom_ops = allow_custom_ops or _has_tf_text_ops(path)
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=signature_keys)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.allow_custom_ops = custom_ops
        _set_quantization(converter, quantization, representative_data)
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises ConverterError, not public API
            if not hasattr(error, "errors") and "TF Select ops" not in str(error):
                raise
            raise ValueError(_conversion_error_message(error, obj)) from None
    ops = tflite_ops(flatbuffer)
    variables = [op for op in ops if op in _VARIABLE_OPS]
    if variables:
        raise ValueError(
            f"convert_tflite: the flatbuffer reads resource variables ({', '.join(variables)}): "
            "the variables were not frozen into constants, and the LiteRT interpreter would "
            "return NaN. Export a `keras.Model` (or endpoints through "
            "`keras.export.ExportArchive` / `model.export`), not a `tf.Module` saved with "
            f"`tf.saved_model.save`. Received: obj={_describe(obj)}"
        )
    if output_path is not None:
        write_file(output_path, flatbuffer, overwrite)
    return flatbuffer


def check_output_path(output_path, overwrite=False, where="convert_tflite"):
    """Refuses, before any conversion, an `output_path` the flatbuffer could not be written to.

    The path must not be a folder, its folder must exist and be writable, and an existing file
    is replaced only with `overwrite=True`.

    Raises:
        FileExistsError: the file exists and `overwrite=False`.
        IsADirectoryError: `output_path` is a folder.
        FileNotFoundError / NotADirectoryError / PermissionError: its folder is missing, a
            file, or not writable.
    """
    if output_path is None:
        return
    path = os.fspath(output_path)
    received = f"Received: output_path={path!r}"
    if os.path.isdir(path):
        raise IsADirectoryError(f"{where}: `output_path` is a folder, not a file. {received}")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"{where}: `output_path` exists; pass `overwrite=True` to replace it. {received}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{where}: the folder of `output_path` does not exist. {received}")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{where}: the folder of `output_path` is a file. {received}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{where}: the folder of `output_path` is not writable. {received}")


def write_file(path, data, overwrite=False):
    """Writes `data` through a temporary sibling renamed into place (never a half-written file).

    An existing file keeps its permissions; a new one gets `0o666` less the umask. With
    `overwrite=False` a file that appeared meanwhile is not replaced (`FileExistsError`).
    """
    from keras_attention.export.saved_model import file_mode

    path = os.fspath(path)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or "."
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, mode)
        if not overwrite and os.path.lexists(path):
            raise FileExistsError(
                f"{path!r} appeared during the conversion. Received: overwrite=False"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def tflite_ops(flatbuffer):
    """The op names of a flatbuffer: builtin names (`"FULLY_CONNECTED"`) and custom op names.

    Example:

    >>> import keras
    >>> from keras_attention.export.tflite import convert_tflite, tflite_ops
    >>> inputs = keras.Input((3,), name="x")
    >>> tflite_ops(convert_tflite(keras.Model(inputs, keras.layers.Dense(2)(inputs))))
    ['FULLY_CONNECTED']
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    ops = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = code.CustomCode().decode()
        if name not in ops:
            ops.append(name)
    return ops


def tflite_signature_names(flatbuffer):
    """The sorted signature names of a flatbuffer (bytes or a path), e.g. `['decode', 'prefill']`."""
    return sorted(_interpreter(_read(flatbuffer)).get_signature_list())


def run_tflite(flatbuffer, feed, signature="serving_default"):
    """Runs one signature of a flatbuffer in the LiteRT interpreter.

    Inputs are resized to the shapes of `feed` (dynamic batch and sequence
    lengths) and cast to the signature's dtypes. Custom tensorflow-text ops
    get their kernels from `tensorflow_text.tflite_registrar`.

    Args:
        flatbuffer: the `.tflite` model, `bytes` (or a path to a file).
        feed: dict of arrays keyed by the signature's input names.
        signature: the signature key. Defaults to `"serving_default"`.

    Returns:
        A dict of NumPy arrays keyed by the signature's output names.

    Example:

    >>> import numpy as np, keras
    >>> from keras_attention.export.tflite import convert_tflite, run_tflite
    >>> inputs = keras.Input((None, 3), name="x")
    >>> flatbuffer = convert_tflite(keras.Model(inputs, {"y": inputs * 2.0}))
    >>> run_tflite(flatbuffer, {"x": np.ones((1, 2, 3), "float32")})["y"].tolist()
    [[[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]]
    """
    runner, inputs = _signature_runner(_read(flatbuffer), signature)
    return runner(**_cast_feed(feed, inputs, signature))


@dataclasses.dataclass
class TFLiteReport:
    """What `verify_tflite` measured.

    Attributes:
        signature: the signature key that ran.
        max_abs_diff: output name -> max abs difference to the Keras model,
            over every example.
        size_bytes: the flatbuffer's size.
        latency_ms: median wall time of one invocation on the first example.
        ops: the op names in the flatbuffer.
        atol: the tolerance `ok` was judged by.
        ok: every difference is at most `atol` (and finite).
    """

    signature: str
    max_abs_diff: dict
    size_bytes: int
    latency_ms: float
    ops: list
    atol: float
    ok: bool

    def __str__(self):
        lines = [
            f"TFLite signature {self.signature!r}: {'OK' if self.ok else 'MISMATCH'} "
            f"(atol={self.atol:g})",
            f"  size:    {self.size_bytes:,} bytes ({self.size_bytes / 2**20:.2f} MiB)",
            f"  latency: {self.latency_ms:.3f} ms (median)",
        ]
        for name, diff in self.max_abs_diff.items():
            lines.append(f"  max abs diff {name}: {diff:.3g}")
        lines.append(f"  ops: {', '.join(self.ops)}")
        return "\n".join(lines)


def verify_tflite(
    flatbuffer, examples, model=None, signature="serving_default", atol=1e-5, repeats=20
):
    """Runs examples in the LiteRT interpreter and compares them with the Keras model.

    Args:
        flatbuffer: the `.tflite` model, `bytes` (or a path to a file).
        examples: a dict of arrays (one batch) or a list of them, keyed by the
            signature's input names.
        model: the reference: a `keras.Model` or any callable taking one
            example dict and returning a dict of outputs (or a single output,
            when the signature has one). `None` runs the flatbuffer only and
            reports no differences.
        signature: the signature key. Defaults to `"serving_default"`.
        atol: the largest max abs difference that is `ok`. Defaults to `1e-5`.
        repeats: invocations timed on the first example; the median is
            reported. Defaults to `20`.

    Returns:
        A `TFLiteReport`; `str(report)` is a readable summary.

    Example:

    >>> import numpy as np, keras
    >>> from keras_attention.layers import AdditiveAttention
    >>> from keras_attention.export.tflite import convert_tflite, verify_tflite
    >>> query = keras.Input((None, 4), name="query")
    >>> value = keras.Input((None, 4), name="value")
    >>> output = AdditiveAttention(units=8)(query, value=value)
    >>> model = keras.Model({"query": query, "value": value}, {"output": output})
    >>> rng = np.random.default_rng(0)
    >>> examples = [
    ...     {"query": rng.normal(size=(2, t, 4)).astype("float32"),
    ...      "value": rng.normal(size=(2, 6, 4)).astype("float32")} for t in (3, 5)
    ... ]
    >>> report = verify_tflite(convert_tflite(model), examples, model, repeats=3)
    >>> report.ok, report.max_abs_diff["output"] < 1e-5
    (True, True)
    """
    if isinstance(examples, dict):
        examples = [examples]
    examples = list(examples)
    if not examples or not all(isinstance(e, dict) for e in examples):
        raise ValueError(
            "verify_tflite: `examples` must be a dict of arrays or a non-empty list of them. "
            f"Received: examples={_short(examples)}"
        )
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"verify_tflite: `repeats` must be a positive int. Received: {repeats=}")
    atol = number("verify_tflite", "atol", atol, low=0.0)
    flatbuffer = _read(flatbuffer)
    runner, inputs = _signature_runner(flatbuffer, signature)
    diffs = {}
    for example in examples:
        actual = runner(**_cast_feed(example, inputs, signature))
        if model is None:
            continue
        expected = model(_model_inputs(model, example))
        if not isinstance(expected, dict):
            if len(actual) != 1:
                raise ValueError(
                    "verify_tflite: `model` returned one output but the signature has "
                    f"{sorted(actual)}; return a dict keyed by output name. "
                    f"Received: model={model!r}"
                )
            expected = {next(iter(actual)): expected}
        if sorted(expected) != sorted(actual):
            raise ValueError(
                f"verify_tflite: `model` outputs {sorted(expected)} differ from the outputs "
                f"{sorted(actual)} of signature {signature!r}. Received: model={model!r}"
            )
        for name, value in expected.items():
            value = np.asarray(keras.ops.convert_to_numpy(value))
            if value.shape != actual[name].shape:
                diff = np.inf
            else:
                diff = float(np.max(np.abs(actual[name].astype("float64") - value), initial=0.0))
            diffs[name] = max(diffs.get(name, 0.0), diff)
    feed = _cast_feed(examples[0], inputs, signature)
    runner(**feed)  # warm-up: allocation for these shapes
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(**feed)
        times.append(time.perf_counter() - start)
    ok = all(np.isfinite(d) and d <= atol for d in diffs.values())
    return TFLiteReport(
        signature=signature,
        max_abs_diff=diffs,
        size_bytes=len(flatbuffer),
        latency_ms=1e3 * float(np.median(times)),
        ops=tflite_ops(flatbuffer),
        atol=atol,
        ok=bool(ok),
    )


# -- private helpers --------------------------------------------------------------------------


def _model_inputs(model, example):
    """A single-input functional model takes its one array (a dict would warn)."""
    if isinstance(model, keras.Model) and len(model.inputs) == 1 and len(example) == 1:
        name = model.inputs[0].name
        if name in example:
            return example[name]
    return example


def _check_quantization(quantization, representative_data):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"convert_tflite: `quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "convert_tflite: `quantization='int8'` calibrates activations on "
            "`representative_data` (an iterable of input dicts); none was given. "
            "Received: representative_data=None"
        )
    if quantization != "int8" and representative_data is not None:
        raise ValueError(
            "convert_tflite: `representative_data` is only used with `quantization='int8'`. "
            f"Received: quantization={quantization!r}, representative_data={_short(representative_data)}"
        )


def _set_quantization(converter, quantization, representative_data):
    if quantization is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.representative_dataset = _representative_dataset(representative_data)


def _representative_dataset(data):
    def generate():
        items = data() if callable(data) else data
        for item in items:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                key, inputs = item
                yield key, _as_float_arrays(inputs)
            else:
                yield _as_float_arrays(item)

    return generate


def _as_float_arrays(inputs):
    if isinstance(inputs, dict):
        return {name: np.asarray(value) for name, value in inputs.items()}
    if isinstance(inputs, list | tuple):
        return [np.asarray(value) for value in inputs]
    raise ValueError(
        "convert_tflite: each item of `representative_data` must be a dict of arrays keyed "
        f"by input name or a list of arrays. Received: representative_data item={_short(inputs)}"
    )


def _saved_model_for(obj, signatures, tmp):
    """Writes `obj` as a SavedModel with frozen-able variables; returns (path, signature keys)."""
    if isinstance(obj, str | os.PathLike):
        path = os.fspath(obj)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                "convert_tflite: `obj` must be a keras.Model or a SavedModel directory (with "
                f"a saved_model.pb). Received: obj={path!r}"
            )
        if signatures is None:
            return path, None
        if isinstance(signatures, str) or not all(isinstance(s, str) for s in signatures):
            raise ValueError(
                "convert_tflite: for a SavedModel path, `signatures` is a list of signature "
                f"keys. Received: signatures={signatures!r}"
            )
        return path, list(signatures)
    if not isinstance(obj, keras.layers.Layer):
        raise ValueError(
            "convert_tflite: `obj` must be a keras.Model, a Keras layer with `signatures`, or a "
            f"SavedModel directory. Received: obj={_describe(obj)}"
        )
    path = os.path.join(tmp, "saved_model")
    if signatures is None:
        if not isinstance(obj, keras.Model):
            raise ValueError(
                "convert_tflite: a Keras layer that is not a model needs `signatures` "
                f"(`{{name: (fn, input_signature)}}`). Received: obj={_describe(obj)}"
            )
        obj.export(path, format="tf_saved_model", verbose=False)
        return path, ["serving_default"]
    if not isinstance(signatures, dict) or not signatures:
        raise ValueError(
            "convert_tflite: `signatures` must be a non-empty dict "
            "`{name: (fn, input_signature)}`. "
            f"Received: signatures={_short(signatures)}"
        )
    archive = keras.export.ExportArchive()
    archive.track(obj)
    for name, entry in signatures.items():
        if not (
            isinstance(name, str)
            and isinstance(entry, tuple | list)
            and len(entry) == 2
            and callable(entry[0])
        ):
            raise ValueError(
                "convert_tflite: each item of `signatures` must be `name: (fn, "
                f"input_signature)` with a callable `fn`. Received: signatures[{name!r}]="
                f"{_short(entry)}"
            )
        fn, input_signature = entry
        archive.add_endpoint(name, fn, input_signature=list(input_signature))
    archive.write_out(path, verbose=False)
    return path, list(signatures)


def _has_tf_text_ops(path):
    """Whether the SavedModel's graph (functions included) holds tensorflow-text ops."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
        for node in nodes:
            if node.op.startswith(_TF_TEXT_PREFIX) or node.op in _TF_TEXT_OPS:
                return True
    return False


def _conversion_error_message(error, obj):
    """A readable message: the ops that need Flex or custom kernels, the layers, the fix."""
    found = {}  # op -> (kind, [name-scope paths])
    for item in getattr(error, "errors", None) or []:
        op = item.operator.name.removeprefix("tf.")
        if not op:
            continue
        code = type(item).ErrorCode.Name(item.error_code)
        kind = "custom" if code == "ERROR_NEEDS_CUSTOM_OPS" else "flex"
        paths = [call.name.split("@")[0] for call in item.location.call if call.name]
        entry = found.setdefault(op, (kind, []))
        entry[1].extend(p for p in paths[:1] if p not in entry[1])
    text = str(error)
    for op, path in re.findall(r'fused\["([^":]+):", "([^"@]+)@', text):
        if op != "StatefulPartitionedCall":
            entry = found.setdefault(op, ("flex", []))
            if path not in entry[1]:
                entry[1].append(path)
    for listing in re.findall(r"TF Select ops: ([^\n]+)", text):
        for op in listing.split(","):
            found.setdefault(op.strip(), ("flex", []))
    layers = _layers_by_name(obj)
    lines = []
    for op, (kind, paths) in found.items():
        where = sorted({_layer_for_path(path, layers) for path in paths}) or ["unknown layer"]
        need = "the Flex (TF Select) runtime" if kind == "flex" else "a custom kernel"
        lines.append(f"  {op}: needs {need}; from {', '.join(where)}")
    hint = ""
    if "keras.layers.MultiHeadAttention" in "\n".join(lines):
        hint = (
            "use keras_attention.layers.MultiHeadAttention (its causal and padding masks "
            "lower to builtin ops) instead of keras.layers.MultiHeadAttention; otherwise "
        )
    if not lines:
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        lines.append(f"  (the converter said: {first[:300]})")
    return (
        "convert_tflite: the model needs ops that are not TFLite builtins:\n"
        + "\n".join(lines)
        + "\nFix: "
        + hint
        + "replace those layers with ones that lower to builtin ops, or keep the op outside "
        "the model (e.g. tokenization before the TFLite model). Flex ops would need the TF "
        "Select runtime on the device, which convert_tflite does not produce. "
        f"Received: obj={_describe(obj)}"
    )


def _layers_by_name(obj):
    """Layer name -> layer, for `obj` and every layer nested in it."""
    if not isinstance(obj, keras.layers.Layer):
        return {}
    found, stack = {}, [obj]
    while stack:
        layer = stack.pop()
        if layer.name in found:
            continue
        found[layer.name] = layer
        children = list(getattr(layer, "layers", []) or [])
        for value in vars(layer).values():
            values = value if isinstance(value, list | tuple) else [value]
            children.extend(v for v in values if isinstance(v, keras.layers.Layer))
        stack.extend(children)
    return found


def _layer_for_path(path, layers):
    """`'functional_1/decoder_0_1/self_attention_1/strided_slice'` -> a readable layer name.

    Name scopes carry the layer names, sometimes with a `_<n>` suffix added when
    the function was traced; the innermost scope naming a known layer wins.
    """
    parts = path.split("/")[:-1]  # the last part names the op itself
    matched = []
    for part in parts:
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layers:
                matched.append(candidate)
                break
    inner = [m for m in matched if not isinstance(layers[m], keras.Model)]
    if not inner:
        return f"name scope {'/'.join(parts) or path!r}"
    layer = layers[inner[-1]]
    return f"layer {inner[-1]!r} ({_class_name(layer)}, at {'/'.join(inner)!r})"


def _class_name(layer):
    """`keras.layers.MultiHeadAttention`, not the `keras.src...` module it lives in."""
    cls = type(layer)
    for public in ("keras.layers", "keras_attention.layers"):
        module = keras.layers if public == "keras.layers" else _our_layers()
        if getattr(module, cls.__name__, None) is cls:
            return f"{public}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _our_layers():
    from keras_attention import layers

    return layers


def _interpreter(flatbuffer):
    """A LiteRT interpreter for the flatbuffer (with tensorflow-text kernels when it needs them)."""
    from ai_edge_litert import interpreter as litert

    ops = tflite_ops(flatbuffer)
    builtin = {name for name in ops if name.isupper() or name.isdigit()}
    if set(ops) - builtin:
        import tensorflow_text

        return litert.InterpreterWithCustomOps(
            model_content=flatbuffer,
            custom_op_registerers=tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS,
        )
    return litert.Interpreter(model_content=flatbuffer)


def _signature_runner(flatbuffer, signature, interpreter=None):
    """`(runner, input details)` of one signature (on `interpreter`, or a new one)."""
    interpreter = interpreter or _interpreter(flatbuffer)
    available = sorted(interpreter.get_signature_list())
    if signature not in available:
        raise ValueError(
            f"The flatbuffer has no signature {signature!r}; it has {available}. "
            f"Received: signature={signature!r}"
        )
    runner = interpreter.get_signature_runner(signature)
    return runner, runner.get_input_details()


def _cast_feed(feed, inputs, signature):
    if not isinstance(feed, dict) or sorted(feed) != sorted(inputs):
        raise ValueError(
            f"The feed must be a dict with the inputs {sorted(inputs)} of signature "
            f"{signature!r}. Received: feed={_short(feed)}"
        )
    return {
        name: np.asarray(keras.ops.convert_to_numpy(value), dtype=inputs[name]["dtype"])
        for name, value in feed.items()
    }


def _read(flatbuffer):
    """The bytes of a `.tflite` model (given as bytes or a path), checked to be one."""
    if isinstance(flatbuffer, bytes | bytearray):
        data = bytes(flatbuffer)
    elif isinstance(flatbuffer, str | os.PathLike) and os.path.isfile(flatbuffer):
        with open(flatbuffer, "rb") as file:
            data = file.read()
    else:
        raise ValueError(
            "`flatbuffer` must be the bytes of a .tflite model or the path of a .tflite file. "
            f"Received: flatbuffer={_short(flatbuffer)}"
        )
    if data[4:8] != b"TFL3":  # the file identifier of every TFLite flatbuffer
        raise ValueError(
            "`flatbuffer` is not a TFLite model (no `TFL3` file identifier): convert one with "
            f"`keras-attention export RUN --tflite FILE`. Received: flatbuffer={_short(flatbuffer)}"
        )
    return data


def _describe(obj):
    if isinstance(obj, keras.layers.Layer):
        return f"<{type(obj).__name__} {obj.name!r}>"
    return _short(obj)


def _short(value, limit=80):
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k!r}: ..." for k in value) + "}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
