"""On-device decoding: a model's encoder and cached decode step in one `.tflite` file, and its loop.

`convert_decoding_tflite` writes the decoding methods of an
`EncoderDecoderBackbone` as signatures named as LiteRT's generative models
name theirs, with TFLite builtin ops only:

- `encode`: `tokens` int32 `(batch, S)` (source ids, `0` padding; a
  captioner's `images` float32 `(batch, S, S, 3)`) -> the
  initial decoding state, one output per entry of the model's
  `decoding_state_spec` (`encoder_padding_mask`, per decoder block
  `kv_cache_k_<i>` / `kv_cache_v_<i>` (zeros) and `cross_k_<i>` /
  `cross_v_<i>` for a Transformer; `memory`, `projected_memory` (additive or
  concat scores), `decoder_state_<j>` for an RNN);
- `prefill`: `tokens` int32 `(batch, T)`, `input_pos` int32 `(T,)` (the
  target positions of the tokens, consecutive), and every state entry ->
  `logits` float32 `(batch, T, vocabulary_size)` and the state entries the
  step changes (the KV caches, or the RNN states), under the same names;
- `decode`: the same with `tokens` `(batch, 1)` and `input_pos` `(1,)`.

`TFLiteGenerator` is the small host loop that runs such a file with the
LiteRT interpreter (`ai_edge_litert`): encode once, then one `decode` per
token, greedy, as `keras_attention.generation.greedy_search` decides
(`never_generated` tokens masked, finished rows padded).
"""

import warnings

import numpy as np
import tensorflow as tf

from keras_attention.export.litert_causal_lm import TFLiteCausalLM, convert_causal_lm_tflite
from keras_attention.export.tflite import (
    _interpreter,
    _read,
    _short,
    _signature_runner,
    check_output_path,
    convert_tflite,
    run_tflite,
)
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.models.gpt import GPTCausalLM
from keras_attention.models.seq2seq_translator import Seq2SeqTranslator
from keras_attention.tasks.serving_status import sanitize
from keras_attention.utils import describe, positive_int
from pipelines.text import END_ID, PAD_ID, START_ID


def decoding_signatures(model, max_length=None, batch_size=None):
    """The `encode`, `prefill` and `decode` endpoints of a model: `{name: (fn, input_signature)}`.

    Args:
        model: an `EncoderDecoderBackbone`.
        max_length: the KV cache size (the most target positions); defaults
            to the model's limit. Ignored by models without a cache.
        batch_size: optional fixed batch size of `encode` (`None`: any).

    Returns:
        A dict for `convert_tflite(model, signatures=...)` or
        `export_saved_model(model, signatures=...)`.
    """
    if not isinstance(model, EncoderDecoderBackbone):
        raise ValueError(
            "decoding_signatures: `model` must be an EncoderDecoderBackbone (a translator "
            f"backbone). Received: model={describe(model)}"
        )
    max_length = model.decoding_length(max_length, owner="decoding_signatures")
    input_name, input_shape, input_dtype = model.encode_input
    state_spec = model.decoding_state_spec(max_length)
    names = list(state_spec)
    state_specs = [
        tf.TensorSpec(shape, tf.as_dtype(dtype), name=name)
        for name, (shape, dtype) in state_spec.items()
    ]

    def encode(inputs):
        return dict(model.encode(inputs, max_length=max_length))

    def step(tokens, input_pos, *state_values):
        state = dict(zip(names, state_values, strict=True))
        logits, new_state = model.call_with_cache(tokens, state, input_pos[0])
        changed = {name: value for name, value in new_state.items() if value is not state[name]}
        return {"logits": logits, **changed}

    def step_specs(length):
        return [
            tf.TensorSpec((None, length), tf.int32, name="tokens"),
            tf.TensorSpec((length,), tf.int32, name="input_pos"),
            *state_specs,
        ]

    return {
        "encode": (
            encode,
            [tf.TensorSpec((batch_size, *input_shape), input_dtype, name=input_name)],
        ),
        "prefill": (step, step_specs(None)),
        "decode": (step, step_specs(1)),
    }


