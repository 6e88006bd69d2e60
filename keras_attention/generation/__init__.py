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

Every decoder also runs on JAX and PyTorch, as a Python loop over the same
decisions: `greedy_search`, `sample` and `generate(..., sampler="greedy" |
"sample" | "beam")` (`_greedy_loop`, `_beam_loop`) and `beam_search`
(`_beam_search_loop`). Greedy and beam search give TensorFlow's tokens;
sampling draws from NumPy's Philox generator, so a seed gives other tokens
than on TensorFlow. This package imports no TensorFlow until a TensorFlow-only
name is used (`sample_next`, `length_penalty`), which then raise a
`NotImplementedError` naming the backend when called off TensorFlow.
"""

import importlib

import keras

from keras_attention.generation._output import GenerationOutput
from keras_attention.generation.generate import SAMPLERS, generate
from keras_attention.generation.greedy import greedy_search

# The names defined in TensorFlow modules, by module (imported on first use; on JAX and
# PyTorch `beam_search` and `sample` come from `_OFF_TENSORFLOW` instead).
_TENSORFLOW_ONLY = {
    "beam_search": "beam",
    "length_penalty": "beam",
    "sample": "sampling",
    "sample_next": "_generate_tf",
}

# Their JAX and PyTorch versions (Python loops with the same decisions), by module.
_OFF_TENSORFLOW = {"beam_search": "_beam_search_loop", "sample": "_greedy_loop"}

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


def __getattr__(name):
    if name in _OFF_TENSORFLOW and keras.backend.backend() != "tensorflow":
        module = importlib.import_module(f"{__name__}.{_OFF_TENSORFLOW[name]}")
        value = getattr(module, name)
        globals()[name] = value  # once
        return value
    if name in _TENSORFLOW_ONLY:
        module = importlib.import_module(f"{__name__}.{_TENSORFLOW_ONLY[name]}")
        value = getattr(module, name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
