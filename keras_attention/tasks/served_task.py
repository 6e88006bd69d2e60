"""A task's SavedModel behind the task's own `predict` API (what `keras-attention predict` loads)."""

import os

import tensorflow as tf

from keras_attention.tasks.registry import get_task, task_names
from keras_attention.tasks.serving_status import decode_statuses
from keras_attention.utils.files import latest_version


class ServedTask:
    """Runs a SavedModel written by `keras_attention.export.export_task` like the task itself.

    The registered task whose serving signatures the export has is found from
    the signatures' outputs (e.g. a translator's `serving_default` answers
    `translation`); `predict` calls `serving_default`, `predict_with_attention`
    the `attention` signature when the task has one. The tensorflow-text ops
    are registered before loading.

    Args:
        path: a version directory (with `saved_model.pb`), or a TF Serving
            model directory (its highest version is loaded).

    Attributes:
        path: the version directory loaded.
        task_class: the registered task class of the export.
    """

    def __init__(self, path):
        import pipelines.text  # noqa: F401  (registers the tensorflow-text ops)

        self.path = latest_version(path)
        self._signatures = tf.saved_model.load(self.path).signatures
        self.task_class = _task_class(self.path, self._signatures)

    def predict(self, inputs):
        """Inputs in (strings; image paths or bytes for a captioner), strings out (`serving_default`)."""
        output = getattr(self.task_class, "prediction_output", None)
        if output is None:
            (output,) = set(self.task_class.serving_outputs["serving_default"]) - {"status"}
        result = self._call("serving_default", inputs)[output]
        return [value.decode("utf-8") for value in result.numpy()]

    def predict_with_status(self, inputs):
        """`predict` with the `status` of each input (`keras_attention.tasks.serving_status`).

        Returns `{"outputs": [str], "status": [str]}`; an export written before the
        `status` output existed answers `"ok"` for every input.
        """
        output = getattr(self.task_class, "prediction_output", None)
        if output is None:
            output = next(o for o in self.task_class.serving_outputs["serving_default"]
                          if o != "status")  # fmt: skip
        result = self._call("serving_default", inputs)
        status = result.get("status")
        return {
            "outputs": [value.decode("utf-8") for value in result[output].numpy()],
            "status": ["ok"] * len(inputs) if status is None else decode_statuses(status),
        }

    def predict_with_attention(self, inputs):
        """The `attention` signature's outputs, as the task's `predict_with_attention` gives them."""
        if "attention" not in self._signatures:
            raise ValueError(
                f"the SavedModel {self.path!r} has no `attention` signature. "
                f"Received: signatures={sorted(self._signatures)}"
            )
        outputs = self._call("attention", inputs)
        result = self.task_class.unpack_attention(
            {key: value.numpy() for key, value in outputs.items()}, len(inputs)
        )
        if "outputs" not in result:
            result["outputs"] = result["translations"]
        return result

    def write_attention_png(self, result, row, label, path):
        """The task's own plot of a `predict_with_attention` row (see the task class)."""
        return self.task_class.write_attention_png(result, row, label, path)

    def _call(self, name, inputs):
        if isinstance(inputs, str | bytes):  # a string is iterable: it would be one per character
            raise ValueError(
                f"ServedTask: inputs must be a list (wrap one input in a list). Received: "
                f"inputs={inputs[:80]!r}"
            )
        signature = self._signatures[name]
        (argument,) = signature.structured_input_signature[1]
        batch = self.task_class.serving_input(list(inputs))
        try:
            return signature(**{argument: batch})
        except tf.errors.InvalidArgumentError:
            explain = getattr(self.task_class, "explain_failed_batch", None)
            if explain is not None:  # e.g. a captioner names the image that does not decode
                explain(batch, list(inputs))
            raise


def is_saved_model(path):
    """Whether `path` is a SavedModel version directory or a model directory with versions."""
    return os.path.isfile(os.path.join(latest_version(path), "saved_model.pb"))


def _task_class(path, signatures):
    for name in task_names():
        task_cls = get_task(name)
        expected = getattr(task_cls, "serving_outputs", {})
        # `status` is optional: exports written before it existed are still recognised.
        if expected and all(
            key in signatures
            and set(outputs) - {"status"} == set(signatures[key].structured_outputs) - {"status"}
            for key, outputs in expected.items()
        ):
            return task_cls
    raise ValueError(
        f"the SavedModel {path!r} is not a task export (its signatures match no task of "
        f"{task_names()}; write one with `keras-attention export RUN_DIR`). "
        f"Received: signatures={sorted(signatures)}"
    )
