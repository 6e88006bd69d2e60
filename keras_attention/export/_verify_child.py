"""The fresh process of `verify_export`: load a SavedModel the way TF Serving does and answer REST.

Run as `python -m keras_attention.export._verify_child JOB.json`. The job file names the export,
the signature, the REST bodies (`{format: body}`) and where to write the answers: a JSON report of
the signature defs and an `.npz` of the outputs, keyed `<format>/<output name>` (string outputs
go in the report instead, base64 per element, so nothing is pickled).

TF Serving's `SavedModelBundle` loads a SavedModel into a TF1 session with the `serve` tag set and
runs a `SignatureDef` by feeding and fetching the tensors it names; this does the same with
`tf.compat.v1.saved_model.loader.load`, after turning each REST body into a serialized
`PredictRequest` (as the model server does) and reading its tensors back with `tf.make_ndarray`.
No Keras is needed here: the export must stand on its own.
"""

import json
import os
import sys

PREDICT_METHOD = "tensorflow/serving/predict"


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from keras_attention.export._rest import rest_to_predict_request

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = _load(tf, session, job["path"])
        signatures = {
            key: _describe(tf, signature)
            for key, signature in sorted(meta_graph.signature_def.items())
            if not key.startswith("__")
        }
        report = {"signatures": signatures, "problems": []}
        name = job["signature_name"]
        if name not in meta_graph.signature_def:
            report["problems"].append(
                f"The export has no signature {name!r}; it has {sorted(signatures)}. "
                f"Received: signature_name={name!r}"
            )
            return _write(job, report, {})
        signature = meta_graph.signature_def[name]
        if signature.method_name != PREDICT_METHOD:
            report["problems"].append(
                f"Signature {name!r} has method_name {signature.method_name!r}; TF Serving's "
                f"predict API needs {PREDICT_METHOD!r}."
            )
        input_dtypes = {k: tf.as_dtype(v.dtype) for k, v in signature.inputs.items()}
        fetches = {k: v.name for k, v in signature.outputs.items()}
        outputs = {}
        for format, body in job["bodies"].items():
            request = rest_to_predict_request(
                {**body, "signature_name": name}, input_dtypes, model_name=job["model_name"]
            )
            wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())
            feed, problems = {}, []
            for key, tensor_proto in wire.inputs.items():
                value = tf.make_ndarray(tensor_proto)
                problem = _shape_problem(key, value.shape, signature.inputs[key].tensor_shape)
                if problem:
                    problems.append(f"{format}: {problem}")
                feed[signature.inputs[key].name] = value
            if problems:
                report["problems"] += problems
                continue
            results = session.run(fetches, feed_dict=feed)
            for key, value in results.items():
                outputs[f"{format}/{key}"] = np.asarray(value)
    return _write(job, report, outputs)


def _load(tf, session, path):
    try:
        return tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    except tf.errors.NotFoundError as error:
        if "Op type not registered" not in str(error):
            raise
        import tensorflow_text  # noqa: F401  (registers the tokenizer ops, as TF Serving links them)

        return tf.compat.v1.saved_model.loader.load(session, ["serve"], path)


def _describe(tf, signature):
    def tensors(infos):
        return {
            key: {
                "dtype": tf.as_dtype(info.dtype).name,
                "shape": None
                if info.tensor_shape.unknown_rank
                else [None if d.size < 0 else d.size for d in info.tensor_shape.dim],
                "tensor": info.name,
            }
            for key, info in sorted(infos.items())
        }

    return {
        "method_name": signature.method_name,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
    }


def _shape_problem(key, shape, tensor_shape):
    if tensor_shape.unknown_rank:
        return None
    expected = [d.size for d in tensor_shape.dim]
    ok = len(shape) == len(expected) and all(
        e < 0 or e == s for s, e in zip(shape, expected, strict=True)
    )
    if ok:
        return None
    return f"input {key!r} has shape {list(shape)}, the signature expects {expected} (-1: any)"


def _write(job, report, outputs):
    import base64

    import numpy as np

    # String outputs (object arrays of bytes) travel in the JSON report, base64 per element, so
    # the `.npz` never needs pickling.
    strings = {key: value for key, value in outputs.items() if value.dtype == np.dtype(object)}
    report["string_outputs"] = {
        key: {
            "shape": list(value.shape),
            "b64": [base64.b64encode(bytes(item)).decode("ascii") for item in value.ravel()],
        }
        for key, value in strings.items()
    }
    np.savez(job["outputs_path"], **{k: v for k, v in outputs.items() if k not in strings})
    with open(job["report_path"], "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
