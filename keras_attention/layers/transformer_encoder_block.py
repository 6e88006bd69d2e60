"""Transformer encoder block: self-attention and a feed-forward network, pre- or post-LN."""

import keras
from keras import ops

from keras_attention.layers._transformer_block import (
    TransformerBlock,
    rows_at_positions,
    zero_padded_positions,
)
from keras_attention.ops.checks import check_inputs
from keras_attention.utils.masking import keras_mask


@keras.saving.register_keras_serializable(package="keras_attention")
class TransformerEncoderBlock(TransformerBlock):
    """Transformer encoder block (Vaswani et al. 2017): self-attention, then feed-forward.

    Post-LN (`normalize_first=False`, BERT and the original Transformer):
    `h = LN(x + Dropout(MHA(x, x)))`, `y = LN(h + Dropout(FFN(h)))`. Pre-LN
    (`normalize_first=True`, GPT-2 and most recent models):
    `h = x + Dropout(MHA(LN(x), LN(x)))`, `y = h + Dropout(FFN(LN(h)))`; the
    final layer norm of a pre-LN stack belongs to the model, not the block.
    `FFN(x) = W_2 activation(W_1 x + b_1) + b_2`. The attention is this
    package's `MultiHeadAttention` (grouped-query heads, exact masking), its
    output projected back to the hidden size of the inputs.

    Masks: `padding_mask` (or, when it is not given, the implicit Keras mask
    of `inputs`, e.g. from `Embedding(mask_zero=True)`) masks padded positions
    both as keys (they get exactly zero attention weight) and as queries:
    padded rows of the output and of the scores are exact zeros and the output
    carries the mask as its Keras mask. Padded inputs therefore never reach an
    unpadded output.

    The weights have the order and shapes of keras_hub's `TransformerEncoder`
    (same `num_heads`, `intermediate_dim`, `normalize_first`), so
    `block.set_weights(keras_hub_encoder.get_weights())` copies a trained one;
    the outputs then agree at unpadded positions (keras_hub leaves padded
    rows unmasked).

    Args:
        intermediate_dim: positive int, the hidden size of the feed-forward
            network.
        num_heads: positive int, the number of attention heads.
        key_dim: positive int, the size of each attention head. Defaults to
            `hidden_dim // num_heads` (`hidden_dim`, the last dimension of the
            inputs, must then be divisible by `num_heads`).
        num_key_value_heads: positive int dividing `num_heads`, for
            grouped-query attention. Defaults to `num_heads`.
        dropout: float in `[0, 1)`, dropout on the outputs of the attention and
            feed-forward sublayers before each residual addition, in training.
            Defaults to `0.0`.
        attention_dropout: float in `[0, 1)`, dropout on the attention weights
            in training. Defaults to `dropout` (one rate for both, as in
            keras_hub); `0.0` drops only the sublayer outputs.
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
            attention projections and the feed-forward layers. Defaults to
            `"glorot_uniform"`, `"zeros"` and no regularizers or constraints.
        seed: optional int, the dropout seed (each dropout gets its own seed
            derived from it).
        rotary_max_wavelength: optional positive number: rotary position
            embeddings of the self-attention's queries and keys (see
            `MultiHeadAttention`), positions from `0` (from the cache index
            when decoding with a cache). Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch_size, seq_len, hidden_dim)`.
        padding_mask: optional boolean `(batch_size, seq_len)`, `False` at
            padded positions. Defaults to the Keras mask of `inputs`.
        attention_mask: optional boolean `(batch_size, seq_len, seq_len)`,
            ANDed with the padding and causal masks.
        use_causal_mask: bool, position `i` attends to positions `<= i`.
            Defaults to `False`.
        return_attention_scores: bool, also return the attention weights.
            Defaults to `False`.
        attention_bias: optional float tensor added to the attention logits,
            broadcastable to `(batch_size, num_heads, seq_len, seq_len)`, e.g.
            a `RelativePositionBias`.
        query_positions: optional int `(batch_size, P)`: compute the outputs
            at these positions only, `(batch_size, P, hidden_dim)` (the keys
            and values still come from every position; a masked LM's last
            block needs no other rows). The same values as the full output
            gathered at the positions; a position outside `[0, seq_len)` or
            padded gives zeros. Not with `use_causal_mask` or
            `attention_bias`. Defaults to `None` (every position).
        training: bool, whether dropout is active.

    Every call checks `inputs` (rank 3, the hidden size it was built with) and
    that `padding_mask` `(batch_size, T)` and `attention_mask` `(batch_size, T, T)`
    match it; float masks raise `ValueError` (pass `mask == 0` for an additive
    mask). Sizes unknown while tracing are asserted at run time (not under XLA).

    Returns:
        `(batch_size, seq_len, hidden_dim)`, or with
        `return_attention_scores=True` the tuple `(output, scores)` with the
        per-head weights `scores` of shape
        `(batch_size, num_heads, seq_len, seq_len)` (before dropout); with
        `query_positions`, `P` rows instead of `seq_len` in both.

    Example:

    >>> import numpy as np
    >>> block = TransformerEncoderBlock(intermediate_dim=32, num_heads=4)
    >>> x = np.random.rand(2, 6, 16).astype("float32")
    >>> padding_mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    >>> y, scores = block(x, padding_mask=padding_mask, return_attention_scores=True)
    >>> tuple(y.shape), tuple(scores.shape)
    ((2, 6, 16), (2, 4, 6, 6))
    >>> float(np.abs(np.asarray(y)[1, 4:]).max())  # padded positions
    0.0

    References:
        Vaswani et al., 2017, "Attention Is All You Need"; Xiong et al., 2020,
        "On Layer Normalization in the Transformer Architecture" (pre-LN).
    """

    def build(self, inputs_shape):
        inputs_shape = self._check_sequence_shape("inputs", inputs_shape)
        self._self_attention = self._attention("self_attention", inputs_shape[-1], seed_offset=0)
        self._self_attention.build(inputs_shape, inputs_shape)
        self._self_attention_layer_norm = self._layer_norm(
            "self_attention_layer_norm", inputs_shape
        )
        self._self_attention_dropout = self._dropout("self_attention_dropout", seed_offset=1)
        self._build_feedforward(inputs_shape)

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        attention_bias=None,
        query_positions=None,
        training=None,
    ):
        if padding_mask is None:
            padding_mask = keras_mask(inputs)
        checked = [("inputs", inputs, ("batch_size", "T", self._self_attention._input_dims[0]))]
        if query_positions is not None:
            query_positions = self._check_query_positions(
                query_positions, use_causal_mask, attention_bias
            )
            checked.append(("query_positions", query_positions, ("batch_size", "P")))
        checked = check_inputs(
            "TransformerEncoderBlock",
            checked,
            masks=[
                ("padding_mask", padding_mask, ("batch_size", "T")),
                ("attention_mask", attention_mask, ("batch_size", "T", "T")),
            ],
        )
        inputs, padding_mask, attention_mask = checked[0], checked[-2], checked[-1]
        residual = inputs
        x = self._pre_norm(self._self_attention_layer_norm, inputs)
        query, query_mask = x, padding_mask
        if query_positions is not None:
            (query, residual), query_mask, attention_mask = rows_at_positions(
                (x, residual), checked[1], padding_mask, attention_mask
            )
        x = self._self_attention(
            query,
            x,
            query_mask=query_mask,
            value_mask=padding_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            return_attention_scores=return_attention_scores,
            attention_bias=attention_bias,
            training=training,
        )
        if return_attention_scores:
            x, scores = x  # scores: (B, H, Tq, T)
        x = self._add_residual(
            self._self_attention_layer_norm, self._self_attention_dropout, x, residual, training
        )
        x = self._feedforward(x, training)
        x = zero_padded_positions(x, query_mask)  # (B, Tq, hidden_dim)
        return (x, scores) if return_attention_scores else x

    @staticmethod
    def _check_query_positions(query_positions, use_causal_mask, attention_bias):
        """`query_positions` as an integer tensor; refused with a causal mask or a bias."""
        if use_causal_mask or attention_bias is not None:
            raise ValueError(
                "TransformerEncoderBlock: `query_positions` cannot be combined with "
                "`use_causal_mask` or `attention_bias` (their rows follow the query positions "
                f"0..T-1). Received: use_causal_mask={use_causal_mask}, "
                f"attention_bias={None if attention_bias is None else tuple(attention_bias.shape)}"
            )
        if not hasattr(query_positions, "dtype"):
            query_positions = ops.convert_to_tensor(query_positions)
        dtype = keras.backend.standardize_dtype(query_positions.dtype)
        if "int" not in dtype:
            raise ValueError(
                "TransformerEncoderBlock: `query_positions` must be integer positions "
                f"`(batch_size, num_positions)`. Received: query_positions.dtype={dtype}"
            )
        return query_positions

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)

    def compute_output_spec(self, inputs, return_attention_scores=False, query_positions=None,
                            **kwargs):  # fmt: skip
        batch, length = inputs.shape[:2]
        rows = length
        if query_positions is not None:  # a tensor, or a list while tracing
            rows = tuple(getattr(query_positions, "shape", (None, None)))[1]
        output = keras.KerasTensor((batch, rows, inputs.shape[2]), dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        scores_shape = (batch, self.num_heads, rows, length)
        return output, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
