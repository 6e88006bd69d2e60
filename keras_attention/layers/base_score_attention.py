"""The shared call contract of every score-attention layer."""

import dataclasses

import keras
from keras import ops

from keras_attention.layers._dropout import Dropout
from keras_attention.ops import (
    apply_attention,
    compute_attention_mask,
    masked_softmax,
    merge_padding_masks,
)
from keras_attention.ops.checks import check_inputs
from keras_attention.utils.masking import attach_keras_mask
from keras_attention.utils.validation import rate


@keras.saving.register_keras_serializable(package="keras_attention")
class BaseScoreAttention(keras.layers.Layer):
    """Soft attention of a query over a memory, with a pluggable score function.

    The context is `c = Σ_i a_i h_i` with `a = softmax(score(s, h))` over the
    memory positions `i`. Subclasses create the score function's weights in
    `build_score(query_dim, key_dim)` and implement
    `score(query, key, value_length) -> (batch_size, Tq, Tv)`; masking, the
    softmax, dropout, one-step queries and attention scores are handled here,
    the same way for every score function.

    A score with a part that depends on the key alone (`U h` in Bahdanau's
    `vᵀ tanh(W s + U h)`) also implements `project_key(key)` and
    `score_projected(query, projected_key, value_length)`. A decoder that
    attends to the same memory at every step then projects it once
    (`projected = layer.project_key(memory)`) and passes
    `projected_key=projected` to each step's call, instead of the layer
    projecting the whole memory again at every step (`AttentionDecoder` and
    the Show, Attend and Tell decoder do this; TensorFlow Addons' seq2seq did
    the same with its `memory_layer`).

    Args:
        dropout: float in `[0, 1)`, dropout rate applied to the attention
            weights when `training=True`. Defaults to `0.0`.
        seed: optional int, seed of the dropout. Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        query: the decoder state(s) `s`: one step `(batch_size, dq)` or a
            sequence `(batch_size, Tq, dq)`.
        value: the memory `(batch_size, Tv, dv)` that is averaged.
        key: optional `(batch_size, Tv, dk)` that is scored against the query;
            defaults to `value`.
        query_mask: boolean (or integer 0/1; float masks raise `ValueError`)
            `(batch_size, Tq)` (`(batch_size,)` for one
            step); `False` marks padded queries, whose output and weights are
            zero. Filled from the query's Keras mask when not given.
        value_mask: boolean `(batch_size, Tv)`; `False` positions get exactly
            zero weight. Filled from the value's Keras mask when not given.
        key_mask: boolean `(batch_size, Tv)`, ANDed with `value_mask`. Filled
            from the key's Keras mask when not given.
        projected_key: optional `(batch_size, Tv, d)`, `project_key(key)`
            computed once by the caller; scored with `score_projected`
            instead of projecting the key again (`key` is then only used for
            its mask). Defaults to `None`.
        mask: `[query_mask, value_mask]` as taken by `keras.layers.Attention`;
            its non-`None` entries take precedence over `query_mask` and
            `value_mask`.
        attention_mask: boolean `(batch_size, Tq, Tv)` (`(batch_size, Tv)` for
            one step), ANDed with the other masks.
        use_causal_mask: bool, query `i` only attends to positions `<= i`
            (needs a query sequence). Defaults to `False`.
        return_attention_scores: bool, also return the attention weights
            (before dropout; they sum to 1 over unmasked positions and are all
            zero on a fully masked row). Defaults to `False`.
        training: bool, whether dropout is active.

    Returns:
        The context `(batch_size[, Tq], dv)`, and with
        `return_attention_scores=True` the weights `(batch_size[, Tq], Tv)`.
        The output carries the query's mask. Empty batches or sequences give
        empty outputs (zeros where `Tv = 0`).

    Every call checks its inputs (not only the first): ranks, the feature
    sizes the layer was built with, batch sizes and lengths that must agree
    between the query, value, key and masks, and mask dtypes (boolean or
    integer; a float mask raises, since a cast would invert an additive mask:
    pass `mask == 0`). Mismatches raise `ValueError`; sizes unknown while
    tracing are asserted at run time on TensorFlow (`InvalidArgumentError`
    naming the argument), except under XLA (`jit_compile=True`), which drops
    assertions.
    """

    def __init__(self, dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.dropout = rate(type(self).__name__, "dropout", dropout)
        self.seed = seed
        self.supports_masking = True

    # -- subclass hooks -------------------------------------------------------------------------

    def build_score(self, query_dim, key_dim):
        """Creates the weights of the score function; the default has none."""

    def validate_dims(self, query_dim, key_dim, value_dim):
        """Raises `ValueError` if the feature sizes do not suit the score function."""

    def score(self, query, key, value_length):
        """Raw scores `(batch_size, Tq, Tv)` for `query (batch_size, Tq, dq)` and `key (batch_size, Tv, dk)`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `score(query, key, value_length)`."
        )

    def project_key(self, key):
        """The part of the score that depends on the key alone, `(batch_size, Tv, d)`.

        The default is the key itself (in the compute dtype); a score with a key
        projection returns it, so that
        `score_projected(q, project_key(k), Tv) == score(q, k, Tv)`.
        The layer must be built (called once, or `build`); the key's rank and
        depth are checked (`ValueError` naming `key`).
        """
        return self._key_to_project(key)

    def score_projected(self, query, projected_key, value_length):
        """`score` from `project_key(key)`; the default scores it as the key."""
        return self.score(query, projected_key, value_length)

    def projected_key_dim(self, key_dim):
        """The depth of `project_key`'s output for keys of depth `key_dim` (default: `key_dim`)."""
        return key_dim

    # -- Keras API ------------------------------------------------------------------------------

    def build(self, query_shape, value_shape, key_shape=None):
        query_dim, key_dim, value_dim = self._validate_shapes(query_shape, value_shape, key_shape)
        self._input_dims = (query_dim, key_dim, value_dim)
        self.build_score(query_dim, key_dim)
        self._dropout_layer = Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.built = True

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
        training=None,
        projected_key=None,
    ):
        inputs = self._prepare_inputs(
            query,
            value,
            key,
            mask,
            query_mask,
            value_mask,
            key_mask,
            attention_mask,
            use_causal_mask,
        )
        scores = self._scores(inputs, value, projected_key)  # (B, Tq, Tv)
        combined_mask = compute_attention_mask(
            query_mask=inputs.query_mask,
            value_mask=inputs.padding_mask,
            attention_mask=inputs.attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=inputs.query_length,
            value_length=inputs.value_length,
        )
        weights = masked_softmax(scores, combined_mask)  # (B, Tq, Tv)
        context = apply_attention(self._dropout_layer(weights, training=training), value)
        outputs = (context, weights) if return_attention_scores else (context,)
        return self._finish_outputs(inputs, outputs)

    def compute_mask(self, query, previous_mask=None):
        if len(query.shape) == 2:
            return None
        if isinstance(previous_mask, list | tuple):
            return previous_mask[0] if previous_mask else None
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        self._validate_shapes(query_shape, value_shape, key_shape)
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def compute_output_spec(self, query, value, key=None, return_attention_scores=False, **kwargs):
        return self._output_specs(query, value, key, return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "seed": self.seed})
        return config

    # -- helpers --------------------------------------------------------------------------------

    def _key_to_project(self, key):
        """`key` in the compute dtype, after checking it is `(batch_size, Tv, dk)` as built."""
        name = type(self).__name__
        if not self.built:
            raise ValueError(
                f"{name}: `project_key` needs a built layer (call it once, or `build`)."
            )
        key = check_built_depth(f"{name}: `project_key` takes keys", "key", key,
                                ("batch_size", "Tv", self._input_dims[1]))  # fmt: skip
        return ops.cast(key, self.compute_dtype)

    def _projects_key(self):
        """Whether the projected path computes this layer's own score.

        True when a class below `BaseScoreAttention` defines `project_key` and no
        subclass of that class redefines `score` (a subclass that changes `score`
        alone would be bypassed by `score_projected`: it is scored as it was).
        """
        mro = type(self).__mro__
        project_owner = next(c for c in mro if "project_key" in vars(c))
        score_owner = next(c for c in mro if "score" in vars(c))
        return project_owner is not BaseScoreAttention and issubclass(project_owner, score_owner)

    def _scores(self, inputs, value, projected_key):
        """`score(query, key)`, or `score_projected(query, projected_key)` when one is given.

        `projected_key` is checked like the other inputs: rank 3, the batch
        size and length of `value`, the depth `projected_key_dim(dk)`.
        """
        if projected_key is None:
            return self.score(inputs.query, inputs.key, inputs.value_length)
        key_dim = getattr(self, "_input_dims", (None, None, None))[1]
        depth = None if key_dim is None else self.projected_key_dim(key_dim)
        _, projected_key = check_inputs(
            type(self).__name__,
            [
                ("value", value, ("batch_size", "Tv", None)),
                ("projected_key", projected_key, ("batch_size", "Tv", depth)),
            ],
        )
        if not self._projects_key():  # checked, but this score reads the key itself
            return self.score(inputs.query, inputs.key, inputs.value_length)
        projected_key = ops.cast(projected_key, self.compute_dtype)
        return self.score_projected(inputs.query, projected_key, inputs.value_length)

    def _prepare_inputs(
        self,
        query,
        value,
        key,
        mask,
        query_mask,
        value_mask,
        key_mask,
        attention_mask,
        use_causal_mask,
        allow_single_step_causal=False,
    ):
        """The shared start of every `call`: inputs checked, masks unpacked, one-step queries made sequences.

        Every call checks (`keras_attention.ops.checks.check_inputs`) the ranks,
        the feature depths the layer was built with, that batch sizes agree
        between the query, value, key and masks, that lengths agree between
        inputs and masks, and that masks are boolean or integer (float masks are
        refused). Static mismatches raise `ValueError`; sizes unknown while
        tracing are asserted at run time on TensorFlow (`InvalidArgumentError`;
        not under XLA, which drops assertions).

        Returns a `PreparedInputs` with `query (B, Tq, dq)`, `key` (defaults to
        `value`), `single_step`, `query_mask (B, Tq)`, `padding_mask (B, Tv)`
        (value and key masks ANDed), `attention_mask (B, Tq, Tv)` and the lengths.
        """
        query_mask, value_mask = _unpack_mask_list(mask, query_mask, value_mask)
        query, value, key, query_mask, value_mask, key_mask, attention_mask = self._check_inputs(
            query, value, key, query_mask, value_mask, key_mask, attention_mask
        )
        single_step = len(query.shape) == 2
        if single_step:
            if use_causal_mask and not allow_single_step_causal:
                raise ValueError(
                    f"{type(self).__name__}: `use_causal_mask=True` needs a query sequence "
                    f"`(batch_size, Tq, dq)`. Received: query.shape={tuple(query.shape)}"
                )
            query = ops.expand_dims(query, 1)  # (B, 1, dq)
            if query_mask is not None:
                query_mask = ops.reshape(query_mask, (-1, 1))  # (B, 1)
            if attention_mask is not None and len(attention_mask.shape) == 2:
                attention_mask = ops.expand_dims(attention_mask, 1)  # (B, 1, Tv)
        return PreparedInputs(
            query=query,
            key=value if key is None else key,
            single_step=single_step,
            query_mask=query_mask,
            padding_mask=merge_padding_masks(value_mask, key_mask),
            attention_mask=attention_mask,
            query_length=ops.shape(query)[1],
            value_length=ops.shape(value)[1],
        )

    def _check_inputs(self, query, value, key, query_mask, value_mask, key_mask, attention_mask):
        """Checks shapes and mask dtypes at every call; returns the (possibly guarded) tensors."""
        self._validate_shapes(query.shape, value.shape, None if key is None else key.shape)
        query_dim, key_dim, value_dim = getattr(self, "_input_dims", (None, None, None))
        steps = ("Tq",) if len(query.shape) == 3 else ()
        return check_inputs(
            type(self).__name__,
            [
                ("query", query, ("batch_size", *steps, query_dim)),
                ("value", value, ("batch_size", "Tv", value_dim)),
                ("key", key, ("batch_size", "Tv", key_dim)),
            ],
            masks=[
                ("query_mask", query_mask, ("batch_size", *steps)),
                ("value_mask", value_mask, ("batch_size", "Tv")),
                ("key_mask", key_mask, ("batch_size", "Tv")),
                ("attention_mask", attention_mask, ("batch_size", *steps, "Tv")),
            ],
        )

    def _output_specs(self, query, value, key, return_attention_scores, per_query_dtypes=()):
        """Specs of `(context[, weights], *extras)` for `compute_output_spec`.

        `per_query_dtypes` lists the dtypes of extra outputs with one entry per
        query, `(batch_size[, Tq])` (aligned positions, log-probabilities, gates).
        """
        output_shape = self.compute_output_shape(
            query.shape, value.shape, None if key is None else key.shape
        )
        outputs = (keras.KerasTensor(output_shape, dtype=self.compute_dtype),)
        if return_attention_scores:
            scores_shape = self._scores_shape(tuple(query.shape), tuple(value.shape))
            outputs += (keras.KerasTensor(scores_shape, dtype=self.compute_dtype),)
        query_axes = tuple(query.shape[:-1])
        outputs += tuple(keras.KerasTensor(query_axes, dtype=d) for d in per_query_dtypes)
        return outputs[0] if len(outputs) == 1 else outputs

    def _scores_shape(self, query_shape, value_shape):
        """The shape of the returned attention weights: `(batch_size[, Tq], Tv)`."""
        return query_shape[:-1] + (value_shape[1],)

    def _finish_outputs(self, inputs, outputs):
        """Squeezes one-step outputs (every entry has a query axis 1) or attaches the query mask.

        `outputs` is a tuple whose first entry is the context; a single entry is
        returned unwrapped.
        """
        if inputs.single_step:
            outputs = tuple(ops.squeeze(x, 1) for x in outputs)
        elif inputs.query_mask is not None:
            attach_keras_mask(outputs[0], ops.cast(inputs.query_mask, "bool"))
        return outputs[0] if len(outputs) == 1 else outputs

    def _validate_shapes(self, query_shape, value_shape, key_shape):
        name = type(self).__name__
        query_shape = tuple(query_shape)
        value_shape = tuple(value_shape)
        if len(query_shape) not in (2, 3):
            raise ValueError(
                f"{name}: `query` must have rank 2 `(batch_size, dq)` or rank 3 "
                f"`(batch_size, Tq, dq)`. Received: query.shape={query_shape}"
            )
        if len(value_shape) != 3:
            raise ValueError(
                f"{name}: `value` must have rank 3 `(batch_size, Tv, dv)`. "
                f"Received: value.shape={value_shape}"
            )
        if key_shape is not None:
            key_shape = tuple(key_shape)
            if len(key_shape) != 3:
                raise ValueError(
                    f"{name}: `key` must have rank 3 `(batch_size, Tv, dk)`. "
                    f"Received: key.shape={key_shape}"
                )
            if None not in (key_shape[1], value_shape[1]) and key_shape[1] != value_shape[1]:
                raise ValueError(
                    f"{name}: `key` and `value` must have the same length Tv. "
                    f"Received: key.shape={key_shape}, value.shape={value_shape}"
                )
        for arg, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if shape is not None and shape[-1] is None:
                raise ValueError(
                    f"{name}: the last dimension of `{arg}` must be known. "
                    f"Received: {arg}.shape={shape}"
                )
        key_dim = (key_shape or value_shape)[-1]
        self.validate_dims(query_shape[-1], key_dim, value_shape[-1])
        return query_shape[-1], key_dim, value_shape[-1]


