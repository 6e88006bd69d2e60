"""Rotary position embedding (RoPE) of query and key heads."""

import keras
import numpy as np
from keras import ops

from keras_attention.layers._common import fixed_table, position_offset
from keras_attention.utils.validation import positive_number


@keras.saving.register_keras_serializable(package="keras_attention")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE, Su et al. 2021) for query and key heads.

    Each pair of features of the vector at position `p` is rotated by the
    angle `p θ_i / scaling_factor`, with `θ_i = max_wavelength^(-2i/dim)`,
    `i < dim / 2`. A rotation keeps norms, and the dot product of a query
    rotated at position `m` with a key rotated at position `n` depends only on
    `m - n`: applied to queries and keys, RoPE makes attention scores relative.

    The pairs are `(x[i], x[i + dim/2])` ("rotate half", the GPT-NeoX /
    LLaMA layout, as in `keras_hub.layers.RotaryEmbedding` and Hugging Face
    checkpoints): `y[:dim/2] = x1 cos - x2 sin`, `y[dim/2:] = x2 cos + x1 sin`
    with `x1, x2` the two halves. The paper pairs neighbours `(x[2i],
    x[2i+1])`; the two layouts differ only by a fixed permutation of the
    features. The angles are computed in float32; the rotation is done in
    the compute dtype. The output carries the input's Keras mask.

    Args:
        max_wavelength: positive number, the base of the frequencies.
            Defaults to `10000`.
        scaling_factor: positive number; positions are divided by it (linear
            position interpolation for longer contexts). Defaults to `1.0`.
        sequence_axis: int, the axis of the positions. Defaults to `1`.
        feature_axis: int, the axis of the rotated features, whose size must
            be even and known. Defaults to `-1`.
        **kwargs: base layer arguments.

    Call arguments:
        inputs: a tensor with a sequence and a feature axis, e.g. query or key
            heads `(batch_size, seq_len, num_heads, head_dim)` or
            `(batch_size, seq_len, dim)`.
        start_index: int or scalar int tensor, the position of the first
            element along `sequence_axis` (a decoding step at position `t`
            passes `t`). Defaults to `0`.

    Returns:
        The rotated tensor, with the shape of `inputs`, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> rope = RotaryEmbedding()
    >>> query = np.random.rand(2, 6, 4, 8).astype("float32")  # (batch, seq, heads, head_dim)
    >>> key = np.random.rand(2, 6, 4, 8).astype("float32")
    >>> q, k = rope(query), rope(key)
    >>> tuple(q.shape)
    (2, 6, 4, 8)
    >>> # Scores only depend on relative positions: shift both by 10.
    >>> scores = np.einsum("bqhd,bkhd->bhqk", q, k)
    >>> shifted = np.einsum("bqhd,bkhd->bhqk", rope(query, start_index=10), rope(key, start_index=10))
    >>> bool(np.allclose(scores, shifted, atol=1e-4))
    True

    References:
        Su et al., 2021, "RoFormer: Enhanced Transformer with Rotary Position
        Embedding"; Chen et al., 2023, "Extending Context Window of Large
        Language Models via Positional Interpolation" (`scaling_factor`).
    """

    def __init__(
        self, max_wavelength=10000, scaling_factor=1.0, sequence_axis=1, feature_axis=-1, **kwargs
    ):
        super().__init__(**kwargs)
        self.max_wavelength = positive_number("RotaryEmbedding", "max_wavelength", max_wavelength)
        self.scaling_factor = positive_number("RotaryEmbedding", "scaling_factor", scaling_factor)
        for name, axis in (("sequence_axis", sequence_axis), ("feature_axis", feature_axis)):
            if isinstance(axis, bool) or not isinstance(axis, int):
                raise ValueError(
                    f"RotaryEmbedding: `{name}` must be an int. Received: {name}={axis!r}"
                )
        if sequence_axis == feature_axis:
            raise ValueError(
                "RotaryEmbedding: `sequence_axis` and `feature_axis` must differ. "
                f"Received: sequence_axis={sequence_axis}, feature_axis={feature_axis}"
            )
        self.sequence_axis = sequence_axis
        self.feature_axis = feature_axis
        self.supports_masking = True

    def build(self, input_shape):
        # Checked here too: symbolic calls do not run `call`.
        _, feature_axis = self._axes(input_shape)
        self._input_rank = len(input_shape)
        if input_shape[feature_axis] is not None:
            self._frequency_table(input_shape[feature_axis])
        self.built = True

    def _frequency_table(self, dim):
        """float32 `(dim / 2,)`, see `_frequencies` (kept on PyTorch: `fixed_table`)."""
        return fixed_table(
            self, dim, lambda: _frequencies(dim, self.max_wavelength, self.scaling_factor)
        )

    def call(self, inputs, start_index=0):
        start_index = position_offset("RotaryEmbedding", "start_index", start_index)
        rank = getattr(self, "_input_rank", len(inputs.shape))
        if len(inputs.shape) != rank:  # the axes were chosen for the rank the layer was built for
            raise ValueError(
                f"RotaryEmbedding: `inputs` must have rank {rank}, the rank the layer was built "
                f"for. Received: inputs.shape={tuple(inputs.shape)}"
            )
        sequence_axis, feature_axis = self._axes(inputs.shape)
        dim = inputs.shape[feature_axis]
        length = ops.shape(inputs)[sequence_axis]
        positions = ops.arange(length, dtype="int32") + ops.cast(start_index, "int32")
        frequencies = self._frequency_table(dim)
        angles = ops.expand_dims(ops.cast(positions, "float32"), 1) * frequencies  # (seq, dim/2)
        if sequence_axis > feature_axis:
            angles = ops.transpose(angles)  # (dim/2, seq)
        for axis in range(len(inputs.shape)):  # to the rank of `inputs`, size 1 elsewhere
            if axis not in (sequence_axis, feature_axis):
                angles = ops.expand_dims(angles, axis)
        cos = ops.cast(ops.cos(angles), inputs.dtype)
        sin = ops.cast(ops.sin(angles), inputs.dtype)
        first, second = ops.split(inputs, 2, axis=feature_axis)
        return ops.concatenate(
            [first * cos - second * sin, second * cos + first * sin], axis=feature_axis
        )

    def _axes(self, shape):
        shape = tuple(shape)
        rank = len(shape)
        axes = []
        for name, axis in (
            ("sequence_axis", self.sequence_axis),
            ("feature_axis", self.feature_axis),
        ):
            if not -rank <= axis < rank:
                raise ValueError(
                    f"RotaryEmbedding: `{name}` is out of range for `inputs` of rank {rank}. "
                    f"Received: {name}={axis}, inputs.shape={shape}"
                )
            axes.append(axis % rank)
        sequence_axis, feature_axis = axes
        if sequence_axis == feature_axis:
            raise ValueError(
                "RotaryEmbedding: `sequence_axis` and `feature_axis` name the same axis. "
                f"Received: sequence_axis={self.sequence_axis}, "
                f"feature_axis={self.feature_axis}, inputs.shape={shape}"
            )
        dim = shape[feature_axis]
        if dim is None or dim % 2:
            raise ValueError(
                "RotaryEmbedding: the feature axis must have a known, even size (features are "
                f"rotated in pairs). Received: inputs.shape={shape}, "
                f"feature_axis={self.feature_axis}"
            )
        return sequence_axis, feature_axis

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "scaling_factor": self.scaling_factor,
            "sequence_axis": self.sequence_axis,
            "feature_axis": self.feature_axis,
        }


def _frequencies(dim, max_wavelength, scaling_factor):
    """`max_wavelength^(-2i/dim) / scaling_factor` for `i < dim / 2`, in float64 then float32."""
    exponents = 2.0 * np.arange(dim // 2) / dim
    return (float(max_wavelength) ** -exponents / float(scaling_factor)).astype("float32")
