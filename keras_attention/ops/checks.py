"""Call-time checks of a layer's inputs: ranks, sizes that must agree, mask dtypes, cache indices.

Every public layer checks its inputs at every call, not only when it is built,
with `check_inputs`. An input is described by a template, one entry per axis:
an `int` (a size fixed when the layer was built, e.g. the feature depth), a
string (a size shared by every input using the same string, e.g.
`"batch_size"` or `"Tv"`) or `None` (any size).

- Sizes known when the layer is called (always on JAX and PyTorch, in eager
  TensorFlow, and for static shapes in a trace) are compared in Python; a
  mismatch raises a `ValueError` naming the layer, the argument and the shapes:
  ``AdditiveAttention: `value_mask` must have shape `(batch_size, Tv)` ...
  Received: value_mask.shape=(2, 4), value.shape=(2, 5, 4)``.
- Sizes unknown while tracing (a `None` batch or length in a functional model,
  a `tf.function` or a SavedModel signature) are compared at run time on the
  TensorFlow backend by `tf.debugging.Assert` ops with the same message and the
  received shapes (an `InvalidArgumentError`). The checked tensors are
  returned behind a control dependency on the assertions, so the check fails
  before any op that would fail on mismatched sizes.
- XLA (`jit_compile=True`) compiles Assert ops to nothing: a compiled function
  does not check sizes at run time (the static checks still run while
  tracing). The TFLite converter drops them too, adding no Flex op.
- A call whose sizes are all static adds no op to the graph.

Masks are boolean (`True` = attend / a real position) or integer `0`/`1`
(keras_hub padding masks). Float masks are refused (`check_mask_dtype`): a cast
to bool would silently invert an additive mask (`0` = keep, `-1e9` = drop).
"""

import numbers

import keras
from keras import ops


def check_inputs(owner, inputs, masks=()):
    """Checks ranks and sizes of `inputs` and `masks`; returns their tensors in order.

    Args:
        owner: the layer's class name, for error messages.
        inputs: sequence of `(name, tensor, template)`; a `None` tensor is
            skipped (and returned as `None`).
        masks: the same for masks, whose dtype is also checked
            (`check_mask_dtype`).

    Returns:
        A list of the tensors of `inputs` then `masks` (converted to tensors if
        they were Python lists). Only when a size must be compared at run time
        (TensorFlow, unknown sizes) are they new tensors, guarded by the
        assertions; otherwise they are the tensors given.

    Example:

    >>> import numpy as np
    >>> q, v = np.zeros((2, 3, 4)), np.zeros((1, 5, 4))
    >>> check_inputs("Layer", [("query", q, ("batch_size", "Tq", 4)),
    ...                        ("value", v, ("batch_size", "Tv", 4))])
    Traceback (most recent call last):
    ...
    ValueError: Layer: `value` must have shape `(batch_size, Tv, 4)` with `batch_size` = 2 as in `query`. Received: value.shape=(1, 5, 4), query.shape=(2, 3, 4)
    """
    entries = []
    for is_mask, group in ((False, inputs), (True, masks)):
        for name, x, template in group:
            if x is not None:
                x = _as_tensor(x)
                if is_mask:
                    check_mask_dtype(owner, name, x)
                check_rank(owner, name, x, template)
            entries.append((name, x, template))
    runtime = _compare_sizes(owner, [e for e in entries if e[1] is not None])
    tensors = [x for _, x, _ in entries]
    if not runtime:
        return tensors
    return _guard(owner, tensors, runtime)


def check_rank(owner, name, x, template):
    """Raises `ValueError` unless `x` has the rank of `template`."""
    if len(x.shape) != len(template):
        raise ValueError(
            f"{owner}: `{name}` must have rank {len(template)} `{describe_template(template)}`. "
            f"Received: {name}.shape={_shape(x)}"
        )


def check_mask_dtype(owner, name, mask):
    """Raises `ValueError` if `mask` is not boolean or integer (`0`/`1`).

    Example:

    >>> import numpy as np
    >>> check_mask_dtype("Layer", "value_mask", np.zeros((2, 3), "float32"))
    Traceback (most recent call last):
    ...
    ValueError: Layer: `value_mask` must be a boolean mask (True = attend) or an integer 0/1 mask; float masks are refused, as casting them to bool would invert an additive mask. Convert an additive mask (0 = keep, large negative = drop) with `mask == 0`, and a 0/1 float mask with `ops.cast(mask, "bool")`. Received: value_mask.dtype=float32
    """
    if mask is None:
        return
    dtype = keras.backend.standardize_dtype(mask.dtype)
    if dtype == "bool" or "int" in dtype:
        return
    prefix = f"{owner}: " if owner else ""
    raise ValueError(
        f"{prefix}`{name}` must be a boolean mask (True = attend) or an integer 0/1 mask; "
        "float masks are refused, as casting them to bool would invert an additive mask. "
        "Convert an additive mask (0 = keep, large negative = drop) with `mask == 0`, and a "
        f'0/1 float mask with `ops.cast(mask, "bool")`. Received: {name}.dtype={dtype}'
    )


def describe_template(template):
    """`("batch_size", "Tv", 4)` -> `"(batch_size, Tv, 4)"`; `None` entries print as `...`."""
    return "(" + ", ".join("..." if d is None else str(d) for d in template) + ")"


