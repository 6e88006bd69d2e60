"""Fixed sinusoidal position encoding (Vaswani et al. 2017)."""

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import fixed_table, position_offset
from keras_attention.utils.validation import positive_number


@keras.saving.register_keras_serializable(package="keras_attention")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """The fixed sinusoidal position encoding of "Attention Is All You Need".

    Position `p` is encoded by `PE(p, 2i) = sin(p / max_wavelength^(2i/dim))`
    and `PE(p, 2i+1) = cos(p / max_wavelength^(2i/dim))`: sines on the even
    features, cosines on the odd ones, wavelengths growing geometrically from
    `2π` to `2π · max_wavelength`. The layer returns the encoding (it has no
    weights); add it to the token embeddings yourself. The layout and numbers
    are those of `keras_hub.layers.SinePositionEncoding`.

    An odd `dim` is allowed: feature `j` always uses the exponent
    `2 * (j // 2) / dim`, so the last feature is a sine without its cosine.
    The angles are computed in float32 and the result cast to the compute
    dtype, so positions stay exact under `mixed_float16`. The output carries
    the input's Keras mask.

    Args:
        max_wavelength: positive number, the longest wavelength over `2π`.
            Defaults to `10000`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: `(batch_size, seq_len, dim)`; only its shape is used, `dim`
            must be known.
        start_index: int or scalar int tensor, the position of the first
            element (a decoding step at position `t` passes `t`). Defaults to
            `0`.

    Returns:
        The encoding of positions `start_index, ..., start_index + seq_len - 1`
        broadcast to `(batch_size, seq_len, dim)`, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((2, 4, 6), "float32")
    >>> encoding = SinusoidalPositionEncoding()(x)
    >>> tuple(encoding.shape)
    (2, 4, 6)
    >>> np.round(np.asarray(encoding)[0, 1, :2], 4)  # sin(1), cos(1)
    array([0.8415, 0.5403], dtype=float32)
    >>> step = SinusoidalPositionEncoding()(x[:, :1], start_index=1)
    >>> bool(np.allclose(step[:, 0], encoding[:, 1]))
    True

    References:
        Vaswani et al., 2017, "Attention Is All You Need", section 3.5.
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = positive_number(
            "SinusoidalPositionEncoding", "max_wavelength", max_wavelength
        )
        self.supports_masking = True

    def build(self, input_shape):
        self._tables(_feature_dim(input_shape))  # checked here too: symbolic calls skip `call`
        self.built = True

    def _tables(self, dim):
        """float32 `(inverse_timescales, is_sine)`, each `(dim,)` (kept on PyTorch: `fixed_table`)."""
        return (
            fixed_table(self, ("inverse_timescales", dim),
                        lambda: _inverse_timescales(dim, self.max_wavelength)),
            fixed_table(self, ("is_sine", dim),
                        lambda: (np.arange(dim) % 2 == 0).astype("float32")),
        )  # fmt: skip

    def call(self, inputs, start_index=0):
        start_index = position_offset("SinusoidalPositionEncoding", "start_index", start_index)
        dim = _feature_dim(inputs.shape)
        shape = ops.shape(inputs)
        positions = ops.arange(shape[1], dtype="int32") + ops.cast(start_index, "int32")
        positions = ops.cast(positions, "float32")  # (seq_len,)
        inverse_timescales, is_sine = self._tables(dim)
        angles = ops.expand_dims(positions, 1) * inverse_timescales  # (seq_len, dim)
        encoding = ops.sin(angles) * is_sine + ops.cos(angles) * (1.0 - is_sine)
        encoding = ops.cast(ops.expand_dims(encoding, 0), self.compute_dtype)  # (1, seq_len, dim)
        return ops.broadcast_to(encoding, shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


def _feature_dim(shape):
    shape = tuple(shape)
    if len(shape) != 3 or shape[-1] is None:
        raise ValueError(
            "SinusoidalPositionEncoding: `inputs` must have rank 3 `(batch_size, seq_len, dim)` "
            f"with a known `dim`. Received: inputs.shape={shape}"
        )
    return shape[-1]


def _inverse_timescales(dim, max_wavelength):
    """`max_wavelength^(-2 * (j // 2) / dim)` for feature `j`, in float64 then float32."""
    exponents = 2.0 * (np.arange(dim) // 2) / dim
    return (float(max_wavelength) ** -exponents).astype("float32")
