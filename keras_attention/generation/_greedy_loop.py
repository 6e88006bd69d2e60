"""Greedy decoding, sampling and beam search on JAX and PyTorch: a Python loop, one step at a time.

On TensorFlow the decoders are `tf.while_loop`s (`_common`, `_generate_tf`),
which trace into SavedModels. On the other backends the same decisions are
made in a Python loop that stops as soon as every row has ended: each step
runs the model on the backend (for `generate` on JAX, compiled once with
`jax.jit` over the model's variables, as keras_hub compiles its generation),
and the bookkeeping (argmax, end tokens, the token buffer) is NumPy on the
host, where the loop has to look anyway to decide whether to go on.
`generate(sampler="sample")` draws there too, with NumPy's Philox generator
(`sample_choice`): the same seed gives the same tokens on one backend, not the
tokens TensorFlow's Philox stream gives.
"""

import contextlib

import keras
import numpy as np

from keras_attention.generation import _beam_loop as _beam
from keras_attention.generation import _options
from keras_attention.generation._output import GenerationOutput
from keras_attention.models.backbone import jit_method
from keras_attention.utils import describe, positive_int


def sample(step_fn, state, start_ids, end_id, max_length, top_k=None, top_p=None,
           temperature=1.0, seed=None, pad_id=0):  # fmt: skip
    """`keras_attention.generation.sample` on JAX and PyTorch (see `sampling.sample`).

    Example:

    >>> import numpy as np
    >>> probs = np.array([1e-9, .1, .5, .4], "float32")  # 0 pad, 1 end, tokens 2 and 3
    >>> def step_fn(token_ids, state, step):
    ...     return np.log(np.tile(probs, (len(token_ids), 1))), state
    >>> out = sample(step_fn, (), start_ids=[2] * 500, end_id=1, max_length=6, top_p=0.8, seed=7)
    >>> np.unique(np.asarray(out.tokens)).tolist()  # the nucleus of .5, .4, .1 at p=0.8
    [2, 3]
    """
    name = "sample"
    end_id, max_length, top_k, top_p, temperature, seed, pad_id = _options.check_sample_arguments(
        name, end_id, max_length, top_k, top_p, temperature, seed, pad_id
    )
    choose = sample_choice(temperature, top_k or 0, 1.0 if top_p is None else top_p, seed)
    return greedy_search(name, step_fn, state, start_ids, end_id, max_length, pad_id, choose)


def greedy_search(fn_name, step_fn, state, start_ids, end_id, max_length, pad_id, choose=None):
    """`keras_attention.generation.greedy_search` off TensorFlow (the arguments checked).

    `choose(log_probs, step)` picks the next tokens (`sample`); the default is the argmax.
    """
    choose = choose or _argmax
    token_ids = _start_ids(fn_name, start_ids)
    state = _check_state(fn_name, state)
    batch_size = token_ids.shape[0]
    rows = np.arange(batch_size)
    tokens = np.full((batch_size, max_length), pad_id, "int32")
    lengths = np.zeros(batch_size, "int32")
    scores = np.zeros(batch_size, "float32")
    finished = np.zeros(batch_size, bool)
    with _inference():
        for step in range(max_length):
            if finished.all():
                break
            step_ids = keras.ops.convert_to_tensor(token_ids, "int32")
            step_index = keras.ops.convert_to_tensor(step, "int32")
            logits, state = _call_step_fn(fn_name, step_fn, step_ids, state, step_index, end_id)
            log_probs = _log_softmax(logits)  # (B, V)
            next_ids = choose(log_probs, step)
            # A finished row only emits `pad_id`, with log-probability 0.
            scores += np.where(finished, 0.0, log_probs[rows, next_ids]).astype("float32")
            next_ids = np.where(finished, pad_id, next_ids).astype("int32")
            lengths += np.logical_not(finished)
            finished |= next_ids == end_id
            tokens[:, step] = token_ids = next_ids
    tokens, lengths, scores = (keras.ops.convert_to_tensor(x) for x in (tokens, lengths, scores))
    return GenerationOutput(tokens, lengths, scores, scores)