def convert_decoding_tflite(
    model, max_length=None, quantization=None, output_path=None, overwrite=False,
    batch_size="auto",
):  # fmt: skip
    """Converts a model's `encode`, `prefill` and `decode` into one builtins-only `.tflite` file.

    Args:
        model: an `EncoderDecoderBackbone` (`Seq2SeqTranslator`,
            `TransformerTranslator`).
        max_length: the KV cache size, the most target positions a decoding
            takes. Defaults to the model's limit (its `sequence_length`).
        quantization: as for `convert_tflite` (`None`, `"float16"`,
            `"dynamic"`). Defaults to `None` (float32).
        output_path: optional path the flatbuffer is also written to.
        overwrite: bool, replace an existing `output_path`. Defaults to
            `False`.
        batch_size: the batch size of `encode`: `None` (any), a positive int
            (`TFLiteGenerator` then encodes a batch one row at a time), or
            `"auto"`: `1` for a `Seq2SeqTranslator`, whose recurrent encoder
            keeps its outputs in a TensorList that converts to builtins only
            with a fixed batch size, `None` otherwise. `prefill` and `decode`
            take any batch size. Defaults to `"auto"`.

    Returns:
        The flatbuffer, `bytes`.

    Example:

    >>> import numpy as np
    >>> from keras_attention.models import transformer_translator
    >>> model = transformer_translator(20, 20, sequence_length=8, num_layers=1, hidden_dim=8,
    ...                                num_heads=2, intermediate_dim=8)
    >>> flatbuffer = convert_decoding_tflite(model)
    >>> generator = TFLiteGenerator(flatbuffer)
    >>> tokens, lengths = generator.generate(np.array([[5, 6, 7, 0]]), max_length=5)
    >>> tokens.shape, sorted(generator.signatures)
    ((1, 5), ['decode', 'encode', 'prefill'])
    """
    check_output_path(output_path, overwrite, "convert_decoding_tflite")
    if batch_size == "auto":
        batch_size = 1 if isinstance(model, Seq2SeqTranslator) else None
    return convert_tflite(
        model,
        quantization=quantization,
        signatures=decoding_signatures(model, max_length, batch_size),
        output_path=output_path,
        overwrite=overwrite,
    )


