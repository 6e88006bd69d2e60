"""Show, Attend and Tell: soft attention over a CNN feature grid, with the gating scalar."""

import math
import numbers

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin
from keras_attention.layers.base_score_attention import BaseScoreAttention
from keras_attention.ops import (
    additive_score,
    apply_attention,
    compute_attention_mask,
    doubly_stochastic_penalty,
    masked_softmax,
)
from keras_attention.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_attention")
class SpatialAttention(WeightOptionsMixin, BaseScoreAttention):
    """Soft attention of a decoder state over the locations of a feature grid.

    The annotation vectors `a_i` are the `L = H * W` locations of a
    `(batch_size, H, W, C)` feature map. For a decoder state `h` the scores are
    the additive MLP `e_i = vᵀ tanh(W h + U a_i + b)` (`units` hidden units),
    `α = softmax(e)` over the locations and the context is
    `z = β · Σ_i α_i a_i`, with the gating scalar `β = sigmoid(w_βᵀ h + b_β)`
    (section 4.2.1), which lets the decoder turn the image down, e.g. for
    function words. With `use_gating=False`, `β = 1`.

    The attention weights come back in the layout of the memory: a grid
    `(batch_size[, Tq], H, W)` (ready for image overlays) for a
    `(batch_size, H, W, C)` memory, and `(batch_size[, Tq], L)` for a memory
    whose locations are already flattened, `(batch_size, L, C)`. Either way
    they sum to 1 over the unmasked locations.

    The doubly stochastic regulariser `λ Σ_i (1 - Σ_t α_ti)²` (eq. 14) is
    built in: with `doubly_stochastic_regularization=λ > 0`, every call on a
    query sequence `(batch_size, Tq, dq)` adds it (mean over the batch, masks
    respected) to the layer's losses, which `model.fit` adds to the loss. A
    decoder that calls the layer one step at a time must collect the weights
    of all steps and call `keras_attention.ops.doubly_stochastic_penalty`
    itself; a one-step call with `training=True` and `λ > 0` raises.

    Args:
        units: positive int, the hidden size of the score MLP.
        use_gating: bool, scale the context by the gate `β`. Defaults to
            `True`.
        use_bias: bool, add the bias `b` inside the `tanh`. Defaults to `True`.
        doubly_stochastic_regularization: float `>= 0`, the `λ` of the
            regulariser added by calls on query sequences. Defaults to `0.0`
            (none; the paper's captioners use `1.0`).
        kernel_initializer: initializer of `W`, `U`, `v` and `w_β`. Defaults
            to `"glorot_uniform"`.
        bias_initializer: initializer of `b` and `b_β`. Defaults to `"zeros"`
            (so `β` starts at 0.5).
        kernel_regularizer, bias_regularizer, kernel_constraint,
        bias_constraint: optional, applied to the kernels / the biases.
        dropout: float, dropout on the attention weights. Defaults to `0.0`.
        seed: optional int, dropout seed.
        **kwargs: base layer arguments.

    Call arguments:
        query: the decoder state `h`: one step `(batch_size, dq)` or a
            sequence `(batch_size, Tq, dq)`.
        value: the features, a grid `(batch_size, H, W, C)` or flattened
            locations `(batch_size, L, C)`.
        key: optional features scored instead of `value`, with the same
            locations; defaults to `value`.
        query_mask: boolean `(batch_size, Tq)`; padded steps get zero output,
            weights and gate. Filled from the query's Keras mask.
        value_mask: boolean location mask `(batch_size, H, W)` (or flattened
            `(batch_size, H * W)`), `(batch_size, L)` for flat features;
            `False` locations get exactly zero weight.
        key_mask: like `value_mask`, ANDed with it.
        projected_key: optional `(batch_size, L, units)`, `project_key(key)`
            computed once for a decoder's steps (see `BaseScoreAttention`).
        mask: `[query_mask, value_mask]`, as in `keras.layers.Attention`.
        attention_mask: boolean `(batch_size, Tq, *locations)` (without `Tq`
            for one step), ANDed with the other masks.
        use_causal_mask: must be `False`: locations have no order.
        return_attention_scores: bool, also return `α`. Defaults to `False`.
        return_gate: bool, also return `β` `(batch_size[, Tq])` (ones with
            `use_gating=False`). Defaults to `False`.
        training: bool, whether dropout is active.

    Returns:
        The context `z` `(batch_size[, Tq], C)`; then `α` (`(batch_size[, Tq],
        H, W)` or `(batch_size[, Tq], L)`) if `return_attention_scores`; then
        `β` if `return_gate`. The output carries the query's mask.

    Example:

    >>> import numpy as np
    >>> layer = SpatialAttention(units=16)
    >>> features = np.random.rand(2, 7, 7, 32).astype("float32")  # a CNN feature map
    >>> state = np.random.rand(2, 10).astype("float32")  # one decoder step
    >>> context, alpha, beta = layer(
    ...     state, features, return_attention_scores=True, return_gate=True)
    >>> tuple(context.shape), tuple(alpha.shape), tuple(beta.shape)
    ((2, 32), (2, 7, 7), (2,))
    >>> bool(np.allclose(np.asarray(alpha).sum(axis=(1, 2)), 1.0))
    True

    References:
        Xu et al., 2015, "Show, Attend and Tell: Neural Image Caption
        Generation with Visual Attention", sections 3.1.2 and 4.2.1.
    """

    def __init__(
        self,
        units,
        use_gating=True,
        use_bias=True,
        doubly_stochastic_regularization=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        seed=None,
        **kwargs,
    ):
        name = type(self).__name__
        units = positive_int(name, "units", units)
        strength = doubly_stochastic_regularization
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or strength < 0:
            raise ValueError(
                f"{name}: `doubly_stochastic_regularization` must be a number >= 0. "
                f"Received: doubly_stochastic_regularization={strength!r}"
            )
        super().__init__(dropout=dropout, seed=seed, **kwargs)
        self.units = units
        self.use_gating = bool(use_gating)
        self.use_bias = bool(use_bias)
        self.doubly_stochastic_regularization = float(strength)
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )

    # -- score hooks ----------------------------------------------------------------------------

    def build_score(self, query_dim, key_dim):
        """Creates the score MLP (`W`, `U`, `v`, `b`) and the gate (`w_β`, `b_β`)."""
        self.query_kernel = self._add_kernel("query_kernel", (query_dim, self.units))
        self.key_kernel = self._add_kernel("key_kernel", (key_dim, self.units))
        self.attention_v = self._add_kernel("attention_v", (self.units,))
        self.bias = self._add_bias("bias", (self.units,)) if self.use_bias else None
        self.gate_kernel = self.gate_bias = None
        if self.use_gating:
            self.gate_kernel = self._add_kernel("gate_kernel", (query_dim, 1))
            self.gate_bias = self._add_bias("gate_bias", (1,))

    def score(self, query, key, value_length):
        return self.score_projected(query, self.project_key(key), value_length)

    def project_key(self, key):
        """`U a_i` for every cell: `(batch_size, L, units)` from keys `(batch_size, L, D)`.

        A grid `(batch_size, H, W, D)` is flattened to its `L = H·W` cells first,
        in the order the call flattens the features.
        """
        if len(key.shape) > 3:
            key = _flatten_locations(key, len(key.shape) - 2, features=True)
        key = self._key_to_project(key)
        return ops.matmul(key, ops.cast(self.key_kernel, key.dtype))  # (B, L, units)

    def score_projected(self, query, projected_key, value_length):
        projected_query = ops.matmul(
            query, ops.cast(self.query_kernel, query.dtype)
        )  # (B, Tq, units)
        return additive_score(projected_query, projected_key, self.attention_v, self.bias)

    def projected_key_dim(self, key_dim):
        return self.units

    # -- Keras API ------------------------------------------------------------------------------

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        return_gate=False,
        training=None,
        projected_key=None,
    ):
        name = type(self).__name__
        if use_causal_mask:
            raise ValueError(
                f"{name}: the locations of a feature grid have no order, so there is no causal "
                f"mask. Received: use_causal_mask={use_causal_mask!r}"
            )
        single_step = len(query.shape) == 2
        if single_step and training is True and self.doubly_stochastic_regularization > 0:
            raise ValueError(
                f"{name}: the doubly stochastic regulariser sums the attention over all the "
                "steps, so it needs the query sequence `(batch_size, Tq, dq)`; a step-wise "
                "decoder should collect the weights of its steps and call "
                "`keras_attention.ops.doubly_stochastic_penalty`. Received: "
                f"query.shape={tuple(query.shape)}, training=True, "
                f"doubly_stochastic_regularization={self.doubly_stochastic_regularization}"
            )
        self._validate_shapes(query.shape, value.shape, None if key is None else key.shape)
        num_axes = len(value.shape) - 2  # 2 for a grid (H, W), 1 for flat locations (L,)
        grid_shape = tuple(ops.shape(value)[1:-1])
        flat_value = _flatten_locations(value, num_axes, features=True)  # (B, L, C)
        grid = tuple(value.shape[1:-1])  # the static grid, for the masks' check

        def flat_mask(x, name, leading_axes=0):
            return _flatten_locations(x, num_axes, leading_axes, name=name, grid=grid)

        if isinstance(mask, list | tuple) and len(mask) == 2:
            mask = [mask[0], flat_mask(mask[1], "value_mask")]
        inputs = self._prepare_inputs(
            query,
            flat_value,
            None if key is None else _flatten_locations(key, num_axes, features=True),
            mask,
            query_mask,
            flat_mask(value_mask, "value_mask"),
            flat_mask(key_mask, "key_mask"),
            flat_mask(attention_mask, "attention_mask", 0 if single_step else 1),
            use_causal_mask=False,
        )
        combined_mask = compute_attention_mask(
            query_mask=inputs.query_mask,
            value_mask=inputs.padding_mask,
            attention_mask=inputs.attention_mask,
        )
        scores = self._scores(inputs, flat_value, projected_key)  # (B, Tq, L)
        weights = masked_softmax(scores, combined_mask)  # (B, Tq, L)
        context = apply_attention(self._dropout_layer(weights, training=training), flat_value)
        gate = self._gate(inputs.query, inputs.query_mask)  # (B, Tq), float32
        context = context * ops.cast(ops.expand_dims(gate, -1), context.dtype)  # (B, Tq, C)
        if self.doubly_stochastic_regularization > 0 and not single_step:
            self.add_loss(
                doubly_stochastic_penalty(
                    weights,
                    query_mask=inputs.query_mask,
                    location_mask=inputs.padding_mask,
                    coefficient=self.doubly_stochastic_regularization,
                )
            )
        outputs = (context,)
        if return_attention_scores:
            batch_and_steps = ops.shape(weights)[:2]
            outputs += (ops.reshape(weights, tuple(batch_and_steps) + grid_shape),)
        if return_gate:
            outputs += (ops.cast(gate, self.compute_dtype),)
        return self._finish_outputs(inputs, outputs)

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._validate_shapes(query_shape, value_shape, key_shape)
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def compute_output_spec(
        self, query, value, key=None, return_attention_scores=False, return_gate=False, **kwargs
    ):
        per_query = (self.compute_dtype,) if return_gate else ()
        return self._output_specs(query, value, key, return_attention_scores, per_query)

    def _scores_shape(self, query_shape, value_shape):
        return query_shape[:-1] + value_shape[1:-1]  # (B[, Tq], H, W) or (B[, Tq], L)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_gating": self.use_gating,
            "use_bias": self.use_bias,
            "doubly_stochastic_regularization": self.doubly_stochastic_regularization,
            **self._weight_options_config(),
        }

    # -- helpers --------------------------------------------------------------------------------

    def _gate(self, query, query_mask):
        """`β = sigmoid(w_βᵀ h + b_β)` in float32 `(B, Tq)`, zero on padded steps."""
        if not self.use_gating:
            gate = ops.ones(ops.shape(query)[:-1], "float32")
        else:
            logits = ops.matmul(query, ops.cast(self.gate_kernel, query.dtype))
            logits = ops.squeeze(logits, -1) + ops.cast(self.gate_bias, query.dtype)  # (B, Tq)
            gate = ops.sigmoid(ops.cast(logits, "float32"))
        if query_mask is None:
            return gate
        return ops.where(ops.cast(query_mask, "bool"), gate, ops.zeros_like(gate))

    def _validate_shapes(self, query_shape, value_shape, key_shape):
        name = type(self).__name__
        query_shape = tuple(query_shape)
        value_shape = tuple(value_shape)
        if len(query_shape) not in (2, 3):
            raise ValueError(
                f"{name}: `query` must have rank 2 `(batch_size, dq)` or rank 3 "
                f"`(batch_size, Tq, dq)`. Received: query.shape={query_shape}"
            )
        for arg, shape in (("value", value_shape), ("key", key_shape)):
            if shape is not None and len(shape) not in (3, 4):
                raise ValueError(
                    f"{name}: `{arg}` must be a feature grid `(batch_size, H, W, C)` or "
                    f"flattened locations `(batch_size, L, C)`. Received: {arg}.shape={tuple(shape)}"
                )
        if key_shape is not None:
            key_shape = tuple(key_shape)
            locations = (key_shape[1:-1], value_shape[1:-1])
            if len(locations[0]) != len(locations[1]) or any(
                None not in (k, v) and k != v for k, v in zip(*locations, strict=True)
            ):
                raise ValueError(
                    f"{name}: `key` and `value` must have the same locations. "
                    f"Received: key.shape={key_shape}, value.shape={value_shape}"
                )
        for arg, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if shape is not None and shape[-1] is None:
                raise ValueError(
                    f"{name}: the last dimension of `{arg}` must be known. "
                    f"Received: {arg}.shape={shape}"
                )
        key_dim = (key_shape or value_shape)[-1]
        return query_shape[-1], key_dim, value_shape[-1]