def generate(model, token_ids, padding_mask, options, max_new_tokens, functions, sampling):
    """`keras_attention.generation.generate` off TensorFlow (every sampler).

    `options` are checked; `functions` is the table of compiled steps,
    `{model: {key: function}}` with weak keys; `sampling` is the checked
    `(temperature, top_k, top_p, seed)` (used by `"sample"`).
    """
    token_ids, padding_mask = _options.concrete_prompts(token_ids, padding_mask, options)
    max_length, pad_id = options["max_length"], options["pad_id"]
    if max_new_tokens is None:
        max_new_tokens = max_length
    elif not isinstance(max_new_tokens, int):  # a scalar array or tensor
        max_new_tokens = int(keras.ops.convert_to_numpy(max_new_tokens))
    max_new_tokens = positive_int(_options.NAME, "max_new_tokens", max_new_tokens)
    batch_size, width = token_ids.shape
    # The output buffer and the prompt flags, padded to `max_length`.
    prompt = np.zeros((batch_size, max_length), bool)
    prompt[:, :width] = padding_mask
    buffer = np.full((batch_size, max_length), pad_id, "int32")
    buffer[:, :width] = np.where(padding_mask, token_ids, pad_id)
    lengths = padding_mask.sum(axis=1)
    start = max(min([*lengths.tolist(), max_length]), 1)
    limits = lengths + max_new_tokens  # a row generates up to here (exclusive)
    call = _model_call(model, options, functions)
    with _inference():
        cache = model.init_cache(batch_size, max_length)
        # Prefill on the cleaned prompt: padding values are never looked up (its logits unused).
        logits, cache = call(buffer[:, :width], cache, 0)
        if logits.shape[-1] != model.vocabulary_size:
            raise ValueError(
                f"{_options.NAME}: `model.call_with_cache` must return logits over the "
                f"vocabulary (of size {model.vocabulary_size}), e.g. a causal LM rather than "
                f"its backbone. Received: model={describe(model)} with outputs of shape "
                f"{tuple(logits.shape)}"
            )
        if options["sampler"] == "beam":
            tokens, scores = _beam.beam_loop(call, buffer, prompt, (start, limits), cache, options)
        else:
            choose = _argmax if options["sampler"] == "greedy" else sample_choice(*sampling)
            tokens, scores = _row_loop(
                call, buffer, prompt, (start, limits), cache, options, choose
            )
    tokens = keras.ops.convert_to_tensor(tokens, "int32")
    if options["return_scores"]:
        return tokens, keras.ops.convert_to_tensor(scores, "float32")
    return tokens


def _argmax(logits, index):
    return np.argmax(logits, axis=-1).astype("int32")


def sample_choice(temperature, top_k, top_p, seed):
    """`choose(logits, index)`: one token per row, drawn as TensorFlow's `sample_next` draws.

    The logits are divided by `temperature` (`<= 0`: greedy); `top_k > 0` keeps
    the `top_k` most likely tokens (lower id first on ties); `0 < top_p < 1`
    then keeps the tokens whose more likely kept tokens hold less than `top_p`
    of the renormalised mass; a token is drawn from the kept ones with their
    renormalised probabilities (Gumbel-max). Step `index` draws from NumPy's
    Philox generator keyed by `(seed, index)`, so a seed reproduces the tokens;
    `seed=None` takes a fresh seed per call.
    """
    temperature, top_p = (float(keras.ops.convert_to_numpy(x)) for x in (temperature, top_p))
    top_k = int(keras.ops.convert_to_numpy(top_k))
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    seed = int(keras.ops.convert_to_numpy(seed))
    if temperature <= 0.0:
        return _argmax

    def choose(logits, index):
        order = np.argsort(-logits, axis=-1, kind="stable")  # descending, lower id first on ties
        scaled = logits / np.float32(temperature)
        values = np.take_along_axis(scaled, order, axis=-1)
        kept = np.ones(values.shape, bool)
        if top_k > 0:
            kept[:, top_k:] = False
            values[:, top_k:] = -np.inf
        if 0.0 < top_p < 1.0:
            probs = np.exp(values - values[:, :1])  # the first value is the finite maximum
            probs /= probs.sum(axis=-1, keepdims=True)
            kept &= np.cumsum(probs, axis=-1) - probs < top_p
        # The noise is drawn per token id, not per rank (as TensorFlow's `sample_next`).
        in_token_order = np.zeros(kept.shape, bool)
        np.put_along_axis(in_token_order, order, kept, axis=-1)
        generator = np.random.Generator(np.random.Philox(key=[seed & 0xFFFFFFFFFFFFFFFF, index]))
        gumbel = -np.log(-np.log(generator.uniform(np.finfo("float32").tiny, 1.0, scaled.shape)))
        return np.argmax(np.where(in_token_order, scaled, -np.inf) + gumbel, axis=-1).astype("int32")

    return choose


def _row_loop(call, buffer, prompt, bounds, cache, options, choose=_argmax):
    """The decisions of the TensorFlow `_row_loop`: `(tokens, scores)` in NumPy."""
    start, limits = bounds
    max_length, pad_id = options["max_length"], options["pad_id"]
    penalty = options["repetition_penalty"]
    stop_ids = np.asarray(options["stop_token_ids"], "int32")
    suppressed = list(options["suppress_token_ids"])
    rows = np.arange(buffer.shape[0])
    done = np.zeros(buffer.shape[0], bool)
    scores = np.zeros(buffer.shape[0], "float32")
    seen = np.zeros((buffer.shape[0], options["vocabulary_size"]), bool)  # the tokens of a row
    seen[np.nonzero(prompt)[0], buffer[prompt]] = True
    for index in range(start, max_length):
        if not np.any(np.logical_not(done) & (index < limits)):
            break
        done = done | (index >= limits)  # past `max_new_tokens`: ended
        logits, cache = call(buffer[:, index - 1 : index], cache, index - 1)
        logits = np.array(keras.ops.convert_to_numpy(logits[:, 0]), "float32")  # (B, V)
        logits[:, suppressed] = -np.inf
        if penalty != 1.0:  # CTRL's repetition penalty on the tokens seen
            penalized = np.where(logits > 0, logits / np.float32(penalty),
                                 logits * np.float32(penalty))  # fmt: skip
            logits = np.where(seen, penalized, logits)
        chosen = choose(logits, index)
        forced = prompt[:, index]
        emitted = np.logical_not(forced | done)
        if options["return_scores"]:
            log_probs = _log_softmax(logits)
            scores += np.where(emitted, log_probs[rows, chosen], 0.0).astype("float32")
        chosen = np.where(forced, buffer[:, index], np.where(done, pad_id, chosen))
        buffer[:, index] = chosen
        done = done | (emitted & np.isin(chosen, stop_ids))
        seen[rows, chosen] = True
    return buffer, scores


