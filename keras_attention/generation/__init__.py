"""Decoding: greedy search, beam search (length penalty), top-k / top-p sampling.

`generate(model, token_ids, padding_mask, max_length, sampler=...)` continues
ragged prompts with a causal LM (`GPTCausalLM`): a token buffer, prefill of
the prompts in one pass, then one cached step per token, in one traced loop.

Every decoder drives `step_fn(token_ids, state, step) -> (logits, new_state)`
in one `tf.while_loop`, batched, so it runs eagerly, in a `tf.function` (XLA
included) and in a SavedModel; the state carries what the model needs between
steps (encoder outputs, masks, RNN states, KV caches).

Unlike the layers, decoding is written with TensorFlow ops (`tf.while_loop`,
`tf.gather`, `tf.nest`, stateless Philox draws) rather than `keras.ops`: it is
not a layer, it has to trace into SavedModels with shape invariants for an
unknown batch size, and its seeded draws have to agree with and without XLA.
`step_fn` itself can be any Keras model or layer call on the TensorFlow
backend.
"""

from keras_attention.generation._common import GenerationOutput
from keras_attention.generation.beam import beam_search, length_penalty
from keras_attention.generation.generate import SAMPLERS, generate, sample_next
from keras_attention.generation.greedy import greedy_search
from keras_attention.generation.sampling import sample

__all__ = [
    "GenerationOutput",
    "SAMPLERS",
    "beam_search",
    "generate",
    "greedy_search",
    "length_penalty",
    "sample",
    "sample_next",
]