def check_built_depth(what, name, x, axes):
    """`x` as a tensor, after checking its rank and last size against `axes` (`ValueError`).

    `what` starts the message (`"Layer: `project_key` takes keys"`), `name` names
    the argument; `axes` is `(batch_axis, length_axis, depth)`.
    """
    x = ops.convert_to_tensor(x)
    if len(x.shape) != len(axes) or x.shape[-1] != axes[-1]:
        raise ValueError(
            f"{what} `({', '.join(map(str, axes))})`, the depth it was built with. "
            f"Received: {name}.shape={tuple(x.shape)}"
        )
    return x


def precomputed_key(layer, key):
    """`layer.project_key(key)` when `layer` has a key projection to save, else `None`.

    For a loop that attends to the same `key` at every step: pass the result as
    `projected_key=` to each step's call (`None` changes nothing).
    """
    if not has_key_projection(layer):
        return None  # the key is scored as it is: nothing to compute once
    return layer.project_key(key)


def has_key_projection(layer):
    """Whether `layer`'s score has a part that depends on the key alone, to compute once.

    False for scores that read the key as it is (dot, bilinear, ...) and for a
    subclass that redefines `score` below the class that defines `project_key`
    (its own score would be bypassed).
    """
    return isinstance(layer, BaseScoreAttention) and layer._projects_key()


@dataclasses.dataclass(frozen=True)
class PreparedInputs:
    """What `BaseScoreAttention._prepare_inputs` returns (see there)."""

    query: object
    key: object
    single_step: bool
    query_mask: object
    padding_mask: object
    attention_mask: object
    query_length: object
    value_length: object


def _unpack_mask_list(mask, query_mask, value_mask):
    """Returns `(query_mask, value_mask)` with the entries of a Keras-style `mask` list first."""
    if mask is None:
        return query_mask, value_mask
    if not isinstance(mask, list | tuple) or len(mask) != 2:
        raise ValueError(
            "`mask` must be a list `[query_mask, value_mask]` (either may be None); use "
            "`query_mask=`/`value_mask=` for a single mask. "
            f"Received: mask={mask!r}"
        )
    return (
        mask[0] if mask[0] is not None else query_mask,
        mask[1] if mask[1] is not None else value_mask,
    )
