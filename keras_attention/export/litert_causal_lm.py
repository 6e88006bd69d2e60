"""On-device text generation: a causal LM's `prefill` and `decode` in one `.tflite` file, and its loop.

`convert_causal_lm_tflite` writes the cached forward pass of a `GPTCausalLM`
as two signatures laid out as LiteRT's generative models lay out theirs, with
TFLite builtin ops only:

- `prefill`: `tokens` int32 `(1, T)` (any `T`), `input_pos` int32 `(T,)`
  (the positions of the tokens, consecutive), and the KV caches
  `kv_cache_k_<i>` / `kv_cache_v_<i>` float32 `(1, max_length, kv_heads,
  head_dim)` -> `logits` float32 `(1, T, vocabulary_size)` and the updated
  caches under the same names;
- `decode`: the same with `tokens` `(1, 1)` and `input_pos` `(1,)`.

The batch size is fixed to `1`, as in LiteRT's generative models (one
conversation per interpreter; a batch runs one row after the other).
`TFLiteCausalLM` is the host loop that runs such a file in the LiteRT
interpreter (`ai_edge_litert`): the greedy decisions of
`keras_attention.generation.generate(..., sampler="greedy")`.
"""

import numpy as np
import tensorflow as tf

from keras_attention.export.tflite import (
    _interpreter,
    _read,
    _signature_runner,
    check_output_path,
    convert_tflite,
)
from keras_attention.generation._options import token_list
from keras_attention.models.gpt import GPTCausalLM
from keras_attention.utils import describe, positive_int

_CLASS = "TFLiteCausalLM"


def causal_lm_signatures(model, max_length=None):
    """The `prefill` and `decode` endpoints of a causal LM: `{name: (fn, input_signature)}`.

    Both run `model.call_with_cache(tokens, caches, input_pos[0])` with a
    batch of `1` (LiteRT's generative layout, see the module docstring).

    Args:
        model: a `GPTCausalLM`.
        max_length: positive int, the KV cache size (the most positions a
            generation holds, prompt included). Defaults to the model's
            `max_sequence_length`.

    Returns:
        A dict for `convert_tflite(model, signatures=...)`.

    Example:

    >>> from keras_attention.models import gpt_causal_lm
    >>> model = gpt_causal_lm(20, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=8,
    ...                       max_sequence_length=8)
    >>> signatures = causal_lm_signatures(model)
    >>> [spec.name for spec in signatures["decode"][1]]
    ['tokens', 'input_pos', 'kv_cache_k_0', 'kv_cache_v_0']
    >>> tuple(signatures["prefill"][1][2].shape)  # (1, max_length, kv_heads, head_dim)
    (1, 8, 2, 4)
    """
    owner = "causal_lm_signatures"
    if not isinstance(model, GPTCausalLM):
        raise ValueError(
            f"{owner}: `model` must be a causal LM with KV caches (a GPTCausalLM, e.g. from "
            f"keras_attention.models.gpt_causal_lm). Received: model={describe(model)}"
        )
    if max_length is None:
        max_length = model.max_sequence_length
    max_length = model.cache_length(max_length, owner=owner)
    cache_spec = model.cache_spec(max_length)
    names = list(cache_spec)
    cache_specs = [
        tf.TensorSpec((1, *shape[1:]), tf.as_dtype(dtype), name=name)
        for name, (shape, dtype) in cache_spec.items()
    ]

    def run(tokens, input_pos, *caches):
        cache = dict(zip(names, caches, strict=True))
        logits, cache = model.call_with_cache(tokens, cache, input_pos[0])
        return {"logits": logits, **cache}

    def inputs(length):
        token_specs = [tf.TensorSpec((1, length), tf.int32, name="tokens"),
                       tf.TensorSpec((length,), tf.int32, name="input_pos")]  # fmt: skip
        return token_specs + cache_specs

    return {"prefill": (run, inputs(None)), "decode": (run, inputs(1))}