def static_int(value):
    """`value` as a Python int if it is known now (an int, an eager or constant tensor), else `None`."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

        known = tf.get_static_value(value)
        return None if known is None else int(known)
    try:
        return int(value)
    except Exception:  # a JAX tracer or another symbolic value
        return None


def check_index_range(owner, name, index, size, length, length_name):
    """Checks `0 <= index` and `index + size <= length` for a write of `size` positions.

    `index` known now (an int, an eager tensor): raises `ValueError`. Traced
    on TensorFlow: returns `index` behind a `tf.debugging.Assert` (an
    `InvalidArgumentError` at run time); XLA drops the assertion. Elsewhere
    `index` is returned unchecked.
    """
    known, size_now, length_now = static_int(index), static_int(size), static_int(length)
    message = (
        f"{owner}: `{name}` must be in [0, {length_name} - length of this call] so that the "
        f"write fits in the `{length_name}` positions."
    )
    if known is not None and size_now is not None and length_now is not None:
        if known < 0 or known + size_now > length_now:
            raise ValueError(
                f"{message} Received: {name}={known}, length of this call={size_now}, "
                f"{length_name}={length_now}"
            )
        return index
    if keras.backend.backend() != "tensorflow":
        return index
    import tensorflow as tf  # noqa: PLC0415

    index_t = tf.cast(index, "int32")
    ok = tf.logical_and(index_t >= 0, index_t + tf.cast(size, "int32") <= tf.cast(length, "int32"))
    data = [message, f"Received: {name}=", index_t, "size=", size, f"{length_name}=", length]
    assertion = tf.debugging.Assert(ok, data)
    with tf.control_dependencies([assertion]):
        return tf.identity(index)


# -- helpers ----------------------------------------------------------------------------------


def _as_tensor(x):
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    return ops.convert_to_tensor(x)


def _shape(x):
    return tuple(x.shape)


def _compare_sizes(owner, entries):
    """Compares fixed and shared sizes; raises on static mismatches, returns run-time checks.

    A run-time check is `(name, x, axis, expected, message, ref)`: `expected` is an int or
    `(ref_tensor, ref_axis)`.
    """
    runtime = []
    occurrences = {}
    for name, x, template in entries:
        for axis, dim in enumerate(template):
            size = x.shape[axis]
            if isinstance(dim, int) and not isinstance(dim, bool):
                if size is None:
                    runtime.append((name, x, template, axis, dim, None))
                elif size != dim:
                    raise ValueError(
                        f"{owner}: `{name}` must have shape `{describe_template(template)}` "
                        f"(axis {axis} must be {dim}, the size the layer was built for). "
                        f"Received: {name}.shape={_shape(x)}"
                    )
            elif isinstance(dim, str):
                occurrences.setdefault(dim, []).append((name, x, template, axis))
    for symbol, occ in occurrences.items():
        known = [o for o in occ if o[1].shape[o[3]] is not None]
        ref = known[0] if known else occ[0]
        ref_name, ref_x, _, ref_axis = ref
        for name, x, template, axis in occ:
            if x is ref_x and axis == ref_axis:
                continue
            size, ref_size = x.shape[axis], ref_x.shape[ref_axis]
            if size is not None and ref_size is not None:
                if size != ref_size:
                    raise ValueError(
                        f"{owner}: `{name}` must have shape `{describe_template(template)}` with "
                        f"`{symbol}` = {ref_size} as in `{ref_name}`. Received: "
                        f"{name}.shape={_shape(x)}, {ref_name}.shape={_shape(ref_x)}"
                    )
            elif x is not ref_x:
                expected = ref_size if ref_size is not None else (ref_x, ref_axis)
                runtime.append((name, x, template, axis, expected, (symbol, ref_name, ref_x)))
    return runtime


def _guard(owner, tensors, runtime):
    """Adds the run-time size assertions (TensorFlow) and returns `tensors` behind them."""
    if keras.backend.backend() != "tensorflow":
        return tensors
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    if tf.executing_eagerly():  # eager tensors have static shapes: nothing left to check
        return tensors
    assertions = []
    for name, x, template, axis, expected, ref in runtime:
        shape = tf.shape(x)
        if isinstance(expected, int):
            wanted = tf.constant(expected, shape.dtype)
            what = f"axis {axis} must be {expected}"
            data = [f"Received: {name}.shape=", shape]
        else:
            ref_x, ref_axis = expected
            wanted = tf.cast(tf.shape(ref_x)[ref_axis], shape.dtype)
            symbol, ref_name, _ = ref
            what = f"`{symbol}` as in `{ref_name}`"
            data = [f"Received: {name}.shape=", shape, f"{ref_name}.shape=", tf.shape(ref_x)]
        message = f"{owner}: `{name}` must have shape `{describe_template(template)}`"
        assertions.append(
            tf.debugging.Assert(tf.equal(shape[axis], wanted), [f"{message} ({what}).", *data])
        )
    with tf.control_dependencies(assertions):
        guarded = [None if x is None else tf.identity(x) for x in tensors]
    for old, new in zip(tensors, guarded, strict=True):
        mask = getattr(old, "_keras_mask", None)
        if mask is not None:
            new._keras_mask = mask
    return guarded
