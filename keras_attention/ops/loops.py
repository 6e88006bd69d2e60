"""Loops that every backend can differentiate and compile."""

import keras
from keras import ops


def step_loop(num_steps, body, loop_vars, maximum_iterations=None):
    """`loop_vars = body(t, *loop_vars)` for `t = 0, ..., num_steps - 1`; returns `loop_vars`.

    On TensorFlow (and for a `num_steps` that is a tensor) this is
    `ops.while_loop` over a counter: one `tf.while_loop` in a trace, which XLA
    and the TFLite converter take and which TensorFlow differentiates
    (`maximum_iterations` bounds it, as XLA needs to differentiate it). On JAX
    and PyTorch the number of steps is a Python int: JAX runs
    `ops.fori_loop` with static bounds (a `lax.scan`, which reverse-mode
    differentiation needs: a `lax.while_loop` has no gradient), PyTorch a
    Python loop. Zero steps return `loop_vars` without tracing `body` (whose
    slices of an empty axis JAX refuses).

    Args:
        num_steps: int or scalar int tensor.
        body: `body(t, *loop_vars) -> loop_vars` (a tuple of the same structure).
        loop_vars: tuple of tensors (or nested structures of them).
        maximum_iterations: optional bound for the TensorFlow while loop.

    Returns:
        The final `loop_vars`, a tuple.

    Example:

    >>> import numpy as np
    >>> total, = step_loop(4, lambda t, acc: (acc + t,), (np.int32(0),))
    >>> int(total)
    6
    """
    loop_vars = tuple(loop_vars)
    if keras.backend.backend() == "tensorflow" or not isinstance(num_steps, int):
        kwargs = {} if maximum_iterations is None else {"maximum_iterations": maximum_iterations}
        results = ops.while_loop(
            lambda t, *_: ops.less(t, num_steps),
            lambda t, *state: (t + 1, *body(t, *state)),
            (ops.convert_to_tensor(0, "int32"), *loop_vars),
            **kwargs,
        )
        return tuple(results[1:])
    if num_steps == 0:
        return loop_vars
    if keras.backend.backend() != "jax":
        return tuple(fori_loop(0, num_steps, lambda t, state: tuple(body(t, *state)), loop_vars))
    # JAX traces the body once: its random draws take per-step seeds (`step_seed`), and each
    # generator they read is advanced once, after the outermost step loop, outside its trace.
    outermost = not _STEP_SCOPES
    generators = {} if outermost else _STEP_SCOPES[0][1]

    def traced_body(t, state):
        _STEP_SCOPES.append((t, generators, {}))
        try:
            return tuple(body(t, *state))
        finally:
            _STEP_SCOPES.pop()

    results = tuple(fori_loop(0, num_steps, traced_body, loop_vars))
    if outermost:
        for generator in generators.values():
            generator.next()
    return results


# Trace-time scopes of the JAX step loops being traced: `(t, generators read, draws per generator)`.
_STEP_SCOPES = []


def step_seed(seed):
    """The seed a random op draws with: `seed`, or inside a JAX `step_loop` one for this step.

    A `keras.random.SeedGenerator` advances its state variable at each draw; inside
    the loop JAX traces once, that gives every step the same numbers and leaves a
    traced value in the variable (the next call fails with `UnexpectedTracerError`).
    There, the generator's state is read (not written) and folded with the step
    and the draw's number within the step (and the steps of enclosing step loops);
    the outermost `step_loop` advances the generator once after its loop, so the
    next call draws other numbers. Everywhere else (other
    seeds, other backends, outside a step loop) `seed` is returned unchanged.

    Example:

    >>> import keras
    >>> generator = keras.random.SeedGenerator(1)
    >>> step_seed(generator) is generator  # outside a JAX step loop
    True
    """
    if not _STEP_SCOPES or not isinstance(seed, keras.random.SeedGenerator):
        return seed
    import jax  # noqa: PLC0415 (JAX only)

    _, generators, draws = _STEP_SCOPES[-1]
    generators[id(seed)] = seed
    index = draws.get(id(seed), 0)
    draws[id(seed)] = index + 1
    key = jax.numpy.asarray(seed.state.value, "uint32")
    for t, _, _ in _STEP_SCOPES:  # the steps of every enclosing loop, outermost first
        key = jax.random.fold_in(key, t)
    return jax.random.fold_in(key, index)


def fori_loop(lower, upper, body, init_val):
    """`ops.fori_loop`; on PyTorch a plain Python loop.

    Keras' PyTorch `fori_loop` is a Python loop too, but it first looks for symbolic
    tensors in the loop state, which breaks a `torch.compile` graph at every loop.

    Example:

    >>> int(fori_loop(0, 4, lambda i, total: total + i, 0))
    6
    """
    if keras.backend.backend() != "torch":
        return ops.fori_loop(lower, upper, body, init_val)
    value = init_val
    for i in range(lower, upper):
        value = body(i, value)
    return value
