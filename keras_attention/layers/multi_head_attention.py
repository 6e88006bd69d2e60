"""Multi-head attention: self and cross, grouped-query heads, causal and padding masks."""

import contextlib
import math
import threading

import keras
from keras import ops

from keras_attention.layers._common import WeightOptionsMixin, position_offset
from keras_attention.layers._dropout import Dropout
from keras_attention.layers.rotary_embedding import RotaryEmbedding
from keras_attention.ops import compute_attention_mask, masked_softmax, merge_padding_masks
from keras_attention.ops.checks import check_index_range, check_inputs
from keras_attention.ops.chunked_attention import DEFAULT_CHUNK_SIZE, chunked_attention
from keras_attention.ops.full_attention import full_attention, use_full_attention
from keras_attention.ops.fused_attention import fused_attention, use_fused_attention
from keras_attention.ops.masking import large_negative, with_bias_mask
from keras_attention.utils.masking import attach_keras_mask, keras_mask, without_keras_mask
from keras_attention.utils.validation import positive_int, positive_number, rate

# `chunk_size="auto"` chunks when a call's score matrix has at least this many entries per
# batch row and head (query length x key length), e.g. 2048 x 2048.
AUTO_CHUNK_MIN_SCORES = 2048 * 2048


@keras.saving.register_keras_serializable(package="keras_attention")
class MultiHeadAttention(WeightOptionsMixin, keras.layers.Layer):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017).

    `head_i = softmax(Q_i K_iᵀ / √key_dim) V_i` with `Q_i = query W_i^Q`,
    `K_i = key W_i^K`, `V_i = value W_i^V`, and the output `[head_1; ...;
    head_h] W^O`. With `num_key_value_heads < num_heads` the keys and values
    have fewer heads, each shared by `num_heads // num_key_value_heads` query
    heads (grouped-query attention; `1` is multi-query attention).

    The weight layout is that of `keras.layers.MultiHeadAttention`, so weights
    copy over with `set_weights(keras_layer.get_weights())`. Unlike it, an
    explicit `query_mask` is never replaced by the implicit one, padded query
    positions output exact zeros, a fully masked row gives zeros (not NaN or a
    uniform average) in float16, and the causal mask lowers to TFLite builtins.

    Args:
        num_heads: positive int, the number of query heads.
        key_dim: positive int, the size of each query and key head.
        value_dim: positive int, the size of each value head. Defaults to
            `key_dim`.
        num_key_value_heads: positive int dividing `num_heads`. Defaults to
            `num_heads` (ordinary multi-head attention).
        dropout: float in `[0, 1)`, dropout on the attention weights in
            training. Defaults to `0.0`.
        use_bias: bool, biases in the projections. Defaults to `True`.
        output_dim: positive int, the output size. Defaults to the query depth.
        chunk_size: how the attention is computed. `"auto"` (the default)
            uses the memory-efficient chunked path (`ops.chunked_attention`:
            blocks of 512 queries x 512 keys with an online softmax and
            recomputation in the backward pass, so memory grows linearly with
            the length) when the
            query length times the key length reaches `2048 * 2048`, and the
            full `(batch, heads, Tq, Tv)` score matrix below that; when the
            lengths are unknown at trace time the choice is made at run time.
            A positive int always uses blocks of that size (when the key length
            exceeds it); `None` always uses the full path. Both
            paths give the same outputs and gradients to float rounding. With
            `return_attention_scores=True` the weights are returned in full,
            so such a call uses the full path. On TensorFlow, a call that returns
            no weights runs the full path through `ops.full_attention` (the
            same values and, in training, the same dropout decisions; its
            backward pass, written out by hand, makes fewer passes over the
            `(Tq, Tv)` weights). On
            PyTorch, a float32 call that
            returns no weights and draws no dropout runs PyTorch's fused kernel
            (`scaled_dot_product_attention`, which keeps no score matrix for
            the backward pass) on the full path, and `"auto"` then takes that
            kernel at every length; an int `chunk_size` still chunks.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for the four
            projections.
        seed: optional int, dropout seed.
        rotary_max_wavelength: optional positive number: rotate the query and
            key heads with rotary position embeddings (RoPE, "rotate half"
            layout, `RotaryEmbedding`) of this base wavelength before the
            scores, so the scores depend on relative positions. The positions
            start at `0`, or at `cache_update_index` with a cache (the keys
            are rotated before they are cached). Self-attention only: not
            with `projected_key_value`. Defaults to `None` (no rotation).
        **kwargs: base layer arguments.

    Call arguments:
        query: `(batch_size, Tq, dq)`.
        value: `(batch_size, Tv, dv)`; may be `None` with
            `projected_key_value`.
        key: optional `(batch_size, Tv, dk)`; defaults to `value`.
        query_mask, value_mask, key_mask: boolean padding masks, filled from
            the inputs' Keras masks when not given.
        attention_mask: boolean `(batch_size, Tq, Tv)`, ANDed with the others.
        attention_bias: optional float tensor added to the scaled scores before
            the softmax, of rank 4 and broadcastable to
            `(batch_size, num_heads, Tq, Tv)` (e.g. a `RelativePositionBias`).
        use_causal_mask: bool, query `i` attends to positions `<= i`.
        return_attention_scores: bool, also return the per-head weights.
        cache: optional `(key_cache, value_cache)` for decoding, of shapes
            `(batch_size, max_length, num_key_value_heads, key_dim)` and
            `(batch_size, max_length, num_key_value_heads, value_dim)` (rank 4,
            so a decode step converts to TFLite builtins); see `init_cache`.
            The keys and values of this call are written at
            `cache_update_index` and the query attends causally over the
            cache: query `i` sees cache positions `<= cache_update_index + i`.
            Prefill is a call with the prompt at index `0`; a decode step a
            call with one token at index `t`. With a cache, `value_mask` and
            `attention_mask` cover the `max_length` cache positions (e.g. the
            left padding of prompts).
        cache_update_index: int or scalar int tensor, where this call's keys
            and values go in the cache (required with `cache`). It must
            satisfy `0 <= cache_update_index <= max_length - Tv` (`Tv` the
            length of this call's keys). A value known at the call (an int, an
            eager tensor) outside that range raises `ValueError`. A traced
            value is asserted at run time on TensorFlow (`InvalidArgumentError`
            naming `cache_update_index`); under XLA (`jit_compile=True`) and in
            TFLite, which drop assertions, an out-of-range write is clamped
            into the cache (the semantics of `dynamic_update_slice`), so a
            compiled decoding loop must bound its index itself (as
            `keras_attention.generation` does with `max_length`).
        projected_key_value: optional `(key_heads, value_heads)` from
            `project_key_value(value, key)`, used instead of projecting
            `value` and `key` again: the cross-attention cache of a decoder,
            whose memory is the same at every step. `value` and `key` are then
            not read (pass `None`), so their Keras masks are not either: pass
            `value_mask`.
        training: bool, whether dropout is active.

    Every call checks its inputs: ranks, the feature sizes the layer was
    built with, batch sizes and lengths that must agree between the query,
    value, key, masks, cache and `projected_key_value`, and mask dtypes
    (boolean or integer; float masks raise `ValueError`: convert an additive
    mask with `mask == 0`). Sizes unknown while tracing are asserted at run
    time on TensorFlow (dropped under XLA). Empty batches and sequences give
    empty outputs.

    Returns:
        `(batch_size, Tq, output_dim)`, then the weights
        `(batch_size, num_heads, Tq, Tv)` (before dropout) with
        `return_attention_scores=True` (`Tv = max_length` with a cache), then
        the updated `(key_cache, value_cache)` when a cache was given.

    Example:

    >>> import numpy as np
    >>> layer = MultiHeadAttention(num_heads=4, key_dim=8, num_key_value_heads=2)
    >>> x = np.random.rand(2, 5, 16).astype("float32")
    >>> y, scores = layer(x, x, use_causal_mask=True, return_attention_scores=True)
    >>> tuple(y.shape), tuple(scores.shape)
    ((2, 5, 16), (2, 4, 5, 5))

    Cross-attention over a memory projected once, as a decoder does at
    every step:

    >>> memory = np.random.rand(2, 7, 16).astype("float32")
    >>> key_value = layer.project_key_value(memory)
    >>> step = layer(x[:, :1], None, projected_key_value=key_value)
    >>> np.allclose(step, layer(x[:, :1], memory), atol=1e-6)
    True

    References:
        Vaswani et al., 2017, "Attention Is All You Need"; Ainslie et al.,
        2023, "GQA: Training Generalized Multi-Query Transformer Models".
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        num_key_value_heads=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        chunk_size="auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        rotary_max_wavelength=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = positive_int("MultiHeadAttention", "num_heads", num_heads)
        self.key_dim = positive_int("MultiHeadAttention", "key_dim", key_dim)
        self.value_dim = positive_int(
            "MultiHeadAttention", "value_dim", value_dim if value_dim is not None else key_dim
        )
        self.num_key_value_heads = positive_int(
            "MultiHeadAttention",
            "num_key_value_heads",
            num_key_value_heads if num_key_value_heads is not None else num_heads,
        )
        if self.num_heads % self.num_key_value_heads:
            raise ValueError(
                "`num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, num_key_value_heads={num_key_value_heads}"
            )
        self.dropout = rate(type(self).__name__, "dropout", dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = (
            None
            if output_dim is None
            else positive_int("MultiHeadAttention", "output_dim", output_dim)
        )
        if not (chunk_size is None or chunk_size == "auto") and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(
                'MultiHeadAttention: `chunk_size` must be "auto", a positive integer or None. '
                f"Received: chunk_size={chunk_size!r}"
            )
        self.chunk_size = chunk_size
        self.seed = seed
        self.rotary_max_wavelength = None
        self._rotary = None
        if rotary_max_wavelength is not None:
            self.rotary_max_wavelength = positive_number(
                "MultiHeadAttention", "rotary_max_wavelength", rotary_max_wavelength
            )
            if self.key_dim % 2:
                raise ValueError(
                    "MultiHeadAttention: rotary position embeddings rotate features in pairs, so "
                    f"`key_dim` must be even. Received: key_dim={key_dim}, "
                    f"rotary_max_wavelength={rotary_max_wavelength}"
                )
            self._rotary = RotaryEmbedding(
                self.rotary_max_wavelength, dtype=self.dtype_policy, name="rotary_embedding"
            )
        self._set_weight_options(
            kernel_initializer,
            bias_initializer,
            kernel_regularizer,
            bias_regularizer,
            kernel_constraint,
            bias_constraint,
        )
        self.supports_masking = True

    def build(self, query_shape, value_shape=None, key_shape=None):
        if value_shape is None:
            raise ValueError(
                "MultiHeadAttention: building needs the shape of `value` (the key and value "
                "projections are sized by it); `projected_key_value` works on a layer already "
                "called once with a `value`. Received: value=None"
            )
        query_shape, value_shape = tuple(query_shape), tuple(value_shape)
        key_shape = value_shape if key_shape is None else tuple(key_shape)
        for arg, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3:
                raise ValueError(
                    f"MultiHeadAttention: `{arg}` must have rank 3 `(batch_size, length, dim)`. "
                    f"Received: {arg}.shape={shape}"
                )
            if shape[-1] is None:
                raise ValueError(
                    f"MultiHeadAttention: the last dimension of `{arg}` must be known. "
                    f"Received: {arg}.shape={shape}"
                )
        if None not in (key_shape[1], value_shape[1]) and key_shape[1] != value_shape[1]:
            raise ValueError(
                "MultiHeadAttention: `key` and `value` must have the same length. "
                f"Received: key.shape={key_shape}, value.shape={value_shape}"
            )
        self._input_dims = (query_shape[-1], value_shape[-1], key_shape[-1])
        bias = "de" if self.use_bias else None
        self._query_dense = self._projection("query", (self.num_heads, self.key_dim), bias)
        self._query_dense.build(query_shape)
        self._key_dense = self._projection("key", (self.num_key_value_heads, self.key_dim), bias)
        self._key_dense.build(key_shape)
        self._value_dense = self._projection(
            "value", (self.num_key_value_heads, self.value_dim), bias
        )
        self._value_dense.build(value_shape)
        self._output_dense = keras.layers.EinsumDense(
            "abcd,cde->abe",
            output_shape=(None, self.output_dim or query_shape[-1]),
            bias_axes="e" if self.use_bias else None,
            name="attention_output",
            dtype=self.dtype_policy,
            **self._sublayer_weight_options(),
        )
        self._output_dense.build(query_shape[:2] + (self.num_heads, self.value_dim))
        self._dropout_layer = Dropout(
            self.dropout, seed=self.seed, dtype=self.dtype_policy, name="attention_dropout"
        )
        # The chunked path draws one seed per call for its hash-based dropout.
        self._chunk_seed_generator = (
            keras.random.SeedGenerator(self.seed, name="chunk_dropout_seed")
            if self.dropout > 0
            else None
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
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        attention_bias=None,
        cache=None,
        cache_update_index=None,
        projected_key_value=None,
        training=None,
    ):
        if cache is not None and cache_update_index is None:
            raise ValueError(
                "MultiHeadAttention: `cache` needs `cache_update_index`. Received: cache_update_index=None"
            )
        if cache is None and cache_update_index is not None:
            raise ValueError(
                "MultiHeadAttention: `cache_update_index` is the write position in a `cache`; no "
                f"cache was given. Received: cache_update_index={cache_update_index!r}, cache=None"
            )
        if cache is not None:
            # The keys are the cache's: the Keras mask Keras passes from this call's value (or
            # key), `(B, Tq)`, is no mask over them; an explicit `(B, max_length)` one is kept.
            if value_mask is not None and value_mask is keras_mask(value):
                value_mask = None
            if key_mask is not None and key is not None and key_mask is keras_mask(key):
                key_mask = None
        query, value, key, cache, projected_key_value, masks = self._check_call_inputs(
            query, value, key, cache, projected_key_value,
            (query_mask, value_mask, key_mask, attention_mask),
        )  # fmt: skip
        if attention_bias is not None:
            if not hasattr(attention_bias, "shape"):  # a nested list
                attention_bias = ops.convert_to_tensor(attention_bias, self.compute_dtype)
            attention_bias = self._check_attention_bias(
                attention_bias, query, value, key, cache, projected_key_value
            )
        query_mask, value_mask, key_mask, attention_mask = masks
        if cache is not None:
            cache_update_index = position_offset(  # an int or an integer scalar, never a float
                "MultiHeadAttention", "cache_update_index", cache_update_index
            )
            cache_update_index = check_index_range(
                "MultiHeadAttention",
                "cache_update_index",
                cache_update_index,
                ops.shape(value if key is None else key)[1] if value is not None else 0,
                ops.shape(cache[0])[2 if id(self) in _decoding_state().heads_first else 1],
                "max_length",
            )
        # The masks were taken as arguments; the projections get mask-free inputs (a copy, so
        # the caller's tensors keep their masks).
        query_heads = self._project(self._query_dense, query)  # (B, Tq, H, key_dim)
        if projected_key_value is not None:
            if cache is not None:
                raise ValueError(
                    "MultiHeadAttention: `projected_key_value` (a fixed memory) and `cache` (keys "
                    "and values written step by step) cannot be used together. Received: "
                    f"projected_key_value={[_shape_of(x) for x in projected_key_value]}, "
                    f"cache={[_shape_of(x) for x in cache]}"
                )
            if value is not None or key is not None:
                raise ValueError(
                    "MultiHeadAttention: with `projected_key_value` the memory is already "
                    "projected, so `value` and `key` must be `None` (pass its padding mask as "
                    f"`value_mask`). Received: value={_shape_of(value)}, key={_shape_of(key)}"
                )
            if self._rotary is not None:
                raise ValueError(
                    "MultiHeadAttention: rotary position embeddings (`rotary_max_wavelength`) "
                    "need the keys' positions, so `projected_key_value` (a fixed memory) cannot "
                    f"be used. Received: rotary_max_wavelength={self.rotary_max_wavelength}"
                )
            key_heads, value_heads = self._validate_key_value(projected_key_value)
            key_heads = ops.cast(key_heads, query_heads.dtype)  # (B, Tv, Hkv, key_dim)
            value_heads = ops.cast(value_heads, query_heads.dtype)  # (B, Tv, Hkv, value_dim)
        else:
            if value is None:
                raise ValueError(
                    "MultiHeadAttention: `value` is required unless `projected_key_value` is "
                    "given. Received: value=None"
                )
            key_heads, value_heads = self.project_key_value(value, key)
        if self._rotary is not None:
            start = 0 if cache is None else cache_update_index
            query_heads = self._rotary(query_heads, start_index=start)
            key_heads = self._rotary(key_heads, start_index=start)
        causal_offset = 0
        if cache is not None:
            cache, key_heads, value_heads = self._update_cache(
                cache, key_heads, value_heads, cache_update_index
            )
            key_heads = ops.cast(key_heads, query_heads.dtype)  # (B, max_length, Hkv, d)
            value_heads = ops.cast(value_heads, query_heads.dtype)
            use_causal_mask, causal_offset = True, cache_update_index
        groups = self.num_heads // self.num_key_value_heads
        if groups > 1:  # query head h reads key/value head h // groups
            key_heads = ops.repeat(key_heads, groups, axis=2)
            value_heads = ops.repeat(value_heads, groups, axis=2)
        query_heads = query_heads * ops.cast(1.0 / math.sqrt(self.key_dim), query_heads.dtype)
        attention = {
            "query_heads": query_heads,
            "key_heads": key_heads,
            "value_heads": value_heads,
            "value_mask": merge_padding_masks(value_mask, key_mask),
            "attention_mask": attention_mask,
            "attention_bias": attention_bias,
            "use_causal_mask": use_causal_mask,
            "causal_offset": causal_offset,
            "training": training,
        }
        weights = None
        chunk_size = self._chunk_size_for(
            query_heads, key_heads, return_attention_scores, self.dropout > 0 and bool(training)
        )
        if chunk_size is None:
            context, weights = self._full_attention(
                query_mask=query_mask, need_weights=return_attention_scores, **attention
            )
        elif isinstance(chunk_size, int):
            context = self._chunked_attention(chunk_size=chunk_size, **attention)
        else:  # lengths unknown at trace time: decide at run time
            context = ops.cond(
                chunk_size,
                lambda: self._chunked_attention(chunk_size=DEFAULT_CHUNK_SIZE, **attention),
                lambda: self._full_attention(
                    query_mask=query_mask, need_weights=False, **attention
                )[0],
            )
        output = self._project(self._output_dense, context)  # (B, Tq, output_dim)
        if query_mask is not None:
            query_mask = ops.cast(query_mask, "bool")
            output = ops.where(ops.expand_dims(query_mask, -1), output, ops.zeros_like(output))
            attach_keras_mask(output, query_mask)
        results = (output,)
        if return_attention_scores:
            results += (weights,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def _check_call_inputs(self, query, value, key, cache, projected_key_value, masks):
        """Checks ranks, built feature sizes, batch sizes, lengths and mask dtypes at every call.

        Returns `(query, value, key, cache, projected_key_value, masks)`, guarded by run-time
        assertions where sizes are unknown while tracing (see `keras_attention.ops.checks`).
        """
        query_dim, value_dim, key_dim = getattr(self, "_input_dims", (None, None, None))
        heads = self.num_key_value_heads
        inputs = [("query", query, ("batch_size", "Tq", query_dim))]
        memory = "Tv"
        if projected_key_value is None and value is not None:
            inputs += [
                ("value", value, ("batch_size", "Tv", value_dim)),
                ("key", key, ("batch_size", "Tv", key_dim)),
            ]
        if cache is not None and id(self) not in _decoding_state().heads_first:
            self._validate_cache(cache)
            memory = "max_length"
            inputs += [
                ("cache[0]", cache[0], ("batch_size", memory, heads, self.key_dim)),
                ("cache[1]", cache[1], ("batch_size", memory, heads, self.value_dim)),
            ]
        if projected_key_value is not None and isinstance(projected_key_value, list | tuple):
            self._validate_key_value(projected_key_value)
            inputs += [
                ("projected_key_value[0]", projected_key_value[0],
                 ("batch_size", "Tv", heads, self.key_dim)),
                ("projected_key_value[1]", projected_key_value[1],
                 ("batch_size", "Tv", heads, self.value_dim)),
            ]  # fmt: skip
        if cache is not None and id(self) in _decoding_state().heads_first:
            memory = None  # the heads-first cache is checked by `_validate_cache`
        names = ("query_mask", "value_mask", "key_mask", "attention_mask")
        templates = (("batch_size", "Tq"), ("batch_size", memory), ("batch_size", memory),
                     ("batch_size", "Tq", memory))  # fmt: skip
        checked = check_inputs(
            "MultiHeadAttention",
            inputs,
            masks=list(zip(names, masks, templates, strict=True)),
        )
        query, rest = checked[0], checked[1:]
        if projected_key_value is None and value is not None:
            value, key, rest = rest[0], rest[1], rest[2:]
        if cache is not None and memory == "max_length":
            cache, rest = (rest[0], rest[1]), rest[2:]
        if projected_key_value is not None and isinstance(projected_key_value, list | tuple):
            projected_key_value, rest = (rest[0], rest[1]), rest[2:]
        return query, value, key, cache, projected_key_value, tuple(rest)

    def _check_attention_bias(self, bias, query, value, key, cache, projected_key_value=None):
        """`attention_bias` must have rank 4 and sizes 1 or `(batch_size, num_heads, Tq, Tv)`."""
        if cache is not None:
            heads_first = id(self) in _decoding_state().heads_first
            memory = cache[0].shape[2 if heads_first else 1]
        elif projected_key_value is not None:  # `(batch_size, Tv, heads, key_dim)` key heads
            memory = projected_key_value[0].shape[1]
        else:
            memory = None if value is None else (value if key is None else key).shape[1]
        wanted = (query.shape[0], self.num_heads, query.shape[1], memory)
        shape = tuple(bias.shape)
        ok = len(shape) == 4 and all(
            b is None or w is None or b in (1, w) for b, w in zip(shape, wanted, strict=True)
        )
        message = (
            "MultiHeadAttention: `attention_bias` must have rank 4 and be broadcastable to "
            f"`(batch_size, num_heads, Tq, Tv)` = {wanted}."
        )
        if not ok:
            raise ValueError(f"{message} Received: attention_bias.shape={shape}")
        unknown = [i for i, (b, w) in enumerate(zip(shape, wanted, strict=True))
                   if b != 1 and (b is None or w is None)]  # fmt: skip
        if not unknown or keras.backend.backend() != "tensorflow":
            return bias
        # Sizes known only at run time (a traced signature with `None` axes): asserted there.
        import tensorflow as tf  # noqa: PLC0415 (TensorFlow only on its own backend)

        source = projected_key_value[0] if projected_key_value is not None else (
            value if key is None else key)  # fmt: skip
        if cache is not None:
            source = cache[0]
        memory_axis = 2 if cache is not None and id(self) in _decoding_state().heads_first else 1
        full = [tf.shape(query)[0], self.num_heads, tf.shape(query)[1],
                tf.shape(source)[memory_axis]]  # fmt: skip
        sizes = tf.shape(bias)
        checks = [tf.logical_or(tf.equal(sizes[i], 1), tf.equal(sizes[i], full[i])) for i in unknown]
        assertion = tf.debugging.Assert(
            tf.reduce_all(tf.stack(checks)),
            [message, "Received: attention_bias.shape=", sizes, "scores shape=", tf.stack(full)],
        )
        with tf.control_dependencies([assertion]):
            return tf.identity(bias)

    def _chunk_size_for(
        self, query_heads, key_heads, return_attention_scores, dropout_active=False
    ):
        """`None` (full path), an int (chunked path) or a boolean tensor (decided at run time)."""
        if self.chunk_size is None or return_attention_scores:
            return None
        if self.chunk_size == "auto" and use_fused_attention(
            query_heads.dtype, False, dropout_active
        ):
            return None  # PyTorch's fused kernel: less time and memory than the chunked path
        query_length, key_length = query_heads.shape[1], key_heads.shape[1]
        if 0 in (query_heads.shape[0], query_length, key_length):
            return None  # nothing to chunk: the full path gives the empty output
        if self.chunk_size != "auto":
            if key_length is not None and key_length <= self.chunk_size:
                return None  # one chunk: the full path computes the same, faster
            return self.chunk_size
        if query_length is not None and key_length is not None:
            return (
                DEFAULT_CHUNK_SIZE if query_length * key_length >= AUTO_CHUNK_MIN_SCORES else None
            )
        dynamic = ops.shape(query_heads)[1] * ops.shape(key_heads)[1]
        return ops.greater_equal(dynamic, AUTO_CHUNK_MIN_SCORES)

    def _full_attention(
        self,
        query_heads,
        key_heads,
        value_heads,
        query_mask,
        value_mask,
        attention_mask,
        attention_bias,
        use_causal_mask,
        causal_offset,
        training,
        need_weights=True,
    ):
        """Materialises the `(B, H, Tq, Tv)` weights; returns the context and the weights.

        Without `need_weights`, TensorFlow runs `ops.full_attention` (dropout included) and
        PyTorch, when no dropout is drawn, its fused kernel (`ops.fused_attention`); the
        weights returned are then `None`.
        """
        mask = compute_attention_mask(
            query_mask=query_mask,
            value_mask=value_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            query_length=ops.shape(query_heads)[1],
            value_length=ops.shape(key_heads)[1],
            causal_offset=causal_offset,
        )
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # (B, 1, Tq, Tv)
        dropout_active = self.dropout > 0 and bool(training)
        empty = 0 in (query_heads.shape[0], query_heads.shape[1], key_heads.shape[1])
        if not empty and use_fused_attention(query_heads.dtype, need_weights, dropout_active):
            context = fused_attention(query_heads, key_heads, value_heads, mask, attention_bias)
            return context, None
        if not empty and use_full_attention(need_weights):
            context = full_attention(
                query_heads, key_heads, value_heads, mask, attention_bias,
                dropout_rate=self._dropout_layer.rate if dropout_active else 0.0,
                dropout_seed=self._dropout_layer.seed_generator if dropout_active else None,
            )  # fmt: skip
            return context, None
        if keras.backend.standardize_dtype(query_heads.dtype) == "float16":
            # In float32: scores past 65,504 would be inf, and the softmax NaN.
            query_heads, key_heads = ops.cast(query_heads, "float32"), ops.cast(key_heads, "float32")
        scores = ops.einsum("bqhd,bkhd->bhqk", query_heads, key_heads)  # (B, H, Tq, Tv)
        if attention_bias is not None:  # a bias of -inf: the most negative float, never NaN
            scores = ops.maximum(
                scores + ops.cast(attention_bias, scores.dtype),
                ops.cast(large_negative(scores.dtype), scores.dtype),
            )
        weights = ops.cast(masked_softmax(scores, with_bias_mask(mask, attention_bias)),
                           value_heads.dtype)  # fmt: skip
        dropped = self._dropout_layer(weights, training=training)
        context = ops.einsum("bhqk,bkhd->bqhd", dropped, value_heads)  # (B, Tq, H, value_dim)
        return context, weights

    def _chunked_attention(
        self,
        query_heads,
        key_heads,
        value_heads,
        value_mask,
        attention_mask,
        attention_bias,
        use_causal_mask,
        causal_offset,
        training,
        chunk_size,
    ):
        """Key chunks with an online softmax; the query mask is applied to the output."""
        rate, seed = 0.0, None
        if training and self._chunk_seed_generator is not None:
            rate = self.dropout
            seed = ops.cast(ops.sum(self._chunk_seed_generator.next()), "int32")
        return chunked_attention(
            query_heads,
            key_heads,
            value_heads,
            value_mask=value_mask,
            attention_mask=attention_mask,
            bias=attention_bias,
            use_causal_mask=use_causal_mask,
            causal_offset=causal_offset,
            chunk_size=chunk_size,
            dropout_rate=rate,
            dropout_seed=seed,
        )

    def project_key_value(self, value, key=None):
        """The memory's `(key_heads, value_heads)`, for `projected_key_value`.

        Shapes `(batch_size, Tv, num_key_value_heads, key_dim)` and
        `(batch_size, Tv, num_key_value_heads, value_dim)`; `key` defaults to
        `value`. The layer must be built (called once).
        """
        if not self.built:
            raise ValueError(
                "MultiHeadAttention: `project_key_value` needs a built layer (call it once "
                "or call `build`). Received: an unbuilt layer"
            )
        _, value_dim, key_dim = self._input_dims
        value, key = check_inputs(  # the depths the projections were built for, at every call
            "MultiHeadAttention.project_key_value",
            [("value", value, ("batch_size", "Tv", value_dim)),
             ("key", key, ("batch_size", "Tv", key_dim))],
        )  # fmt: skip
        if key is None:
            key = value
        key_heads = self._project(self._key_dense, key)
        value_heads = self._project(self._value_dense, value)
        return key_heads, value_heads

    @staticmethod
    def chunk_size_for_length(sequence_length):
        """The `chunk_size` for sequences of at most `sequence_length` positions.

        `None` (the full path, fixed when the layer is built) when no score
        matrix of such sequences reaches the size at which `chunk_size="auto"`
        chunks (`sequence_length < 2048`), else `"auto"`. A model whose
        lengths are bounded uses it so that unknown lengths (bucketed batches,
        serving) do not trace both paths behind a run-time `cond`.

        Example:

        >>> MultiHeadAttention.chunk_size_for_length(512) is None
        True
        >>> MultiHeadAttention.chunk_size_for_length(4096)
        'auto'
        """
        return None if sequence_length * sequence_length < AUTO_CHUNK_MIN_SCORES else "auto"

    def init_cache(self, batch_size, max_length, dtype=None):
        """A zero `(key_cache, value_cache)` for decoding up to `max_length` positions.

        Shapes `(batch_size, max_length, num_key_value_heads, key_dim / value_dim)`
        (inside `fast_decoding`: `(batch_size, num_key_value_heads, max_length, ...)`).
        """
        dtype = dtype or self.compute_dtype
        heads = self.num_key_value_heads
        if id(self) in _decoding_state().heads_first:
            shapes = [(batch_size, heads, max_length, size) for size in (self.key_dim,
                                                                          self.value_dim)]
        else:
            shapes = [(batch_size, max_length, heads, size) for size in (self.key_dim,
                                                                          self.value_dim)]
        return tuple(ops.zeros(shape, dtype) for shape in shapes)

    def _update_cache(self, cache, key_heads, value_heads, index):
        """Writes this call's keys and values at `index`; `(new cache, keys, values)`.

        The keys and values returned cover the cache, `(B, max_length, Hkv, d)`.
        Inside `fast_decoding` the cache is kept heads first, `(B, Hkv,
        max_length, d)`: the layout the attention's batched products read, so
        the view returned is a transpose XLA cancels against the product's
        own (with the usual layout, XLA copies every cache at every step).
        """
        heads_first = id(self) in _decoding_state().heads_first
        key_cache, value_cache = self._validate_cache(cache, heads_first)
        if heads_first:
            start = [0, 0, index, 0]
            key_heads = ops.transpose(key_heads, (0, 2, 1, 3))
            value_heads = ops.transpose(value_heads, (0, 2, 1, 3))
        else:
            start = [0, index, 0, 0]
        key_cache = ops.slice_update(key_cache, start, ops.cast(key_heads, key_cache.dtype))
        value_cache = ops.slice_update(value_cache, start, ops.cast(value_heads, value_cache.dtype))
        if heads_first:
            return (key_cache, value_cache), *(
                ops.transpose(c, (0, 2, 1, 3)) for c in (key_cache, value_cache)
            )
        return (key_cache, value_cache), key_cache, value_cache

    def compute_mask(self, query, previous_mask=None):
        return previous_mask

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        return tuple(query_shape[:-1]) + (self.output_dim or query_shape[-1],)

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        return_attention_scores=False,
        cache=None,
        projected_key_value=None,
        **kwargs,
    ):
        output = keras.KerasTensor(self.compute_output_shape(query.shape), dtype=self.compute_dtype)
        results = (output,)
        if return_attention_scores:
            memory = cache if cache is not None else projected_key_value
            memory_length = value.shape[1] if memory is None else memory[0].shape[1]
            scores_shape = (query.shape[0], self.num_heads, query.shape[1], memory_length)
            results += (keras.KerasTensor(scores_shape, dtype=self.compute_dtype),)
        if cache is not None:
            results += (tuple(keras.KerasTensor(c.shape, dtype=c.dtype) for c in cache),)
        return results[0] if len(results) == 1 else results

    def _validate_cache(self, cache, heads_first=False):
        if heads_first:  # `fast_decoding`'s layout: checked as its `(B, max_length, Hkv, d)` view
            if not (isinstance(cache, list | tuple) and len(cache) == 2):
                return self._validate_heads_pair(cache, "MultiHeadAttention", "cache",
                                                 "(key_cache, value_cache)", "max_length",
                                                 "init_cache")  # fmt: skip
            view = [ops.transpose(c, (0, 2, 1, 3)) if len(c.shape) == 4 else c for c in cache]
            self._validate_cache(view)
            return cache
        return self._validate_heads_pair(
            cache,
            "MultiHeadAttention",
            "cache",
            "(key_cache, value_cache)",
            "max_length",
            "init_cache",
        )

    def _validate_key_value(self, key_value, owner="MultiHeadAttention", argument=None, maker=None):
        """Checks `(key_heads, value_heads)`; `owner`, `argument`, `maker` name them in errors."""
        return self._validate_heads_pair(
            key_value,
            owner,
            argument or "projected_key_value",
            "(key_heads, value_heads)",
            "Tv",
            maker or "project_key_value",
        )

    def _validate_heads_pair(self, pair, owner, argument, names, length, maker):
        """Checks a pair of rank-4 key and value heads `(batch_size, length, Hkv, d)`.

        Both must have this layer's key/value heads and sizes, and the same batch size and
        length wherever both are known; the error names `owner`'s `argument`, the expected
        shapes and `maker`, the method that makes such a pair.
        """
        expected = (
            (self.num_key_value_heads, self.key_dim),
            (self.num_key_value_heads, self.value_dim),
        )
        is_pair = isinstance(pair, list | tuple) and len(pair) == 2
        shapes = [_shape_of(x) for x in pair] if is_pair else None
        ok = is_pair and all(
            isinstance(shape, tuple) and len(shape) == 4 and shape[2:] == e
            for shape, e in zip(shapes, expected, strict=True)
        )
        ok = ok and all(
            a is None or b is None or a == b
            for a, b in zip(shapes[0][:2], shapes[1][:2], strict=True)
        )
        if not ok:
            wanted = [f"(batch_size, {length}, {heads}, {size})" for heads, size in expected]
            raise ValueError(
                f"{owner}: `{argument}` must be `{names}` of shapes {wanted[0]} and {wanted[1]}; "
                f"see `{maker}`. Received: "
                f"{argument}={[_shape_of(x) for x in pair] if is_pair else _shape_of(pair)}"
            )
        return pair

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "num_key_value_heads": self.num_key_value_heads,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_dim": self.output_dim,
            "chunk_size": self.chunk_size,
            "seed": self.seed,
            "rotary_max_wavelength": self.rotary_max_wavelength,
            **self._weight_options_config(),
        }

    def _project(self, layer, inputs):
        """`layer(inputs)` for one of the four `EinsumDense` projections.

        Inside `fast_decoding` (a decoding loop), the kernel comes
        reshaped to 2-D from outside the loop, and the projection is one 2-D
        matmul: XLA on a CPU fuses the reshape of a kernel read inside a loop
        into the dot and emits it as a plain loop, ~30x slower than a matrix
        product for one token (a GPT decoding step took 3x longer).
        """
        flat = _decoding_state().kernels.get(id(self), {}).get(layer.name)
        if flat is None:
            outputs = layer(without_keras_mask(inputs))
            if 0 in inputs.shape[:2]:  # TF's einsum gives (1, 0, ...) for a (0, 0, ...) input
                outputs = ops.reshape(outputs, tuple(inputs.shape[:2]) + tuple(outputs.shape[2:]))
            return outputs
        kernel, bias, outer = flat
        inputs = ops.cast(without_keras_mask(inputs), kernel.dtype)
        leading = ops.shape(inputs)[:2]  # (batch_size, length)
        outputs = ops.matmul(ops.reshape(inputs, (-1, kernel.shape[0])), kernel)
        if bias is not None:
            outputs = outputs + bias
        return ops.reshape(outputs, (leading[0], leading[1], *outer))

    def flat_projections(self):
        """`{name: (2-D kernel, flat bias or None, output heads shape)}` of the four projections.

        In the compute dtype; for `fast_decoding`. A quantized or
        LoRA-enabled projection is left out (it is called as a layer).
        """
        flat = {}
        for layer in (self._query_dense, self._key_dense, self._value_dense, self._output_dense):
            if layer.quantization_mode is not None or getattr(layer, "lora_enabled", False):
                continue
            kernel = ops.cast(layer.kernel, self.compute_dtype)
            contracted = len(kernel.shape) - 1 if layer is self._output_dense else 1
            inner = math.prod(kernel.shape[:contracted])
            outer = tuple(kernel.shape[contracted:])
            bias = None
            if layer.bias is not None:
                bias = ops.reshape(ops.cast(layer.bias, self.compute_dtype), (-1,))
            flat[layer.name] = (ops.reshape(kernel, (inner, math.prod(outer))), bias, outer)
        return flat

    def _projection(self, name, heads_shape, bias_axes):
        return keras.layers.EinsumDense(
            "abc,cde->abde",
            output_shape=(None,) + heads_shape,
            bias_axes=bias_axes,
            name=name,
            dtype=self.dtype_policy,
            **self._sublayer_weight_options(),
        )


