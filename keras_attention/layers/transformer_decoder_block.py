"""Transformer decoder block: causal self-attention, cross-attention, feed-forward."""

import keras
from keras import ops

from keras_attention.layers._transformer_block import TransformerBlock, zero_padded_positions
from keras_attention.layers.multi_head_attention import _decoding_state
from keras_attention.ops.checks import check_index_range, check_inputs
from keras_attention.utils.masking import keras_mask


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerDecoderBlock(TransformerBlock):
    """Transformer decoder block (Vaswani et al. 2017): causal self-attention, cross-attention, FFN.

    Post-LN (`normalize_first=False`): `h = LN(x + Dropout(SelfMHA(x)))`,
    `c = LN(h + Dropout(CrossMHA(h, encoder_sequence)))`,
    `y = LN(c + Dropout(FFN(c)))`. Pre-LN (`normalize_first=True`):
    `h = x + Dropout(SelfMHA(LN(x)))`, `c = h + Dropout(CrossMHA(LN(h),
    encoder_sequence))`, `y = c + Dropout(FFN(LN(c)))`. The attentions are
    this package's `MultiHeadAttention`.

    Cross-attention is fixed when the block is built, as in keras_hub: the
    first call with an `encoder_sequence` builds an encoder-decoder block; the
    first call without one builds a decoder-only (GPT-style) block with no
    cross-attention weights. Later calls must match, and a `.keras` file
    rebuilds the same structure. The weights have the order and shapes of
    keras_hub's `TransformerDecoder`, so `block.set_weights(
    keras_hub_decoder.get_weights())` copies a trained one.

    Masks: `decoder_padding_mask` (or the Keras mask of `decoder_sequence`)
    masks padded decoder positions as self-attention keys and as queries:
    padded rows of the output and of every score are exact zeros, and the
    output carries the mask. `encoder_padding_mask` (or the Keras mask of
    `encoder_sequence`) gives padded encoder positions exactly zero
    cross-attention weight. Padded positions never reach an unpadded output.

    Decoding: pass a self-attention cache `(key_cache, value_cache)` (from
    `init_cache`) and `self_attention_cache_update_index`; this call's keys and
    values are written at the index and the queries attend causally over the
    cache. Prefill is a call with the prompt at index `0`, a decode step a
    call with one token at index `t`. The encoder keys and values do not
    change from step to step: `compute_cross_attention_cache(encoder_sequence)`
    projects them once, and `cross_attention_cache=` uses them at every step
    instead of projecting `encoder_sequence` again.

    Args:
        intermediate_dim: positive int, the hidden size of the feed-forward
            network.
        num_heads: positive int, the number of attention heads.
        key_dim: positive int, the size of each attention head. Defaults to
            `hidden_dim // num_heads` (`hidden_dim`, the last dimension of
            `decoder_sequence`, must then be divisible by `num_heads`).
        num_key_value_heads: positive int dividing `num_heads`, for
            grouped-query attention (self and cross). Defaults to `num_heads`.
        dropout: float in `[0, 1)`, dropout on the outputs of the attention and
            feed-forward sublayers before each residual addition, in training.
            Defaults to `0.0`.
        attention_dropout: float in `[0, 1)`, dropout on the attention weights
            in training. Defaults to `dropout` (one rate for both, as in
            keras_hub).
        activation: activation of the feed-forward network. Defaults to
            `"relu"`.
        layer_norm_epsilon: positive float. Defaults to `1e-5`.
        normalize_first: bool, pre-LN if `True`, post-LN if `False`. Defaults
            to `False`.
        chunk_size: `"auto"`, a positive int or `None`: how the attentions are
            computed (see `MultiHeadAttention`; chunks keep memory linear in
            the sequence length). Defaults to `"auto"`.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for the
            attention projections and the feed-forward layers.
        seed: optional int, the dropout seed (each dropout gets its own seed
            derived from it).
        rotary_max_wavelength: optional positive number: rotary position
            embeddings of the self-attention's queries and keys (see
            `MultiHeadAttention`), positions from `0` (from the cache index
            when decoding with a cache). Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        decoder_sequence: `(batch_size, Tq, hidden_dim)`.
        encoder_sequence: `(batch_size, S, encoder_dim)`, required by an
            encoder-decoder block (unless `cross_attention_cache` is given)
            and refused by a decoder-only one.
        decoder_padding_mask: optional boolean `(batch_size, Tq)`; defaults to
            the Keras mask of `decoder_sequence`. With a cache it covers the
            `max_length` cache positions, `(batch_size, max_length)` (e.g. the
            left padding of prompts), and the implicit mask is not used.
        encoder_padding_mask: optional boolean `(batch_size, S)`; defaults to
            the Keras mask of `encoder_sequence`.
        self_attention_mask: optional boolean `(batch_size, Tq, Tq)` (with a
            cache `(batch_size, Tq, max_length)`), ANDed with the others.
        cross_attention_mask: optional boolean `(batch_size, Tq, S)`.
        use_causal_mask: bool, causal self-attention. Defaults to `True`;
            always on with a cache.
        self_attention_bias: optional float tensor added to the
            self-attention logits, broadcastable to
            `(batch_size, num_heads, Tq, Tq)` (`(..., Tq, max_length)` with a
            cache), e.g. a `RelativePositionBias` with `query_offset`.
        self_attention_cache: optional `(key_cache, value_cache)` of shapes
            `(batch_size, max_length, num_key_value_heads, key_dim)` (rank 4,
            so a decode step converts to TFLite builtins); see `init_cache`.
        self_attention_cache_update_index: int or scalar int tensor, where
            this call's keys and values go in the cache (required with a
            cache).
        cross_attention_cache: optional `(key_heads, value_heads)` from
            `compute_cross_attention_cache(encoder_sequence)`; the
            cross-attention uses them instead of projecting
            `encoder_sequence`, which may then be `None`. The cache carries
            no mask: pass `encoder_padding_mask` with it when the encoder
            sequence is padded (a given `encoder_sequence` is only read for
            its Keras mask). Not returned: it does not change.
        return_attention_scores: bool, also return the weights of every
            attention. Defaults to `False`.
        training: bool, whether dropout is active.

    Every call checks ranks, the sizes the block was built with, batch sizes and
    lengths of the sequences, masks and caches, mask dtypes (float masks raise
    `ValueError`) and `self_attention_cache_update_index` (see
    `MultiHeadAttention`'s `cache_update_index` for what happens when traced).

    Returns:
        `output` of shape `(batch_size, Tq, hidden_dim)`, followed, in this
        order and only when asked for, by:
        - with `return_attention_scores=True`, a dict of per-head weights
          (before dropout): `"self_attention"` of shape
          `(batch_size, num_heads, Tq, Tq)` (`Tq` -> `max_length` with a
          cache) and, in an encoder-decoder block, `"cross_attention"` of
          shape `(batch_size, num_heads, Tq, S)`;
        - with a cache, the updated `(key_cache, value_cache)`.
        So `output`, `(output, scores)`, `(output, cache)` or
        `(output, scores, cache)`.

    Example:

    >>> import numpy as np
    >>> block = TransformerDecoderBlock(intermediate_dim=32, num_heads=4)
    >>> target = np.random.rand(2, 5, 16).astype("float32")
    >>> source = np.random.rand(2, 7, 16).astype("float32")
    >>> y, scores = block(target, source, return_attention_scores=True)
    >>> tuple(y.shape), {k: tuple(v.shape) for k, v in scores.items()}
    ((2, 5, 16), {'self_attention': (2, 4, 5, 5), 'cross_attention': (2, 4, 5, 7)})

    One-token decoding with the self-attention cache:

    >>> cache = block.init_cache(batch_size=2, max_length=5)
    >>> y0, cache = block(target[:, :3], source, self_attention_cache=cache,
    ...                   self_attention_cache_update_index=0)  # prefill
    >>> y1, cache = block(target[:, 3:4], source, self_attention_cache=cache,
    ...                   self_attention_cache_update_index=3)  # one step
    >>> float(np.abs(np.asarray(y1) - np.asarray(block(target, source))[:, 3:4]).max()) < 1e-5
    True

    References:
        Vaswani et al., 2017, "Attention Is All You Need"; Radford et al.,
        2019, "Language Models are Unsupervised Multitask Learners" (GPT-2,
        decoder-only, pre-LN).
    """

    _feedforward_layer_norm_first = False  # keras_hub's TransformerDecoder weight order

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        shape = self._check_sequence_shape("decoder_sequence", decoder_sequence_shape)
        hidden_dim = shape[-1]
        self._self_attention = self._attention("self_attention", hidden_dim, seed_offset=0)
        self._self_attention.build(shape, shape)
        self._self_attention_layer_norm = self._layer_norm("self_attention_layer_norm", shape)
        self._self_attention_dropout = self._dropout("self_attention_dropout", seed_offset=1)
        self._cross_attention = None
        if encoder_sequence_shape is not None:
            encoder_shape = self._check_sequence_shape("encoder_sequence", encoder_sequence_shape)
            self._cross_attention = self._attention("cross_attention", hidden_dim, seed_offset=2)
            self._cross_attention.build(shape, encoder_shape)
            self._cross_attention_layer_norm = self._layer_norm("cross_attention_layer_norm", shape)
            self._cross_attention_dropout = self._dropout("cross_attention_dropout", seed_offset=3)
        self._build_feedforward(shape)

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_mask=None,
        cross_attention_mask=None,
        use_causal_mask=True,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        return_attention_scores=False,
        self_attention_bias=None,
        cross_attention_cache=None,
        training=None,
    ):
        self._check_call_arguments(
            encoder_sequence,
            encoder_padding_mask,
            cross_attention_mask,
            self_attention_cache,
            self_attention_cache_update_index,
            cross_attention_cache,
        )
        cached = self_attention_cache is not None
        checked = self._check_call_inputs(
            decoder_sequence,
            encoder_sequence,
            decoder_padding_mask,
            encoder_padding_mask,
            self_attention_mask,
            cross_attention_mask,
            self_attention_cache,
            self_attention_cache_update_index,
            cross_attention_cache,
        )
        (decoder_sequence, encoder_sequence, decoder_padding_mask, encoder_padding_mask,
         self_attention_mask, cross_attention_mask, self_attention_cache_update_index) = checked
        if cached:
            # The mask covers the cache positions; this call's queries are those at the index.
            cache_mask = decoder_padding_mask  # (B, max_length)
            query_mask = None
            if cache_mask is not None:
                query_shape = ops.shape(decoder_sequence)[:2]
                query_mask = ops.slice(
                    cache_mask, [0, self_attention_cache_update_index], query_shape
                )  # (B, Tq)
        else:
            if decoder_padding_mask is None:
                decoder_padding_mask = keras_mask(decoder_sequence)
            cache_mask = query_mask = decoder_padding_mask  # (B, Tq)
        scores = {}

        residual = decoder_sequence
        x = self._pre_norm(self._self_attention_layer_norm, decoder_sequence)
        results = self._self_attention(
            x,
            x,
            query_mask=query_mask,
            value_mask=cache_mask,
            attention_mask=self_attention_mask,
            use_causal_mask=use_causal_mask,
            return_attention_scores=return_attention_scores,
            cache=self_attention_cache,
            cache_update_index=self_attention_cache_update_index,
            attention_bias=self_attention_bias,
            training=training,
        )
        results = results if isinstance(results, tuple) else (results,)
        x = results[0]
        if return_attention_scores:
            scores["self_attention"] = results[1]  # (B, H, Tq, Tq or max_length)
        if cached:
            self_attention_cache = results[-1]
        x = self._add_residual(
            self._self_attention_layer_norm, self._self_attention_dropout, x, residual, training
        )

        if self._cross_attention is not None:
            if encoder_padding_mask is None and encoder_sequence is not None:
                encoder_padding_mask = keras_mask(encoder_sequence)
            residual = x
            x = self._pre_norm(self._cross_attention_layer_norm, x)
            x = self._cross_attention(
                x,
                None if cross_attention_cache is not None else encoder_sequence,
                query_mask=query_mask,
                value_mask=encoder_padding_mask,
                attention_mask=cross_attention_mask,
                return_attention_scores=return_attention_scores,
                projected_key_value=cross_attention_cache,
                training=training,
            )
            if return_attention_scores:
                x, scores["cross_attention"] = x  # (B, H, Tq, S)
            x = self._add_residual(
                self._cross_attention_layer_norm,
                self._cross_attention_dropout,
                x,
                residual,
                training,
            )

        x = self._feedforward(x, training)
        x = zero_padded_positions(x, query_mask)  # (B, Tq, hidden_dim)
        results = (x,)
        if return_attention_scores:
            results += (scores,)
        if cached:
            results += (self_attention_cache,)
        return results[0] if len(results) == 1 else results

    def init_cache(self, batch_size, max_length, dtype=None):
        """A zero self-attention `(key_cache, value_cache)` for decoding up to `max_length`."""
        if not self.built:
            raise ValueError(
                "TransformerDecoderBlock: `init_cache` needs a built block (call it once or "
                "`build` it first). Received: built=False"
            )
        return self._self_attention.init_cache(batch_size, max_length, dtype=dtype)

    def compute_cross_attention_cache(self, encoder_sequence):
        """The cross-attention's `(key_heads, value_heads)` of `encoder_sequence`.

        Shapes `(batch_size, S, num_key_value_heads, key_dim)`; pass them as
        `cross_attention_cache` at every decoding step.
        """
        if not self.built or self._cross_attention is None:
            raise ValueError(
                "TransformerDecoderBlock: `compute_cross_attention_cache` needs a block built "
                "with cross-attention (called once with an `encoder_sequence`). Received: "
                + ("an unbuilt block" if not self.built else "a decoder-only block")
            )
        return self._cross_attention.project_key_value(encoder_sequence)

    def _check_call_arguments(
        self,
        encoder_sequence,
        encoder_padding_mask,
        cross_attention_mask,
        cache,
        cache_index,
        cross_attention_cache,
    ):
        if self._cross_attention is None:
            for arg, value in (
                ("encoder_sequence", encoder_sequence),
                ("encoder_padding_mask", encoder_padding_mask),
                ("cross_attention_mask", cross_attention_mask),
                ("cross_attention_cache", cross_attention_cache),
            ):
                if value is not None:
                    received = (
                        f"{arg} with shapes {[tuple(v.shape) for v in value]}"
                        if isinstance(value, list | tuple)
                        else f"{arg}.shape={tuple(value.shape)}"
                    )
                    raise ValueError(
                        "TransformerDecoderBlock: this block was built without cross-attention "
                        "(first called without `encoder_sequence`), so it takes no "
                        f"`{arg}`. Received: {received}"
                    )
        elif encoder_sequence is None and cross_attention_cache is None:
            raise ValueError(
                "TransformerDecoderBlock: this block was built with cross-attention (first "
                "called with an `encoder_sequence`), so every call needs one (or its "
                "`cross_attention_cache`). Received: encoder_sequence=None"
            )
        elif cross_attention_cache is not None:
            self._cross_attention._validate_key_value(
                cross_attention_cache,
                "TransformerDecoderBlock",
                "cross_attention_cache",
                "compute_cross_attention_cache",
            )
        if cache is not None and cache_index is None:
            raise ValueError(
                "TransformerDecoderBlock: `self_attention_cache` needs "
                "`self_attention_cache_update_index`. "
                "Received: self_attention_cache_update_index=None"
            )
        if cache is None and cache_index is not None:
            raise ValueError(
                "TransformerDecoderBlock: `self_attention_cache_update_index` needs "
                "`self_attention_cache`. Received: self_attention_cache=None"
            )

    def _check_call_inputs(
        self,
        decoder_sequence,
        encoder_sequence,
        decoder_padding_mask,
        encoder_padding_mask,
        self_attention_mask,
        cross_attention_mask,
        cache,
        cache_index,
        cross_attention_cache,
    ):
        """Shapes, batch sizes, mask dtypes and the cache index, at every call (`ops.checks`)."""
        owner = "TransformerDecoderBlock"
        hidden_dim = self._self_attention._input_dims[0]
        memory = "Tq"
        if cache is not None:
            memory = "max_length"
            heads_first = id(self._self_attention) in _decoding_state().heads_first
            cache_index = check_index_range(
                owner,
                "self_attention_cache_update_index",
                cache_index,
                ops.shape(decoder_sequence)[1],
                ops.shape(cache[0])[2 if heads_first else 1],
                "max_length",
            )
            if heads_first:
                memory = None  # checked by the attention's `_validate_cache`
        encoder = [("encoder_sequence", encoder_sequence, ("batch_size", "S", None))]
        if self._cross_attention is not None and encoder_sequence is not None:
            encoder_dim = self._cross_attention._input_dims[1]
            encoder = [("encoder_sequence", encoder_sequence, ("batch_size", "S", encoder_dim))]
        if cross_attention_cache is not None:
            encoder = [("cross_attention_cache[0]", cross_attention_cache[0],
                        ("batch_size", "S", None, None))]  # fmt: skip
        checked = check_inputs(
            owner,
            [("decoder_sequence", decoder_sequence, ("batch_size", "Tq", hidden_dim)), *encoder],
            masks=[
                ("decoder_padding_mask", decoder_padding_mask, ("batch_size", memory)),
                ("encoder_padding_mask", encoder_padding_mask, ("batch_size", "S")),
                ("self_attention_mask", self_attention_mask, ("batch_size", "Tq", memory)),
                ("cross_attention_mask", cross_attention_mask, ("batch_size", "Tq", "S")),
            ],
        )
        if cross_attention_cache is not None:
            checked[1] = encoder_sequence
        return (*checked, cache_index)

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return tuple(decoder_sequence_shape)

    def compute_output_spec(
        self,
        decoder_sequence,
        encoder_sequence=None,
        return_attention_scores=False,
        self_attention_cache=None,
        cross_attention_cache=None,
        **kwargs,
    ):
        shape = tuple(decoder_sequence.shape)
        results = (keras.KerasTensor(shape, dtype=self.compute_dtype),)
        if return_attention_scores:
            memory = shape[1] if self_attention_cache is None else self_attention_cache[0].shape[1]
            scores = {
                "self_attention": keras.KerasTensor(
                    (shape[0], self.num_heads, shape[1], memory), dtype=self.compute_dtype
                )
            }
            memory = cross_attention_cache[0] if cross_attention_cache else encoder_sequence
            if memory is not None:
                scores["cross_attention"] = keras.KerasTensor(
                    (shape[0], self.num_heads, shape[1], memory.shape[1]),
                    dtype=self.compute_dtype,
                )
            results += (scores,)
        if self_attention_cache is not None:
            results += (
                tuple(keras.KerasTensor(c.shape, dtype=c.dtype) for c in self_attention_cache),
            )
        return results[0] if len(results) == 1 else results
