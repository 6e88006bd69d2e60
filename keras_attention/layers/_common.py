"""Argument handling shared by the layers: weight options, initializers, position offsets.

Argument checks and mask helpers shared with models, tasks and pipelines live in
`keras_attention.utils`.
"""

import numbers

import keras
from keras import ops

from keras_attention.ops.checks import static_int


class WeightOptionsMixin:
    """Holds `kernel_*` and `bias_*` options, creates weights with them and serializes them."""

    def _set_weight_options(
        self,
        kernel_initializer,
        bias_initializer,
        kernel_regularizer,
        bias_regularizer,
        kernel_constraint,
        bias_constraint,
    ):
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _add_kernel(self, name, shape):
        return self.add_weight(
            name=name,
            shape=shape,
            # A fresh initializer per weight: a seeded initializer object shared by two
            # weights would give both the same values.
            initializer=clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def _add_bias(self, name, shape):
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=clone_initializer(self.bias_initializer),
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def _weight_options_config(self):
        return {
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }

    def _sublayer_weight_options(self):
        """The options as keyword arguments for a sublayer, with fresh initializers."""
        return {
            **self._weight_options_config(),
            "kernel_initializer": clone_initializer(self.kernel_initializer),
            "bias_initializer": clone_initializer(self.bias_initializer),
        }


def clone_initializer(initializer):
    return initializer.__class__.from_config(initializer.get_config())


def position_offset(layer_name, name, value):
    """Returns a checked position offset: a non-negative int, or a scalar integer tensor.

    A tensor's value is checked when it is known now (an eager or constant
    tensor); while tracing it is not known, so it is not checked here.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value >= 0:
            return int(value)
        received = repr(value)
    elif hasattr(value, "dtype") and hasattr(value, "shape"):
        dtype = keras.backend.standardize_dtype(value.dtype)
        known = None
        if "int" in dtype and len(value.shape) == 0:
            known = static_int(value)
            if known is None or known >= 0:
                return value
        value_text = "" if known is None else f" value={known}"
        received = f"<tensor shape={tuple(value.shape)} dtype={dtype}{value_text}>"
    else:
        received = repr(value)
    raise ValueError(
        f"{layer_name}: `{name}` must be a non-negative int or a scalar integer tensor. "
        f"Received: {name}={received}"
    )


def check_positions(layer_name, length, start_index, sequence_length):
    """Raises if a `start_index + length` known now exceeds `sequence_length`.

    `start_index` may be a tensor whose value is known now (eager, constant).
    """
    if not isinstance(start_index, int) and hasattr(start_index, "shape"):
        start_index = static_int(start_index)
    known = isinstance(length, int) and isinstance(start_index, int)
    if known and start_index + length > sequence_length:
        raise ValueError(
            f"{layer_name}: the input covers positions up to {start_index + length - 1}, "
            f"beyond the `sequence_length` of the layer. Received: "
            f"sequence_length={sequence_length}, seq_len={length}, start_index={start_index}"
        )


def fixed_table(layer, key, make):
    """The float32 tensor of one of `layer`'s fixed tables, e.g. rotary frequencies.

    `make()` returns the table as a NumPy array. On PyTorch the tensor is made once
    per `key` and kept on the layer: converting a NumPy array inside `torch.compile`
    breaks the graph (Keras reads the array's dtype), so a layer that made its table
    when it was built compiles without that break. Elsewhere it is converted at every
    call, a constant of the TensorFlow graph or JAX trace (a kept tensor could belong
    to another graph or trace).
    """
    if keras.backend.backend() != "torch":
        return ops.convert_to_tensor(make(), "float32")
    tables = getattr(layer, "_fixed_tables", None)
    if tables is None:
        layer._fixed_tables = {}
        tables = layer._fixed_tables
    if key not in tables:
        tables[key] = ops.convert_to_tensor(make(), "float32")
    return tables[key]