def _shape_of(x):
    """The shape of a tensor as a tuple, for error messages (`None` and other values as they are)."""
    shape = getattr(x, "shape", None)
    return x if shape is None else tuple(shape)


@contextlib.contextmanager
def fast_decoding(model, heads_first=True):
    """Within it, every built `MultiHeadAttention` of `model` decodes the fast way.

    For a decoding loop traced inside the block (`keras_attention.generation.
    generate`), two changes that give the same results (to float rounding)
    and make a one-token step with XLA on a CPU 2-3x faster:

    - the projection kernels are reshaped to 2-D once, before the loop, and
      the loop reads them as inputs (XLA fuses a reshape read inside the loop
      into the product and emits it as a plain loop);
    - with `heads_first`, `init_cache` gives, and the layer keeps, caches
      heads first, `(batch_size, num_key_value_heads, max_length, head_dim)`:
      the layout the attention reads (XLA otherwise transposes every cache
      at every step; +23% tokens/s at batch 8, -12% at batch 1, where the
      caches are small).

    Nothing changes outside the block, in other threads, or for a model
    without such layers; caches made inside are only for calls inside.

    Args:
        model: a Keras layer or model (its layers are searched).
        heads_first: bool, keep the caches heads first. Defaults to `True`.
    """
    layers = [
        layer
        for layer in getattr(model, "_flatten_layers", lambda: [])()
        if isinstance(layer, MultiHeadAttention) and layer.built
    ]
    state = _decoding_state()
    previous = (state.kernels, state.heads_first)
    # Per thread (a trace runs in the caller's thread), so another thread tracing the same
    # layers meanwhile never reads tensors of this trace's graph.
    state.kernels = {**state.kernels, **{id(layer): layer.flat_projections() for layer in layers}}
    if heads_first:
        state.heads_first = state.heads_first | {id(layer) for layer in layers}
    try:
        yield
    finally:
        state.kernels, state.heads_first = previous


_STATE = threading.local()


def _decoding_state():
    """This thread's `fast_decoding` state: `kernels` by layer id, `heads_first` layer ids."""
    if not hasattr(_STATE, "kernels"):
        _STATE.kernels, _STATE.heads_first = {}, frozenset()
    return _STATE
