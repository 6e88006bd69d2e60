"""GELU for training: on TensorFlow, one fused float32 kernel forward and one backward.

`keras.activations.gelu` on TensorFlow is a chain of elementwise ops (the tanh form: a
cube, a multiply-add, tanh, an add and two multiplies), one pass over the tensor each,
and autodiff adds a longer chain for the gradient; in bfloat16 every pass converts its
operands. `gelu` computes the same function in float32 (float64 for float64 inputs) in
one XLA-compiled kernel, and its derivative in closed form in another, reading and
writing the input's dtype. On this 2-core CPU, forward and backward of a
`(32, 128, 1024)` bfloat16 tensor (a BERT feed-forward layer's batch) took 8.4 ms
instead of 17.8. On JAX and PyTorch it is `keras.activations.gelu`.

The Transformer blocks use it for their feed-forward activation while training, when
that activation is `keras.activations.gelu` or `gelu_approximate` (unless the environment
variable `KERAS_ATTENTION_FUSED_GELU=0`, for a device XLA cannot compile for). XLA compiles
the two kernels once per input shape (about 0.1 s each); the package's tasks train on a few
fixed shapes, while data padded to each batch's own length would compile for every new
length. Inference and the exports (SavedModel, TFLite) keep `keras.activations.gelu`, so
they need no XLA and compile nothing per input shape.
"""

import math
import os

import keras

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715  # the tanh approximation's coefficient
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_FUSED = {}  # approximate -> (the TensorFlow function with its gradient, its two XLA kernels)


@keras.saving.register_keras_serializable(package="keras_attention", name="gelu_approximate")
def gelu_approximate(x):
    """GELU with the tanh approximation, the feed-forward activation of keras_hub's BERT."""
    return keras.activations.gelu(x, approximate=True)


def gelu(x, approximate=False):
    """`keras.activations.gelu`, computed in float32 by one fused kernel each way on TensorFlow.

    `x * Phi(x)`, `Phi` the standard normal CDF; with `approximate=True`,
    `x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))`, which equals the usual
    `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.

    Args:
        x: a floating-point tensor.
        approximate: bool, the tanh approximation. Defaults to `False`.

    Returns:
        A tensor of the shape and dtype of `x`. For bfloat16 and float16 inputs it
        is the float32 result rounded once (`keras.activations.gelu` rounds after
        every step), so the two differ by about one unit in the last place.

    Example:

    >>> import numpy as np
    >>> x = np.linspace(-3, 3, 7).astype("float32")
    >>> bool(np.allclose(gelu(x, approximate=True),
    ...                  keras.activations.gelu(x, approximate=True), atol=1e-6))
    True
    """
    if not isinstance(approximate, bool):
        raise ValueError(f"gelu: `approximate` must be a bool. Received: approximate={approximate!r}")
    if keras.backend.backend() != "tensorflow" or isinstance(x, keras.KerasTensor):
        return keras.activations.gelu(x, approximate=approximate)  # (a symbolic input: its shape)
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"gelu: `x` must be a floating-point tensor. Received: dtype={x.dtype.name}")
    if approximate not in _FUSED:
        _FUSED[approximate] = _fused_gelu(approximate)
    return _FUSED[approximate][0](x)


def fused_gelu_in_training():
    """Whether the Transformer blocks train GELU through `gelu` (the TensorFlow backend).

    `True` unless the environment variable `KERAS_ATTENTION_FUSED_GELU` is `0`: set it where
    XLA cannot compile for the device that trains (then Keras's activation is used).
    """
    if keras.backend.backend() != "tensorflow":
        return False
    return os.environ.get("KERAS_ATTENTION_FUSED_GELU", "1").strip() != "0"


def _fused_gelu(approximate):
    """The TensorFlow GELU (`approximate` fixed) whose forward and backward are XLA kernels."""
    import tensorflow as tf

    def compute(x):  # float32, or float64 for float64 inputs
        return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)

    def parts(x):
        """`(Phi-like factor s, ds/dx)` at `x`: the value is `x * s`, the slope `s + x * ds`."""
        if approximate:
            s = tf.sigmoid(2.0 * _SQRT_2_OVER_PI * x * (1.0 + _CUBIC * x * x))
            return s, s * (1.0 - s) * (2.0 * _SQRT_2_OVER_PI) * (1.0 + 3.0 * _CUBIC * x * x)
        # erfc: no cancellation in the far negative tail, where 1 + erf(x) loses every digit.
        return 0.5 * tf.math.erfc(-x * _INV_SQRT_2), _INV_SQRT_2PI * tf.exp(-0.5 * x * x)

    # `reduce_retracing`: traced once for any shape; XLA still compiles per concrete shape.
    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def forward(x):
        xc = compute(x)
        s, _ = parts(xc)
        return tf.cast(xc * s, x.dtype)

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def backward(x, upstream):
        xc = compute(x)
        s, slope = parts(xc)
        return tf.cast(compute(upstream) * (s + xc * slope), x.dtype)

    @tf.custom_gradient
    def fused(x):
        def grad(upstream):
            return backward(x, upstream)

        return forward(x), grad

    return fused, forward, backward