def _model_call(model, options, functions):
    """`model.call_with_cache`, compiled with `jax.jit` on JAX when `options["jit_compile"]`.

    The compiled call is kept in `functions` per model and variable structure
    (a model given LoRA weights since is compiled again); a prefill and a step
    shape compile once each, the cache index is traced.
    """
    if keras.backend.backend() != "jax" or not options["jit_compile"]:
        return model.call_with_cache
    structure = tuple((v.path, str(v.dtype), tuple(v.shape)) for v in model.variables)
    compiled = functions.setdefault(model, {})
    key = ("jax.jit", structure)
    if key not in compiled:
        compiled[key] = jit_method(model, "call_with_cache")
    return compiled[key]


def _inference():
    """No gradient tape on PyTorch (a decoding step needs none)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def _log_softmax(logits):
    """float32 NumPy log-softmax over the last axis of logits (any backend's tensor)."""
    logits = np.asarray(keras.ops.convert_to_numpy(logits), "float32")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _start_ids(fn_name, start_ids):
    """`start_ids` as an int32 NumPy `(batch_size,)` array."""
    start_ids = np.asarray(keras.ops.convert_to_numpy(start_ids))
    if not np.issubdtype(start_ids.dtype, np.integer):
        raise ValueError(
            f"{fn_name}: `start_ids` must be integer token ids. "
            f"Received: start_ids.dtype={start_ids.dtype.name}"
        )
    if start_ids.ndim != 1:
        raise ValueError(
            f"{fn_name}: `start_ids` must have shape `(batch_size,)`. "
            f"Received: start_ids.shape={start_ids.shape}"
        )
    return start_ids.astype("int32")


def _check_state(fn_name, state):
    """`state` with every leaf as a backend tensor that has a leading batch axis."""
    state = keras.tree.map_structure(keras.ops.convert_to_tensor, state)
    for leaf in keras.tree.flatten(state):
        if len(leaf.shape) == 0:
            raise ValueError(
                f"{fn_name}: every tensor in `state` needs a leading batch axis. "
                f"Received: a tensor of shape {tuple(leaf.shape)}"
            )
    return state


def _call_step_fn(fn_name, step_fn, token_ids, state, step, end_id):
    """Calls `step_fn` and checks what it returns: `(logits, new_state)`."""
    outputs = step_fn(token_ids, state, step)
    if not (isinstance(outputs, tuple | list) and len(outputs) == 2):
        raise ValueError(
            f"{fn_name}: `step_fn` must return `(logits, new_state)`. Received: {outputs!r}"
        )
    logits, new_state = outputs
    logits = keras.ops.convert_to_tensor(logits)
    dtype = keras.backend.standardize_dtype(logits.dtype)
    if len(logits.shape) != 2 or "float" not in dtype:
        raise ValueError(
            f"{fn_name}: `step_fn` must return float logits of shape `(batch_size, vocab_size)`. "
            f"Received: logits.shape={tuple(logits.shape)}, logits.dtype={dtype}"
        )
    if end_id >= logits.shape[-1]:
        raise ValueError(
            f"{fn_name}: `end_id` must be a token of the vocabulary of size {logits.shape[-1]}. "
            f"Received: end_id={end_id}"
        )
    try:
        keras.tree.assert_same_paths(state, new_state)  # a list may stand for a tuple
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{fn_name}: `step_fn` must return a new state with the structure of `state`. "
            f"Received: {error}"
        ) from error
    new_state = keras.tree.pack_sequence_as(
        state, [keras.ops.convert_to_tensor(x) for x in keras.tree.flatten(new_state)]
    )
    for old, new in zip(keras.tree.flatten(state), keras.tree.flatten(new_state), strict=True):
        old_dtype, new_dtype = (keras.backend.standardize_dtype(x.dtype) for x in (old, new))
        if old_dtype != new_dtype:
            raise ValueError(
                f"{fn_name}: `step_fn` must keep the dtypes of `state`. "
                f"Received: {new_dtype} for a {old_dtype} state tensor"
            )
    return logits, new_state