class TFLiteGenerator:
    """Greedy generation with a `.tflite` file from `convert_decoding_tflite`, in the LiteRT interpreter.

    The loop (the same decisions as `keras_attention.generation.greedy_search`):
    `encode` the source ids once; then, from `start_id`, call `decode` with
    the previous token at position `t` and the state, take the argmax of the
    logits with the `never_generated` tokens excluded, and stop a row at
    `end_id` (it emits `pad_id` afterwards); at most `max_length` tokens.
    The tokenizers stay on the host: `generate_texts` runs a preprocessor's
    `generate_preprocess` / `generate_postprocess` around the loop.

    Args:
        flatbuffer: the `.tflite` file (a path) or its bytes.
        start_id, end_id, pad_id: the special tokens. Default to the
            reserved ids of `pipelines.text` (`2`, `3`, `0`).
        never_generated: token ids never chosen. Defaults to `(pad_id,
            start_id)`, as `Translator` does.

    Attributes:
        signatures: the signature names of the file.
        cache_length: the KV cache size of the file, or `None` (an RNN).
        encode_batch_size: the fixed batch size of `encode`, or `None`.
    """

    def __init__(self, flatbuffer, start_id=START_ID, end_id=END_ID, pad_id=PAD_ID,
                 never_generated=None):  # fmt: skip
        self._flatbuffer = _read(flatbuffer)
        self.start_id, self.end_id, self.pad_id = int(start_id), int(end_id), int(pad_id)
        if never_generated is None:
            never_generated = (self.pad_id, self.start_id)
        self.never_generated = tuple(int(i) for i in never_generated)
        interpreter = _interpreter(self._flatbuffer)
        self.signatures = tuple(sorted(interpreter.get_signature_list()))
        self._encode, encode_inputs = _signature_runner(self._flatbuffer, "encode", interpreter)
        ((self._encode_name, encode_input),) = encode_inputs.items()
        self._encode_dtype = encode_input["dtype"]
        self._encode_shape = tuple(int(d) for d in encode_input["shape_signature"][1:])
        batch = int(encode_input["shape_signature"][0])
        self.encode_batch_size = None if batch < 0 else batch
        self._decode, decode_inputs = _signature_runner(self._flatbuffer, "decode", interpreter)
        caches = [d for name, d in decode_inputs.items() if name.startswith("kv_cache_")]
        self.cache_length = int(caches[0]["shape"][1]) if caches else None
        self._state_inputs = {
            name: detail["dtype"]
            for name, detail in decode_inputs.items()
            if name not in ("tokens", "input_pos")
        }
        logits = self._decode.get_output_details().get("logits")
        # The size of the ids the file generates (`None` when the file has no `logits` output).
        self.vocabulary_size = None if logits is None else int(logits["shape"][-1])

    def encode(self, source_ids):
        """Source ids `(batch, S)`, or a captioner's images `(batch, S, S, 3)` -> the state (NumPy)."""
        source_ids = np.asarray(source_ids, dtype=self._encode_dtype)
        name = self._encode_name
        expected = self._encode_shape
        if source_ids.ndim != 1 + len(expected) or any(
            e >= 0 and e != d for e, d in zip(expected, source_ids.shape[1:], strict=True)
        ):
            shape = ", ".join("None" if e < 0 else str(e) for e in expected)
            raise ValueError(
                f"TFLiteGenerator: `source_ids` must have the shape of the file's `encode` input "
                f"`{name}`, `(batch_size, {shape})`. Received: source_ids.shape={source_ids.shape}"
            )
        if self.encode_batch_size is None or len(source_ids) == self.encode_batch_size:
            return dict(self._encode(**{name: source_ids}))
        step = self.encode_batch_size  # a fixed batch: encode the rows a batch at a time
        parts = [
            self._encode(**{name: source_ids[i : i + step]})
            for i in range(0, len(source_ids), step)
        ]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def step(self, token_ids, state, position):
        """One `decode` call: `(logits (batch, vocabulary_size), new_state)`."""
        feed = {name: np.asarray(state[name], dtype) for name, dtype in self._state_inputs.items()}
        outputs = self._decode(
            tokens=np.asarray(token_ids, np.int32).reshape(-1, 1),
            input_pos=np.array([position], np.int32),
            **feed,
        )
        new_state = dict(state)
        new_state.update({name: value for name, value in outputs.items() if name != "logits"})
        return outputs["logits"][:, -1], new_state

    def generate(self, source_ids, max_length=None):
        """Greedy decoding: `(tokens (batch, max_length) int32, lengths (batch,) int32)`.

        `tokens` exclude the start token and include the end token, with
        `pad_id` after it; `lengths` count the tokens up to and including the
        end token (`max_length` for a row that did not end).

        Args:
            source_ids: the `encode` input: int `(batch_size, S)` source ids
                (`0` padding), or float32 images `(batch_size, S, S, 3)`.
            max_length: positive int, the most tokens generated. Defaults to
                the file's cache size (required for an RNN).
        """
        if max_length is None:
            max_length = self.cache_length
        max_length = positive_int("TFLiteGenerator.generate", "max_length", max_length)
        if self.cache_length is not None and max_length > self.cache_length:
            raise ValueError(
                "TFLiteGenerator.generate: `max_length` may not exceed the file's KV cache "
                f"({self.cache_length} positions). Received: max_length={max_length}"
            )
        state = self.encode(source_ids)
        batch_size = len(source_ids)
        tokens = np.full((batch_size, max_length), self.pad_id, np.int32)
        lengths = np.zeros(batch_size, np.int32)
        finished = np.zeros(batch_size, bool)
        previous = np.full(batch_size, self.start_id, np.int32)
        for position in range(max_length):
            logits, state = self.step(previous, state, position)
            logits = np.asarray(logits, np.float32).copy()
            logits[:, list(self.never_generated)] = np.finfo(np.float32).min
            chosen = np.argmax(logits, axis=-1).astype(np.int32)
            chosen = np.where(finished, self.pad_id, chosen)
            lengths += ~finished
            finished |= chosen == self.end_id
            tokens[:, position] = chosen
            previous = chosen
            if finished.all():
                break
        return tokens, lengths

    def generate_texts(self, texts, preprocessor, max_length=None):
        """Strings in, strings out: the preprocessor on the host, the model in LiteRT.

        Args:
            texts: a list of `str`.
            preprocessor: the task's preprocessor (`TranslationPreprocessor`:
                `generate_preprocess` and `generate_postprocess`).
            max_length: as for `generate`.

        Returns:
            A list of `str`: `""` for a text with no token or not UTF-8 (as the
            SavedModel answers), never a translation of nothing.
        """
        if not texts:
            return []
        text, valid = sanitize(tf.constant([t if isinstance(t, bytes) else str(t) for t in texts],
                                           tf.string))  # fmt: skip
        source_tokens, source_ids = preprocessor.generate_preprocess(text)
        tokens, _ = self.generate(source_ids.numpy(), max_length)
        answered = valid.numpy() & (source_tokens.row_lengths().numpy() > 0)
        outputs = [t.decode("utf-8") for t in preprocessor.generate_postprocess(tokens).numpy()]
        return [output if ok else "" for output, ok in zip(outputs, answered, strict=True)]