def convert_causal_lm_tflite(model, max_length=None, quantization=None, output_path=None,
                             overwrite=False):  # fmt: skip
    """Converts a causal LM's `prefill` and `decode` into one builtins-only `.tflite` file.

    Args:
        model: a `GPTCausalLM` (learned or rotary positions, grouped-query
            attention included).
        max_length: the KV cache size. Defaults to the model's
            `max_sequence_length`.
        quantization: as for `convert_tflite`: `None` (float32), `"float16"`
            or `"dynamic"` (int8 weights, dynamic-range activations).
            Defaults to `None`.
        output_path: optional path the flatbuffer is also written to.
        overwrite: bool, replace an existing `output_path`. Defaults to
            `False`.

    Returns:
        The flatbuffer, `bytes`.

    Example:

    >>> import numpy as np
    >>> from keras_attention.models import gpt_causal_lm
    >>> model = gpt_causal_lm(20, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=8,
    ...                       max_sequence_length=8)
    >>> lm = TFLiteCausalLM(convert_causal_lm_tflite(model))
    >>> prompts = np.array([[2, 7, 9], [2, 5, 0]])
    >>> tokens = lm.generate(prompts, prompts != 0, max_length=8)
    >>> tokens.shape, tokens[0, :3].tolist(), lm.signatures, lm.cache_length
    ((2, 8), [2, 7, 9], ('decode', 'prefill'), 8)
    """
    check_output_path(output_path, overwrite, "convert_causal_lm_tflite")
    return convert_tflite(
        model,
        quantization=quantization,
        signatures=causal_lm_signatures(model, max_length),
        output_path=output_path,
        overwrite=overwrite,
    )


