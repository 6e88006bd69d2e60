"""The argument checks of `generate` and the backend check of the TensorFlow-only decoders.

Nothing here imports TensorFlow: `generate` checks its options the same way on
every backend before it picks a loop.
"""

import keras
import numpy as np

from keras_attention.utils import describe, number, one_of, positive_int

NAME = "generate"


def require_tensorflow(fn_name, instead):
    """Raises a `NotImplementedError` naming the backend unless Keras runs on TensorFlow.

    Used by the TensorFlow modules (`beam`, `sampling`, `_generate_tf`): their
    JAX and PyTorch versions are `_beam_search_loop`, `_greedy_loop` and
    `_beam_loop`; `sample_next` and `length_penalty` have none.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise NotImplementedError(
            f"{fn_name} runs on the TensorFlow backend only (a `tf.while_loop`); the Keras "
            f"backend is {backend!r}. {instead}, or run with KERAS_BACKEND=tensorflow."
        )


def check_options(model, max_length, sampler, stop_token_ids, suppress_token_ids, pad_id,
                  beam_width, length_penalty, repetition_penalty, jit_compile, return_scores,
                  samplers):  # fmt: skip
    """`generate`'s static options, checked, as a dict."""
    for method in ("init_cache", "call_with_cache"):
        if not callable(getattr(model, method, None)):
            raise ValueError(
                f"{NAME}: `model` must be a causal LM with `init_cache` and `call_with_cache` "
                f"(a keras_attention.models.GPTCausalLM). Received: model={describe(model)}"
            )
    if max_length is None:
        raise ValueError(f"{NAME}: `max_length` is required. Received: max_length=None")
    cache_length = getattr(model, "cache_length", None)
    if cache_length is not None:
        max_length = cache_length(max_length, owner=NAME)
    max_length = positive_int(NAME, "max_length", max_length)
    sampler = one_of(NAME, "sampler", sampler, samplers)
    stop_token_ids = token_list("stop_token_ids", stop_token_ids)
    suppress_token_ids = token_list("suppress_token_ids", suppress_token_ids)
    pad_id = positive_int(NAME, "pad_id", pad_id, minimum=0)
    vocabulary_size = getattr(model, "vocabulary_size", None)
    if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, int):
        raise ValueError(
            f"{NAME}: `model` must have an int `vocabulary_size` (the size of its logits). "
            f"Received: model={describe(model)}, vocabulary_size={vocabulary_size!r}"
        )
    for name, ids in (("stop_token_ids", stop_token_ids), ("pad_id", (pad_id,)),
                      ("suppress_token_ids", suppress_token_ids)):  # fmt: skip
        for i in ids:
            if vocabulary_size is not None and not 0 <= i < vocabulary_size:
                raise ValueError(
                    f"{NAME}: `{name}` must be tokens of the vocabulary of size "
                    f"{vocabulary_size}. Received: {name}={i}"
                )
    options = {
        "max_length": max_length,
        "sampler": sampler,
        "stop_token_ids": stop_token_ids,
        "suppress_token_ids": suppress_token_ids,
        "pad_id": pad_id,
        "beam_width": positive_int(NAME, "beam_width", beam_width),
        "length_penalty": number(NAME, "length_penalty", length_penalty, low=0.0,
                                 what="a non-negative float"),  # fmt: skip
        "repetition_penalty": number(NAME, "repetition_penalty", repetition_penalty, low=1.0,
                                     what="a float >= 1"),  # fmt: skip
        "vocabulary_size": vocabulary_size,
        "jit_compile": bool(jit_compile),
        "return_scores": bool(return_scores),
    }
    if sampler == "beam" and vocabulary_size is not None and options["beam_width"] > vocabulary_size:
        raise ValueError(
            f"{NAME}: `beam_width` may not exceed the vocabulary size ({vocabulary_size}). "
            f"Received: beam_width={beam_width}"
        )
    return options


def check_sampling(temperature, top_k, top_p, seed):
    """The sampling options, checked where they are Python numbers (tensors pass as they are).

    Returns `(temperature, top_k, top_p, seed)` with `top_k=None` as `0` and
    `top_p=None` as `1.0` (`seed` may stay `None`).
    """
    if not keras.ops.is_tensor(temperature):
        temperature = number(NAME, "temperature", temperature, low=0.0,
                             what="a non-negative float")  # fmt: skip
    if not keras.ops.is_tensor(top_k):
        top_k = int32_option(NAME, "top_k", 0 if top_k is None else top_k, minimum=0)
    if not keras.ops.is_tensor(top_p):
        top_p = number(NAME, "top_p", 1.0 if top_p is None else top_p, low=0.0, high=1.0,
                       low_open=True, what="a float in (0, 1]")  # fmt: skip
    if seed is not None and not keras.ops.is_tensor(seed):
        seed = int32_option(NAME, "seed", seed, minimum=-(2**31))
    return temperature, top_k, top_p, seed


def int32_option(owner, name, value, minimum):
    """`value`, an int in `[minimum, 2**31)` (it becomes an int32 tensor: never wrapped around)."""
    value = positive_int(owner, name, value, minimum=minimum)
    if value >= 2**31:
        raise ValueError(f"{owner}: `{name}` must fit in int32. Received: {name}={value}")
    return value


