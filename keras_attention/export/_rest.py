"""TF Serving REST bodies -> `PredictRequest` protos, following the REST API semantics.

TF Serving's REST API (`POST /v1/models/<name>[/versions/<v>]:predict`) takes a JSON body in one of
two formats, which its model server turns into a `tensorflow.serving.PredictRequest`:

- row format, `{"signature_name": ..., "instances": [...]}`: a list of examples. With named inputs
  every instance is a dict `{input_name: value}`; the values of one input are stacked along a new
  axis 0 (every instance must name every input). With a single input an instance may be the bare
  value, and the list itself is the batched tensor.
- columnar format, `{"signature_name": ..., "inputs": ...}`: a dict `{input_name: value}` whose
  values are whole tensors (no batch axis is added and inputs need not share a first dimension), or
  a bare value for a signature with a single input.

Values are nested JSON lists parsed with the dtype the signature declares for that input; a string
input may carry bytes as `{"b64": "<base64>"}`.

Example:

>>> body = {"instances": [{"x": [1.0, 2.0], "n": 3}, {"x": [3.0, 4.0], "n": 5}]}
>>> request = rest_to_predict_request(body, {"x": "float32", "n": "int32"}, model_name="m")
>>> import tensorflow as tf
>>> tf.make_ndarray(request.inputs["x"]).tolist(), tf.make_ndarray(request.inputs["n"]).tolist()
([[1.0, 2.0], [3.0, 4.0]], [3, 5])
>>> request.model_spec.signature_name
'serving_default'
"""

import base64

import numpy as np