class TFLiteCausalLM:
    """Greedy generation with a `.tflite` file from `convert_causal_lm_tflite`, in LiteRT.

    The decisions of `keras_attention.generation.generate(...,
    sampler="greedy")`, one row at a time (the file's batch is `1`): the
    row's prompt of `n` tokens goes through `prefill` at positions
    `0..n-1` (through `decode` at `0` when `n == 1`); then the argmax of the
    last logits (the lowest id on ties) is the token at `n`, which `decode`
    runs at position `n` for the token at `n + 1`, and so on up to
    `max_length` tokens. A row ends after one of `stop_token_ids` (kept) and
    is filled with `pad_id` after it.

    Args:
        flatbuffer: the `.tflite` file (a path) or its bytes.
        pad_id: int, the padding token (after a stop token; the default
            `padding_mask` is `token_ids != pad_id`). Defaults to `0`.

    Attributes:
        signatures: the signature names of the file, `('decode', 'prefill')`.
        cache_length: the KV cache size of the file (the most positions).
        vocabulary_size: the size of the logits.
    """

    def __init__(self, flatbuffer, pad_id=0):
        self._flatbuffer = _read(flatbuffer)
        self._suppressed = []
        self.pad_id = positive_int(_CLASS, "pad_id", pad_id, minimum=0)
        interpreter = _interpreter(self._flatbuffer)
        self.signatures = tuple(sorted(interpreter.get_signature_list()))
        self._prefill, _ = _signature_runner(self._flatbuffer, "prefill", interpreter)
        self._decode, inputs = _signature_runner(self._flatbuffer, "decode", interpreter)
        self._caches = {
            name: (tuple(int(d) for d in detail["shape"]), detail["dtype"])
            for name, detail in inputs.items()
            if name.startswith("kv_cache_")
        }
        if not self._caches or set(inputs) - set(self._caches) != {"tokens", "input_pos"}:
            raise ValueError(
                f"{_CLASS}: the file's `decode` must take `tokens`, `input_pos` and the KV caches "
                f"`kv_cache_k_<i>` / `kv_cache_v_<i>` (convert_causal_lm_tflite). Received: "
                f"decode inputs {sorted(inputs)}"
            )
        self.cache_length = next(iter(self._caches.values()))[0][1]
        self.vocabulary_size = int(self._decode.get_output_details()["logits"]["shape"][-1])

    def empty_cache(self):
        """Zero KV caches: `{name: (1, cache_length, kv_heads, head_dim) array}`."""
        return {name: np.zeros(shape, dtype) for name, (shape, dtype) in self._caches.items()}

    def run(self, token_ids, start, cache):
        """Tokens `(T,)` at positions `start, ...`: `(logits (T, V) float32, new cache)`.

        `prefill` runs them, or `decode` when `T == 1`.
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 1 or not token_ids.size or not np.issubdtype(token_ids.dtype, np.integer):
            raise ValueError(
                f"{_CLASS}.run: `token_ids` must be integer ids of shape `(T,)`, T >= 1. "
                f"Received: token_ids.shape={token_ids.shape}, dtype={token_ids.dtype}"
            )
        self._check_tokens(f"{_CLASS}.run", "token_ids", token_ids)
        token_ids = token_ids.astype(np.int32).reshape(1, -1)
        length = token_ids.shape[1]
        start = positive_int(f"{_CLASS}.run", "start", start, minimum=0)
        if start + length > self.cache_length:  # LiteRT would clamp the positions silently
            raise ValueError(
                f"{_CLASS}.run: positions `start` to `start + T - 1` must fit in the file's KV "
                f"cache ({self.cache_length} positions). Received: start={start}, T={length}"
            )
        runner = self._decode if length == 1 else self._prefill
        positions = np.arange(start, start + length, dtype=np.int32)
        outputs = runner(tokens=token_ids, input_pos=positions, **cache)
        logits = outputs.pop("logits")
        return logits[0], outputs

    def logits(self, token_ids):
        """Full sequences `(batch, T)` from position `0` -> float32 logits `(batch, T, V)`."""
        token_ids = _integer_rows(token_ids, "token_ids")
        self._check_tokens(f"{_CLASS}.logits", "token_ids", token_ids)
        if token_ids.shape[1] > self.cache_length:
            raise ValueError(
                f"{_CLASS}.logits: `token_ids` is longer than the file's KV cache "
                f"({self.cache_length} positions). Received: token_ids.shape={token_ids.shape}"
            )
        return np.stack([self.run(row, 0, self.empty_cache())[0] for row in token_ids])

    def generate(self, token_ids, padding_mask=None, max_length=None, stop_token_ids=(),
                 suppress_token_ids=(), max_new_tokens=None):  # fmt: skip
        """Greedy continuation of ragged prompts: int32 `(batch_size, max_length)`.

        Args:
            token_ids: int `(batch_size, prompt_length)`, the prompts, left
                aligned; every row needs at least one token.
            padding_mask: bool or int, the shape of `token_ids`, true for
                prompt tokens. Defaults to `token_ids != pad_id`.
            max_length: positive int, the length of the output rows (prompt
                included), at most `cache_length`. Defaults to
                `cache_length`.
            stop_token_ids: an int or ints, the tokens that end a row.
                Defaults to `()`.
            suppress_token_ids: ints, tokens never generated. Defaults to `()`.
            max_new_tokens: optional positive int, the most tokens a row adds
                after its own prompt. Defaults to `None` (up to `max_length`).

        Returns:
            The prompts, the generated tokens (a stop token included), then
            `pad_id`, as `generate(..., sampler="greedy")` returns them.
        """
        owner = f"{_CLASS}.generate"
        max_length = self._max_length(max_length)
        prompts = self._prompts(token_ids, padding_mask, max_length)
        stops = set(token_list("stop_token_ids", stop_token_ids))  # None: none, as in `generate`
        suppressed = list(token_list("suppress_token_ids", suppress_token_ids))
        self._check_tokens(owner, "stop_token_ids", np.asarray(sorted(stops), np.int64))
        self._check_tokens(owner, "suppress_token_ids", np.asarray(suppressed, np.int64))
        self._suppressed = suppressed
        if max_new_tokens is not None:
            max_new_tokens = positive_int(_CLASS, "max_new_tokens", max_new_tokens)
        tokens = np.full((len(prompts), max_length), self.pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            end = (
                max_length
                if max_new_tokens is None
                else min(max_length, len(prompt) + max_new_tokens)
            )
            tokens[row, :end] = self._generate_row(prompt, end, stops)
        return tokens

    def _generate_row(self, prompt, max_length, stops):
        row = np.full(max_length, self.pad_id, np.int32)
        row[: len(prompt)] = prompt
        if len(prompt) == max_length:
            return row
        logits, cache = self.run(prompt, 0, self.empty_cache())
        for index in range(len(prompt), max_length):
            last = np.array(logits[-1], np.float32)
            last[self._suppressed] = -np.inf
            row[index] = np.argmax(last)
            if row[index] in stops or index + 1 == max_length:
                break
            logits, cache = self.run(row[index : index + 1], index, cache)
        return row

    def _check_tokens(self, owner, name, ids):
        """Refuses ids outside the vocabulary (LiteRT would gather out of range, or fail raw)."""
        bad = ids[(ids < 0) | (ids >= self.vocabulary_size)]
        if bad.size:
            raise ValueError(
                f"{owner}: `{name}` must be tokens of the vocabulary of size "
                f"{self.vocabulary_size}. Received: {name} holds {int(bad[0])}"
            )

    def _max_length(self, max_length):
        if max_length is None:
            return self.cache_length
        max_length = positive_int(f"{_CLASS}.generate", "max_length", max_length)
        if max_length > self.cache_length:
            raise ValueError(
                f"{_CLASS}.generate: `max_length` may not exceed the file's KV cache "
                f"({self.cache_length} positions). Received: max_length={max_length}"
            )
        return max_length

    def _prompts(self, token_ids, padding_mask, max_length):
        """The rows' prompt tokens, a list of int32 arrays, checked."""
        owner = f"{_CLASS}.generate"
        token_ids = _integer_rows(token_ids, "token_ids")
        if padding_mask is None:
            padding_mask = token_ids != self.pad_id
        padding_mask = np.asarray(padding_mask).astype(bool)
        if padding_mask.shape != token_ids.shape:
            raise ValueError(
                f"{owner}: `padding_mask` must have the shape of `token_ids`. Received: "
                f"padding_mask.shape={padding_mask.shape}, token_ids.shape={token_ids.shape}"
            )
        lengths = padding_mask.sum(axis=1)
        aligned = padding_mask == (np.arange(token_ids.shape[1]) < lengths[:, None])
        bad = np.flatnonzero((lengths == 0) | ~aligned.all(axis=1))
        if bad.size:
            raise ValueError(
                f"{owner}: every prompt needs at least one token, left-aligned (`padding_mask` "
                f"true on a row's first tokens only). Received: padding_mask[{bad[0]}]="
                f"{padding_mask[bad[0]].astype(int).tolist()}"
            )
        longest = int(lengths.max(initial=0))
        for limit, what in (
            (self.cache_length, "the file's KV cache"),
            (max_length, "`max_length`"),
        ):
            if longest > limit:
                raise ValueError(
                    f"{owner}: a prompt is longer than {what} ({limit} positions). Received: "
                    f"prompt lengths {lengths.tolist()}, max_length={max_length}"
                )
        self._check_tokens(owner, "token_ids", token_ids[padding_mask])
        return [row[:length] for row, length in zip(token_ids, lengths, strict=True)]


def _integer_rows(token_ids, name):
    """`token_ids` as int32 `(batch, T)`, or a `ValueError`."""
    array = np.asarray(token_ids)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"{_CLASS}: `{name}` must be integer ids of shape `(batch_size, length)`. "
            f"Received: {name}.shape={array.shape}, dtype={array.dtype}"
        )
    return array.astype(np.int32)