def convert_task_tflite(task, output_path=None, quantization=None, overwrite=False):
    """A task's on-device file: for a translator, `convert_decoding_tflite` of its backbone.

    The KV cache holds the task's `max_length` target positions (a
    Transformer); the tokenizers stay on the host (`tflite_predictor`). A
    task with `tflite_signatures()` (`TextClassifier`: ids in,
    probabilities out) gets those signatures converted instead; a
    `CausalLM` gets LiteRT's generative `prefill` / `decode` signatures
    (`convert_causal_lm_tflite`, batch 1, a cache of the task's
    `max_length`).

    Args:
        task: a `keras_attention.tasks.Task` whose backbone decodes
            (`EncoderDecoderBackbone`), or one with `tflite_signatures`.
        output_path, quantization, overwrite: as for `convert_decoding_tflite`.

    Returns:
        The flatbuffer, `bytes`.
    """
    check_output_path(output_path, overwrite, "convert_task_tflite")  # before any tracing
    if isinstance(getattr(task, "backbone", None), GPTCausalLM):  # prefill / decode, batch 1
        return convert_causal_lm_tflite(
            task.backbone, max_length=task.max_length, quantization=quantization,
            output_path=output_path, overwrite=overwrite,
        )  # fmt: skip
    if hasattr(task, "tflite_signatures"):  # one pass on device, no decoding loop (a classifier)
        return convert_tflite(
            task.backbone, quantization=quantization, signatures=task.tflite_signatures(),
            output_path=output_path, overwrite=overwrite,
        )  # fmt: skip
    check_tflite_task("convert_task_tflite", task)
    backbone = task.backbone
    max_length = None if backbone.target_sequence_length is None else task.max_length
    return convert_decoding_tflite(
        backbone,
        max_length=max_length,
        quantization=quantization,
        output_path=output_path,
        overwrite=overwrite,
    )


def check_tflite_task(fn_name, task):
    """Raises a `ValueError` naming the task kinds that have a `.tflite` form, for any other.

    Those are a task with `tflite_signatures()` (a `TextClassifier`), a `CausalLM` and a task
    whose backbone decodes (`EncoderDecoderBackbone`: a `Translator`, a `Captioner`). Called
    before anything is converted or written.
    """
    backbone = getattr(task, "backbone", None)
    if (
        hasattr(task, "tflite_signatures")
        or isinstance(backbone, GPTCausalLM | EncoderDecoderBackbone)
    ):
        return
    raise ValueError(
        f"{fn_name}: a {type(task).__name__} has no .tflite form; one exists for a Translator, a "
        "Captioner (on-device decoding), a CausalLM (prefill / decode) and a TextClassifier "
        f"(ids in, probabilities out). Received: task={type(task).__name__} with backbone "
        f"{describe(backbone)}"
    )


