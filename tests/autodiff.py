"""Gradients and compiled calls of Keras layers and models, the same way on every backend.

The tests describe what to differentiate or compile as a Python function of
backend tensors that calls the layer (`fn(tensors) -> scalar loss`); these
helpers run it with each backend's own machinery:

- TensorFlow: `tf.GradientTape`, `tf.function(jit_compile=True)`.
- JAX: `jax.value_and_grad` / `jax.jit` over a pure function of the variables'
  values: the layer is called inside a `keras.StatelessScope` mapping its
  variables to traced values, which is what `Layer.stateless_call` does. It
  calls the layer through `__call__` (not `stateless_call`, which runs `call`
  directly): the inputs are then cast to the compute dtype under mixed
  precision and implicit masks are handled, as in any other call.
- PyTorch: autograd on input tensors with `requires_grad` and on the
  variables' `torch.nn.Parameter`s; `torch.compile` for compiled calls.

Everything returned is NumPy.
"""

import keras
import numpy as np

# `torch.compile` backend. "aot_eager" traces the call with Dynamo and AOTAutograd (graph
# capture, functionalization, decompositions: what breaks a layer under compilation breaks
# here too) but runs the captured graph with eager kernels: no C++ code generation, which
# costs Inductor 6-17 s per layer on this CPU (aot_eager: 1-4 s, the "eager" backend ~5% less).
TORCH_COMPILE_BACKEND = "aot_eager"


def backend():
    return keras.backend.backend()


def to_numpy(x):
    return None if x is None else np.asarray(keras.ops.convert_to_numpy(x))


def value_and_gradients(layer, fn, inputs, wrt=(), has_aux=False):
    """`fn(tensors)`, and its gradients with respect to `layer`'s weights and inputs.

    Args:
        layer: a built Keras layer or model; the gradients are taken with
            respect to its `trainable_variables`.
        fn: `fn(tensors) -> scalar`, with `tensors` a dict of backend tensors
            made from `inputs`; it calls `layer`. With `has_aux`, `fn` returns
            `(scalar, aux)`, `aux` a structure of tensors (or `None`s) computed
            in the same pass (e.g. the layer's outputs).
        inputs: dict of NumPy arrays.
        wrt: names of `inputs` to differentiate with respect to.
        has_aux: see `fn`.

    Returns:
        `(loss, variable_grads, input_grads)`, and `aux` (NumPy) last with
        `has_aux`: a float, a list with one NumPy array per trainable variable
        (`None` where the backend reports no gradient: TensorFlow and PyTorch
        for an unconnected weight; JAX gives zeros there) and a dict
        `name -> array or None` over `wrt`.

    On JAX the forward and backward pass are compiled together (`jax.jit` of
    `jax.value_and_grad`): one XLA compilation instead of one per operation
    and shape, which eager JAX pays for every new shape and dtype.
    """
    full_fn = fn if has_aux else (lambda tensors: (fn(tensors), None))
    name = backend()
    if name == "tensorflow":
        loss, aux, var_grads, input_grads = _tf_gradients(layer, full_fn, inputs, wrt)
    elif name == "jax":
        loss, aux, var_grads, input_grads = _jax_gradients(layer, full_fn, inputs, wrt)
    elif name == "torch":
        loss, aux, var_grads, input_grads = _torch_gradients(layer, full_fn, inputs, wrt)
    else:
        raise NotImplementedError(f"no gradients for the {name} backend")
    results = (
        float(to_numpy(loss)),
        [to_numpy(g) for g in var_grads],
        {k: to_numpy(g) for k, g in zip(wrt, input_grads, strict=True)},
    )
    if has_aux:
        results += (keras.tree.map_structure(to_numpy, aux, none_is_leaf=False),)
    return results


def _tf_gradients(layer, fn, inputs, wrt):
    import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    with tf.GradientTape() as tape:
        watched = [tensors[k] for k in wrt]
        tape.watch(watched)
        loss, aux = fn(tensors)
    variables = layer.trainable_variables
    grads = tape.gradient(loss, [v.value for v in variables] + watched)
    return loss, aux, grads[: len(variables)], grads[len(variables) :]


def _jax_gradients(layer, fn, inputs, wrt):
    import jax  # noqa: PLC0415

    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    trainable = layer.trainable_variables
    others = layer.non_trainable_variables

    def pure(trainable_values, wrt_values, other_values):
        mapping = list(zip(trainable, trainable_values, strict=True))
        mapping += list(zip(others, other_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return fn({**tensors, **wrt_values})

    grad_fn = jax.jit(jax.value_and_grad(pure, argnums=(0, 1), has_aux=True))
    (loss, aux), (var_grads, input_grads) = grad_fn(
        [v.value for v in trainable], {k: tensors[k] for k in wrt}, [v.value for v in others]
    )
    return loss, aux, var_grads, [input_grads[k] for k in wrt]


def _torch_gradients(layer, fn, inputs, wrt):
    import torch  # noqa: PLC0415

    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    for k in wrt:
        tensors[k] = tensors[k].detach().requires_grad_(True)
    variables = layer.trainable_variables
    loss, aux = fn(tensors)
    targets = [v.value for v in variables] + [tensors[k] for k in wrt]
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, targets, allow_unused=True)
    else:  # the loss depends on nothing differentiable (e.g. a position encoding's shape)
        grads = [None] * len(targets)
    aux = keras.tree.map_structure(
        lambda x: x.detach() if hasattr(x, "detach") else x, aux, none_is_leaf=False
    )
    return loss.detach(), aux, grads[: len(variables)], grads[len(variables) :]


def jit_function(layer, fn):
    """`fn` compiled by the backend's compiler; `fn(*args)` calls `layer` (a built layer or model).

    TensorFlow: `tf.function(jit_compile=True)` (XLA); JAX: `jax.jit` over
    the variables' values (`keras.StatelessScope`); PyTorch: `torch.compile`
    (`TORCH_COMPILE_BACKEND`). The returned function takes NumPy arrays or
    tensors (nested in lists, tuples, dicts) and returns `fn`'s results.
    """
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf  # noqa: PLC0415

        return tf.function(fn, jit_compile=True)
    if name == "jax":
        import jax  # noqa: PLC0415

        variables = list(layer.variables)

        def pure(values, args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return fn(*args)

        compiled = jax.jit(pure)
        return lambda *args: compiled([v.value for v in variables], _to_tensors(args))
    if name == "torch":
        import torch  # noqa: PLC0415

        compiled = torch.compile(fn, backend=TORCH_COMPILE_BACKEND, dynamic=False, fullgraph=False)

        def run(*args):
            with torch.no_grad():
                return compiled(*_to_tensors(args))

        return run
    raise NotImplementedError(f"no compiler for the {name} backend")


def _to_tensors(tree):
    return keras.tree.map_structure(
        lambda x: keras.ops.convert_to_tensor(x) if isinstance(x, np.ndarray) else x, tree
    )
