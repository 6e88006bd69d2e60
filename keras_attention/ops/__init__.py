"""Stateless attention math on `keras.ops`: scores, masks, masked softmax, full and chunked
attention, and the dropout and GELU kernels the layers train with."""

from keras_attention.ops.activations import gelu, gelu_approximate
from keras_attention.ops.chunked_attention import chunked_attention, dropout_keep_mask
from keras_attention.ops.doubly_stochastic import doubly_stochastic_penalty
from keras_attention.ops.dropout import dropout, dropout_mask
from keras_attention.ops.full_attention import full_attention
from keras_attention.ops.hard import (
    gather_positions,
    gumbel_noise,
    gumbel_softmax,
    masked_argmax,
    one_hot_weights,
    position_selector,
    reinforce_loss,
    sample_log_prob,
)
from keras_attention.ops.local_window import local_window
from keras_attention.ops.masking import (
    causal_mask,
    compute_attention_mask,
    large_negative,
    merge_padding_masks,
)
from keras_attention.ops.monotonic import expected_monotonic_alignment, hard_monotonic_alignment
from keras_attention.ops.pointer import masked_logits, pointer_availability_mask
from keras_attention.ops.pooling import attention_pool, context_vector_score
from keras_attention.ops.positions import relative_position_bucket
from keras_attention.ops.scores import (
    additive_score,
    apply_attention,
    bilinear_score,
    concat_score,
    dot_score,
    location_score,
    scaled_dot_score,
)
from keras_attention.ops.softmax import masked_softmax

__all__ = [
    "additive_score",
    "apply_attention",
    "attention_pool",
    "bilinear_score",
    "causal_mask",
    "chunked_attention",
    "compute_attention_mask",
    "concat_score",
    "context_vector_score",
    "dot_score",
    "doubly_stochastic_penalty",
    "dropout",
    "dropout_keep_mask",
    "dropout_mask",
    "full_attention",
    "gelu",
    "gelu_approximate",
    "expected_monotonic_alignment",
    "gather_positions",
    "gumbel_noise",
    "gumbel_softmax",
    "hard_monotonic_alignment",
    "large_negative",
    "local_window",
    "location_score",
    "masked_argmax",
    "masked_logits",
    "masked_softmax",
    "merge_padding_masks",
    "one_hot_weights",
    "pointer_availability_mask",
    "position_selector",
    "reinforce_loss",
    "relative_position_bucket",
    "sample_log_prob",
    "scaled_dot_score",
]