def tflite_predictor(task, flatbuffer):
    """`predict(inputs) -> list of str` with a task's `.tflite` file: pre/post-processing on the host.

    The task's `preprocess_for_device` (a translator's tokenizer, a
    captioner's image decoding and resizing) and `postprocess_from_device`
    (detokenization) run on the host, `TFLiteGenerator` in LiteRT. For a text
    task, `predict.with_status(inputs)` also gives each input's `status`, as
    `task.predict_with_status` does.

    Example: `tflite_predictor(Task.load("runs/dates"), "dates.tflite")(["3 march 2021"])`.
    """
    check_tflite_task("tflite_predictor", task)
    if hasattr(task, "tflite_signatures"):  # one pass, no decoding loop (a classifier)
        return _with_status(task, _single_pass_predictor(task, flatbuffer))
    if isinstance(getattr(task, "backbone", None), GPTCausalLM):
        return _with_status(task, _causal_lm_predictor(task, flatbuffer))
    if getattr(task, "beam_width", 1) != 1:
        warnings.warn(
            f"tflite_predictor: the on-device loop decodes greedily; the task's beam_width="
            f"{task.beam_width} is not used on device.",
            stacklevel=2,
        )
    generator = TFLiteGenerator(flatbuffer, never_generated=task.never_generated_ids)
    _check_same_vocabulary(generator, getattr(task.backbone, "target_vocabulary_size", None),
                           flatbuffer)  # fmt: skip

    def predict(inputs):
        if not len(inputs):
            return []
        encoded, valid = task.preprocess_for_device(inputs)
        tokens, _ = generator.generate(encoded, task.max_length)
        outputs = task.postprocess_from_device(tokens)
        if valid is None:
            return outputs
        return [output if ok else "" for output, ok in zip(outputs, valid, strict=True)]

    return _with_status(task, predict)


def _with_status(task, predict):
    """Gives `predict` a `with_status(inputs) -> {"outputs", "status"}` for a task that reports
    each input's `status` (`keras_attention.tasks.serving_status`) as its SavedModel does."""
    if hasattr(task, "device_status"):

        def with_status(inputs):
            if not len(inputs):
                return {"outputs": [], "status": []}
            return {"outputs": predict(inputs), "status": task.device_status(inputs)}

        predict.with_status = with_status
    return predict


def _causal_lm_predictor(task, flatbuffer):
    """`predict` for a causal LM: the prompts framed on the host, greedy decoding in LiteRT."""
    generator = TFLiteCausalLM(flatbuffer, pad_id=task.preprocessor.pad_id)
    _check_same_vocabulary(generator, task.backbone.vocabulary_size, flatbuffer)
    if task.sampler != "greedy":
        warnings.warn(
            f"tflite_predictor: the on-device loop decodes greedily; the task's sampler="
            f"{task.sampler!r} is not used on device.",
            stacklevel=3,
        )

    def predict(prompts):
        if not len(prompts):
            return []
        token_ids, padding_mask = task.preprocess_for_device(prompts)
        tokens = generator.generate(
            token_ids, padding_mask, task.max_length,
            stop_token_ids=(task.preprocessor.end_id,),
            suppress_token_ids=task.never_generated_ids, max_new_tokens=task.max_new_tokens,
        )  # fmt: skip
        outputs = task.postprocess_from_device(tokens, padding_mask)
        _, valid = sanitize(tf.constant(list(prompts), tf.string))  # not UTF-8: "" as served
        return [output if ok else "" for output, ok in zip(outputs, valid.numpy(), strict=True)]

    return predict


def _single_pass_predictor(task, flatbuffer):
    """`predict` for a task whose file is one signature (`task.device_signature`) per batch."""

    def predict(inputs):
        if not len(inputs):
            return []
        feed, valid = task.preprocess_for_device(inputs)
        outputs = task.postprocess_from_device(
            run_tflite(flatbuffer, feed, signature=task.device_signature)
        )
        if valid is None:
            return outputs
        return [output if ok else "" for output, ok in zip(outputs, valid, strict=True)]

    return predict


def _check_same_vocabulary(generator, task_size, flatbuffer):
    """Refuses another model's file: its ids would be detokenized with this task's vocabulary
    (ids past it crash tensorflow-text's detokenizer). `None` sizes are not compared."""
    file_size = generator.vocabulary_size
    if None not in (file_size, task_size) and file_size != task_size:
        raise ValueError(
            f"tflite_predictor: the .tflite file generates ids of a vocabulary of {file_size}; "
            f"the task's has {task_size}: the file was converted from another model. "
            f"Received: flatbuffer={_short(flatbuffer)}"
        )