def _flatten_locations(
    tensor, num_location_axes, leading_axes=0, features=False, name=None, grid=None
):
    """Merges the location axes of a grid into one: `(B, [Tq,] H, W[, C]) -> (B, [Tq,] L[, C])`.

    `leading_axes` counts the axes between the batch axis and the locations
    (a step axis). A tensor whose locations are already flat passes through;
    a mask (`name` given) of any other rank raises, and so does a grid mask
    whose location axes differ from `grid` (the value's, where known).
    """
    if tensor is None:
        return tensor
    if not hasattr(tensor, "shape"):  # a list: as the other layers take masks
        tensor = ops.convert_to_tensor(tensor)
    grid_rank = 1 + leading_axes + num_location_axes + int(features)
    flat_rank = grid_rank - num_location_axes + 1
    rank = len(tensor.shape)
    if name is not None and rank not in (grid_rank, flat_rank):
        raise ValueError(
            f"SpatialAttention: `{name}` must have rank {grid_rank} (one entry per location of "
            f"the grid) or {flat_rank} (locations flattened). "
            f"Received: {name}.shape={tuple(tensor.shape)}"
        )
    if rank == flat_rank:
        return tensor
    if name is not None and grid is not None and num_location_axes > 1:
        axes = tuple(tensor.shape[1 + leading_axes : 1 + leading_axes + num_location_axes])
        if any(a is not None and g is not None and a != g for a, g in zip(axes, grid, strict=True)):
            raise ValueError(
                f"SpatialAttention: `{name}` must have the value's grid {grid} on its location "
                f"axes. Received: {name}.shape={tuple(tensor.shape)}"
            )
    shape = ops.shape(tensor)
    locations = shape[1 + leading_axes : 1 + leading_axes + num_location_axes]
    # The number of locations where it is known: a `-1` cannot be inferred for an empty batch
    # on every backend (JAX refuses to reshape `(0, H, W, C)` to `(0, -1, C)`).
    flat = math.prod(locations) if all(isinstance(n, int) for n in locations) else -1
    new_shape = tuple(shape[: 1 + leading_axes]) + (flat,)
    if features:
        new_shape += (shape[-1],)
    return ops.reshape(tensor, new_shape)