def check_prompt_values(token_ids, padding_mask, options):
    """The checks of concrete prompts: NumPy `token_ids` (int) and `padding_mask` (bool)."""
    if not token_ids.shape[0]:
        return
    lengths = padding_mask.sum(axis=1)
    if (lengths == 0).any():
        raise ValueError(
            f"{NAME}: every prompt needs at least one token (a start token). Received: "
            f"an empty prompt in row {int((lengths == 0).argmax())}"
        )
    ids = token_ids[padding_mask]
    vocabulary_size = options.get("vocabulary_size")
    if vocabulary_size is not None and ids.size and not (
        ids.min() >= 0 and ids.max() < vocabulary_size
    ):
        bad = ids[(ids < 0) | (ids >= vocabulary_size)][0]
        raise ValueError(
            f"{NAME}: `token_ids` must be tokens of the vocabulary of size "
            f"{vocabulary_size}. Received: a prompt token {int(bad)}"
        )
    if not all(padding_mask[r, : lengths[r]].all() for r in range(len(padding_mask))):
        raise ValueError(
            f"{NAME}: prompts must be left-aligned (`padding_mask` true on a row's first "
            "tokens only). Received: a row with padding before a prompt token"
        )


def concrete_prompts(token_ids, padding_mask, options):
    """`token_ids` and `padding_mask` (arrays or tensors of any backend) as checked NumPy arrays.

    Returns int32 `token_ids` and bool `padding_mask`, both `(batch_size, prompt_length)`.
    """
    token_ids = np.asarray(keras.ops.convert_to_numpy(token_ids))
    if not np.issubdtype(token_ids.dtype, np.integer) or token_ids.ndim != 2:
        raise ValueError(
            f"{NAME}: `token_ids` must be integer ids of shape `(batch_size, prompt_length)`. "
            f"Received: token_ids.shape={token_ids.shape}, dtype={token_ids.dtype.name}"
        )
    token_ids = token_ids.astype("int32")
    if padding_mask is None:
        padding_mask = token_ids != options["pad_id"]
    padding_mask = np.asarray(keras.ops.convert_to_numpy(padding_mask))
    if padding_mask.shape != token_ids.shape:
        raise ValueError(
            f"{NAME}: `padding_mask` must have the shape of `token_ids`. Received: "
            f"padding_mask.shape={padding_mask.shape}, token_ids.shape={token_ids.shape}"
        )
    padding_mask = padding_mask.astype(bool)
    if token_ids.shape[1] > options["max_length"]:
        raise ValueError(
            f"{NAME}: the prompts are longer than `max_length`. Received: "
            f"token_ids.shape={token_ids.shape}, max_length={options['max_length']}"
        )
    check_prompt_values(token_ids, padding_mask, options)
    return token_ids, padding_mask


def token_list(name, ids):
    """`ids` (an int or ints) as a sorted tuple of non-negative ints."""
    if ids is None:
        ids = ()
    elif isinstance(ids, int) or (hasattr(ids, "__index__") and getattr(ids, "ndim", 0) == 0):
        ids = (ids,)  # one id (NumPy arrays and tensors of any rank have `__index__`)
    return tuple(sorted({
        positive_int(NAME, name, int(i) if hasattr(i, "__index__") else i, minimum=0)
        for i in ids
    }))  # fmt: skip


def check_beam_arguments(name, end_id, max_length, beam_width, length_penalty, pad_id, keep_greedy):
    """`beam_search`'s checked `(end_id, max_length, beam_width, alpha, pad_id)`."""
    end_id = positive_int(name, "end_id", end_id, minimum=0)
    max_length = positive_int(name, "max_length", max_length)
    beam_width = positive_int(name, "beam_width", beam_width)
    alpha = number(name, "length_penalty", length_penalty, low=0.0, what="a non-negative float")
    pad_id = positive_int(name, "pad_id", pad_id, minimum=0)
    if not isinstance(keep_greedy, bool):
        raise ValueError(
            f"{name}: `keep_greedy` must be a bool. Received: keep_greedy={keep_greedy!r}"
        )
    return end_id, max_length, beam_width, alpha, pad_id


def check_sample_arguments(name, end_id, max_length, top_k, top_p, temperature, seed, pad_id):
    """`sample`'s checked `(end_id, max_length, top_k, top_p, temperature, seed, pad_id)`.

    `top_p=1.0` comes back as `None` (it keeps every token; skipping it avoids rounding in the
    cumulative sum).
    """
    end_id = positive_int(name, "end_id", end_id, minimum=0)
    max_length = positive_int(name, "max_length", max_length)
    if top_k is not None:
        top_k = positive_int(name, "top_k", top_k)
    if top_p is not None:
        top_p = number(name, "top_p", top_p, low=0.0, high=1.0, low_open=True, what="a float in (0, 1]")
        if top_p == 1.0:
            top_p = None
    temperature = number(name, "temperature", temperature, low=0.0, low_open=True,
                         what="a positive float")  # fmt: skip
    if seed is not None:
        seed = positive_int(name, "seed", seed, minimum=-(2**31))
        if seed >= 2**31:
            raise ValueError(f"{name}: `seed` must fit in int32. Received: seed={seed}")
    pad_id = positive_int(name, "pad_id", pad_id, minimum=0)
    return end_id, max_length, top_k, top_p, temperature, seed, pad_id