def rest_to_predict_request(body, input_dtypes, model_name="model", version=None):
    """Converts a REST predict body (`instances` or `inputs`) into a `PredictRequest` proto.

    Args:
        body: the parsed JSON body (a dict), with exactly one of `"instances"` (row format) or
            `"inputs"` (columnar format) and an optional `"signature_name"`.
        input_dtypes: dict `{input_name: dtype}` of the signature's inputs (numpy dtypes, names
            such as `"float32"`, or `tf.DType`s); values are parsed with these dtypes.
        model_name: the model name for `model_spec.name`. Defaults to `"model"`.
        version: optional int, `model_spec.version`.

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest`.

    Raises:
        ValueError: on a body that TF Serving would reject (both or neither format key, unknown
            or missing inputs, instances with different keys or shapes).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    arrays = rest_to_arrays(body, input_dtypes)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = body.get("signature_name", "serving_default")
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, array in arrays.items():
        dtype = tf.as_dtype(_numpy_dtype(input_dtypes[name]))
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    return request


def rest_to_arrays(body, input_dtypes):
    """The input arrays `{input_name: np.ndarray}` that a REST predict body describes.

    Args:
        body: the parsed JSON body; see `rest_to_predict_request`.
        input_dtypes: dict `{input_name: dtype}` of the signature's inputs.

    Returns:
        dict `{input_name: np.ndarray}` with the signature's dtypes.
    """
    if not isinstance(body, dict):
        raise ValueError(f"A REST predict body must be a JSON object. Received: body={body!r:.80}")
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise ValueError(
            "A REST predict body needs exactly one of 'instances' (row format) and 'inputs' "
            f"(columnar format). Received: keys={sorted(body)}"
        )
    names = list(input_dtypes)
    if has_rows:
        values = _rows_to_columns(body["instances"], names)
    else:
        values = body["inputs"]
        if not (isinstance(values, dict) and _is_named(values, names)):
            values = {_single_input_name(names, "inputs"): values}
    unknown = sorted(set(values) - set(names))
    missing = sorted(set(names) - set(values))
    if unknown or missing:
        raise ValueError(
            f"The REST body's inputs must be the signature's inputs {sorted(names)}. "
            f"Received: unknown={unknown}, missing={missing}"
        )
    return {name: _parse_value(values[name], input_dtypes[name], name) for name in names}


def arrays_to_rest(arrays, format):
    """A REST predict body in `format` (`"instances"` or `"inputs"`) for batched input arrays.

    Row format: one dict per example (axis 0 of every array); columnar format: one whole nested
    list per input. Bytes become `{"b64": ...}`.

    Example:

    >>> arrays_to_rest({"x": np.array([[1.0, 2.0], [3.0, 4.0]], "float32")}, "instances")
    {'instances': [{'x': [1.0, 2.0]}, {'x': [3.0, 4.0]}]}
    >>> arrays_to_rest({"x": np.array([[1.0, 2.0], [3.0, 4.0]], "float32")}, "inputs")
    {'inputs': {'x': [[1.0, 2.0], [3.0, 4.0]]}}
    """
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    empty = [name for name, a in arrays.items() if a.ndim > 1 and a.shape[0] == 0]
    if empty:  # `[]` in JSON: TF Serving would read shape `[0]`, not `[0, ...]`
        raise ValueError(
            "JSON cannot carry the shape of an empty batch (it is `[]`, read as shape [0]); "
            f"send at least one example. Received: empty batches of {sorted(empty)} with shapes "
            f"{[arrays[name].shape for name in sorted(empty)]}"
        )
    if format == "inputs":
        return {"inputs": {name: _to_json(a) for name, a in arrays.items()}}
    if format != "instances":
        raise ValueError(f"`format` must be 'instances' or 'inputs'. Received: format={format!r}")
    sizes = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(
            "The row format ('instances') needs every input batched along axis 0 with the same "
            f"size. Received: batch sizes={sizes}"
        )
    batch = next(iter(sizes.values()))
    if batch == 0:  # TF Serving refuses an empty `instances` list
        raise ValueError(
            "The row format ('instances') cannot send a batch of 0 (TF Serving refuses an empty "
            f"list). Received: batch sizes={sizes}"
        )
    return {
        "instances": [{name: _to_json(a[i]) for name, a in arrays.items()} for i in range(batch)]
    }


# -- helpers -----------------------------------------------------------------------------------


def _is_named(value, names):
    """Whether a JSON dict names inputs (rather than being a single `{"b64": ...}` value)."""
    return not (set(value) == {"b64"} and "b64" not in names)


def _single_input_name(names, field):
    if len(names) != 1:
        raise ValueError(
            f"A bare (unnamed) value in '{field}' needs a signature with exactly one input; this "
            f"one has {sorted(names)}. Received: a value that is not a dict of named inputs"
        )
    return names[0]


def _rows_to_columns(instances, names):
    if not isinstance(instances, list) or not instances:
        raise ValueError(
            "'instances' must be a non-empty list of examples. "
            f"Received: instances={instances!r:.80}"
        )
    named = [isinstance(row, dict) and _is_named(row, names) for row in instances]
    if not any(named):  # single input: the list is the batched tensor
        return {_single_input_name(names, "instances"): instances}
    if not all(named):
        raise ValueError(
            "'instances' must be all dicts of named inputs or all bare values. "
            f"Received: instances of types {sorted({type(row).__name__ for row in instances})}"
        )
    keys = set(instances[0])
    for i, row in enumerate(instances):
        if set(row) != keys:
            raise ValueError(
                "Every instance must name the same inputs. "
                f"Received: instances[0] keys={sorted(keys)}, instances[{i}] keys={sorted(row)}"
            )
    return {key: [row[key] for row in instances] for key in keys}


def _numpy_dtype(dtype):
    if hasattr(dtype, "as_numpy_dtype"):  # tf.DType
        return np.dtype(dtype.as_numpy_dtype)
    if dtype in ("string", "str", bytes):
        return np.dtype(object)
    return np.dtype(dtype)


def _decode_strings(value):
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def _parse_value(value, dtype, name):
    dtype = _numpy_dtype(dtype)
    try:
        if dtype == np.dtype(object):
            return np.array(_decode_strings(value), dtype=object)
        array = np.array(value)
        if array.dtype == np.dtype(object) or array.dtype.kind in "US":
            raise ValueError("ragged or non-numeric nested lists")
        if dtype.kind in "iu" and array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise ValueError(f"non-integer values for an {dtype} input")
        return array.astype(dtype)
    except ValueError as error:
        raise ValueError(
            f"The REST value of input {name!r} cannot be parsed as a dense {dtype} tensor "
            f"({error}). Received: {name}={value!r:.80}"
        ) from None


def _to_json(array):
    if isinstance(array, bytes | str):  # one element of a string (object) array
        return _encode_strings(array)
    if array.dtype == np.dtype(object) or array.dtype.kind == "S":
        return _encode_strings(array.tolist())
    return array.tolist()


def _encode_strings(value):
    if isinstance(value, list):
        return [_encode_strings(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return value
