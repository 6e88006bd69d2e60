"""The causal-LM task: GPT training on plain text, generation and scoring with strings in and out."""

import math
import os

import tensorflow as tf

from keras_attention.generation import generate as generate_ids
from keras_attention.generation._options import int32_option
from keras_attention.models.gpt import GPTCausalLM, gpt_causal_lm
from keras_attention.tasks.bert_config import TextData
from keras_attention.tasks.causal_lm_config import (
    DEFAULT_NEW_TOKENS,
    SERVED_SAMPLERS,
    CausalLMConfig,
)
from keras_attention.tasks.causal_lm_stream import new_seed, stream_tokens
from keras_attention.tasks.losses import MaskedTokenAccuracy, masked_loss
from keras_attention.tasks.masked_lm import MaskedLM, text_batch
from keras_attention.tasks.registry import register_task
from keras_attention.tasks.serving_status import (
    INVALID_UTF8,
    decode_statuses,
    input_status,
    sanitize,
)
from keras_attention.tasks.task import Task
from keras_attention.utils import describe, number, one_of, positive_int
from pipelines import causal_lm as pipeline
from pipelines.text import MASK_ID, build_wordpiece_vocab

_NAME = "CausalLM"
VOCABULARY = "vocabulary.txt"
SAMPLERS = ("greedy", "sample", "beam")


@register_task
class CausalLM(Task):
    """A GPT causal language model: trains on plain text, continues prompts, scores texts.

    `generate` runs one `tf.function` traced for a `tf.string` `(batch_size,)`
    input — the one the SavedModel's `generate` signature serves — so what is
    served is what runs in memory: each prompt is tokenized and framed
    `[START] tokens`, cut from the left when it does not leave room for the
    new tokens (`max_length - max_new_tokens` tokens kept, `[START]` first;
    `truncated` says so), continued by `keras_attention.generation.generate`
    (stop at `[END]`; `[PAD]`, `[START]` and `[MASK]` never generated) and
    the new tokens detokenized. An empty prompt (`""`, whitespace, NUL and
    other control characters: no token) is continued from `[START]` alone,
    an unconditional sample, with status `empty_input`; a prompt that is
    not UTF-8 gets the completion `""` and status `invalid_utf8` (see
    `keras_attention.tasks.serving_status`; `predict_with_status`).

    Args:
        backbone: a `keras_attention.models.GPTCausalLM`.
        preprocessor: a `pipelines.causal_lm.CausalLMPreprocessor` with the
            model's vocabulary.
        max_length: positive int, the most tokens of a generation (prompt
            included; the KV cache size). Defaults to the preprocessor's
            `sequence_length`; at most the model's positions.
        max_new_tokens: positive int below `max_length`, the default number
            of new tokens (a prompt keeps its last `max_length -
            max_new_tokens` tokens). Defaults to `32`, or `max_length // 2`
            when that is fewer.
        sampler: `"greedy"` or `"sample"`, the default sampler. Defaults to
            `"greedy"`.
        temperature, top_k, top_p: the default sampling options (`1.0`, `0`:
            all tokens, `1.0`: all tokens).

    Example:

    >>> from pipelines.causal_lm import CausalLMPreprocessor
    >>> from pipelines.text import TextTokenizer
    >>> words = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "the", "cat", "sat", "."]
    >>> task = CausalLM(gpt_causal_lm(len(words), num_layers=1, hidden_dim=8, num_heads=2,
    ...                               intermediate_dim=16, max_sequence_length=16),
    ...                 CausalLMPreprocessor(TextTokenizer(words), 16), max_new_tokens=4)
    >>> completions = task.generate(["the cat", ""])  # untrained: any words
    >>> len(completions), all(isinstance(c, str) for c in completions)
    (2, True)
    >>> sorted(task.score(["the cat sat ."])[0])
    ['log_likelihood', 'log_probs', 'perplexity', 'tokens']
    """

    task_name = "causal-lm"
    train_summary = (
        "Train a GPT causal language model on plain text (one paragraph per line; WikiText "
        "headings understood)."
    )
    preprocessor_class = pipeline.CausalLMPreprocessor
    config_class = CausalLMConfig
    data_class = TextData
    serving_outputs = {
        "serving_default": ("completion", "status", "truncated"),
        "generate": ("completion", "status", "truncated"),
        "score": (
            "log_likelihood", "num_tokens", "perplexity", "status", "token_log_probs", "tokens",
        ),
    }  # fmt: skip
    prediction_output = "completion"

    def __init__(self, backbone, preprocessor, max_length=None, max_new_tokens=None,
                 sampler="greedy", temperature=1.0, top_k=0, top_p=1.0):  # fmt: skip
        if not isinstance(backbone, GPTCausalLM):
            raise ValueError(
                f"{_NAME}: `backbone` must be a keras_attention.models.GPTCausalLM. "
                f"Received: backbone={describe(backbone)}"
            )
        _check_preprocessor(backbone, preprocessor)
        super().__init__(backbone, preprocessor)
        if max_length is None:
            max_length = min(preprocessor.sequence_length, backbone.max_sequence_length)
        self.max_length = backbone.cache_length(max_length, owner=_NAME)
        if self.max_length < 2:
            raise ValueError(f"{_NAME}: `max_length` must be at least 2. Received: {max_length}")
        if max_new_tokens is None:  # half the positions at most: the other half keeps the prompt
            max_new_tokens = min(DEFAULT_NEW_TOKENS, self.max_length // 2)
        self.max_new_tokens = positive_int(_NAME, "max_new_tokens", max_new_tokens)
        if self.max_new_tokens >= self.max_length:
            raise ValueError(
                f"{_NAME}: `max_new_tokens` must leave room for the prompt's start token in the "
                f"{self.max_length} positions of `max_length`: at most {self.max_length - 1}. "
                f"Received: max_new_tokens={max_new_tokens}"
            )
        self.sampler = one_of(_NAME, "sampler", sampler, SERVED_SAMPLERS)
        self.temperature = number(_NAME, "temperature", temperature, low=0.0,
                                  what="a non-negative float")  # fmt: skip
        self.top_k = int32_option(_NAME, "top_k", top_k, minimum=0)
        self.top_p = number(_NAME, "top_p", top_p, low=0.0, high=1.0, low_open=True,
                            what="a float in (0, 1]")  # fmt: skip
        self.training_options = None  # the CausalLMConfig of a task built for training
        self.never_generated_ids = (preprocessor.pad_id, preprocessor.start_id, MASK_ID)
        self._vocabulary = tf.constant(preprocessor.tokenizer.vocabulary)
        text = tf.TensorSpec([None], tf.string, name="prompt")
        self.serve_generate = tf.function(self._serve_generate, input_signature=[
            text,
            tf.TensorSpec([], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int32, name="seed"),
        ])  # fmt: skip
        self.serve = tf.function(self._serve_default, input_signature=[text])
        self.serve_score = tf.function(
            self._serve_score, input_signature=[tf.TensorSpec([None], tf.string, name="text")]
        )
        self._beam_functions = {}
        self._step_function = None

    # -- public API -----------------------------------------------------------------------------

    def generate(self, prompts, max_new_tokens=None, sampler=None, temperature=None, top_k=None,
                 top_p=None, seed=None, beam_width=4, length_penalty=0.6):  # fmt: skip
        """Continues each prompt; the new text only, one string per prompt.

        Args:
            prompts: a list of strings (or a `tf.string` vector).
            max_new_tokens: positive int, at most `max_length - 1`. Defaults
                to the task's.
            sampler: `"greedy"`, `"sample"` or `"beam"`. Defaults to the
                task's.
            temperature, top_k, top_p: sampling options (defaults: the
                task's).
            seed: int, makes sampling reproducible (`None`: a new draw).
            beam_width, length_penalty: for `"beam"`.

        Returns:
            A list of `str`, the completions (without the prompts).
        """
        prompts = text_batch(prompts, owner=f"{_NAME}.generate")
        if not prompts:
            return []
        options = self._generation_options(max_new_tokens, sampler, temperature, top_k, top_p,
                                           seed)  # fmt: skip
        if options["sampler"] == "beam":
            outputs = self._beam_function(beam_width, length_penalty)(
                tf.constant(prompts), options["max_new_tokens"]
            )
        else:
            outputs = self.serve_generate(tf.constant(prompts), *_signature_arguments(options))
        return [c.decode("utf-8") for c in outputs["completion"].numpy()]

    def stream(self, prompt, max_new_tokens=None, sampler=None, temperature=None, top_k=None,
               top_p=None, seed=None):  # fmt: skip
        """Yields the continuation of one prompt piece by piece, as the tokens come.

        The tokens are those `generate([prompt])` gives for the same options
        and seed (the same prompt framing, the same per-step draws; a
        sampled row of a larger batch draws differently, as the draws cover
        the batch); each yielded string is the text the new token adds. Not
        with `"beam"`.
        """
        (prompt,) = text_batch([prompt], owner=f"{_NAME}.stream")
        options = self._generation_options(max_new_tokens, sampler, temperature, top_k, top_p,
                                           seed)  # fmt: skip
        if options["sampler"] == "beam":
            raise ValueError(
                f"{_NAME}.stream: beam search picks its tokens at the end; stream with "
                "`greedy` or `sample`. Received: sampler='beam'"
            )
        yield from stream_tokens(self, prompt, options)

    def score(self, texts):
        """The log-probability of every token of each text (`[START] text [END]`), and perplexity.

        Returns:
            One dict per text: `"tokens"` (the scored word pieces, `[END]`
            last), `"log_probs"` (each one's natural-log probability given
            the tokens before it), `"log_likelihood"` (their sum) and
            `"perplexity"` (`exp(-log_likelihood / len(tokens))`). Text past
            `sequence_length - 1` tokens is cut.
        """
        texts = text_batch(texts, owner=f"{_NAME}.score")
        if not texts:
            return []
        out = {key: value.numpy() for key, value in self.serve_score(tf.constant(texts)).items()}
        results = []
        for row in range(len(texts)):
            count = int(out["num_tokens"][row])
            results.append({
                "tokens": [t.decode("utf-8") for t in out["tokens"][row, :count]],
                "log_probs": [float(x) for x in out["token_log_probs"][row, :count]],
                "log_likelihood": float(out["log_likelihood"][row]),
                "perplexity": float(out["perplexity"][row]),
            })  # fmt: skip
        return results

    def predict(self, prompts):
        """The completions of `generate` with the task's options."""
        return self.generate(prompts)

    def predict_with_status(self, prompts, seed=None):
        """`predict` with each prompt's `status` (`keras_attention.tasks.serving_status`).

        Returns `{"outputs": [str], "status": [str]}`: `"ok"`, `"truncated"` (the
        prompt lost tokens), `"empty_input"` (continued from `[START]`) or
        `"invalid_utf8"` (completion `""`), as the `status` of the exported signatures.
        """
        prompts = text_batch(prompts, owner=f"{_NAME}.predict_with_status")
        if not prompts:
            return {"outputs": [], "status": []}
        options = self._generation_options(seed=seed)
        if options["sampler"] == "beam":
            outputs = self._beam_function(4, 0.6)(tf.constant(prompts), options["max_new_tokens"])
        else:
            outputs = self.serve_generate(tf.constant(prompts), *_signature_arguments(options))
        return {
            "outputs": [c.decode("utf-8") for c in outputs["completion"].numpy()],
            "status": decode_statuses(outputs["status"]),
        }

    def __call__(self, prompts, **kwargs):
        return self.generate(prompts, **kwargs)

    @staticmethod
    def serving_input(inputs):
        """What the `serving_default` signature takes: a `tf.string` batch of prompts."""
        return tf.constant(list(inputs), tf.string, shape=[len(inputs)])

    def get_config(self):
        return {
            "max_length": self.max_length,
            "max_new_tokens": self.max_new_tokens,
            "sampler": self.sampler,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }

    def serving_signatures(self):
        """`serving_default` (prompts, the task's options), `generate` (every option), `score`.

        - `serving_default`: `prompt` `tf.string (B,)` -> `completion`
          `tf.string (B,)`, `truncated` `bool (B,)` (the prompt was cut),
          `status` `tf.string (B,)` (`keras_attention.tasks.serving_status`:
          `ok`, `truncated`, `empty_input`: continued from `[START]`,
          `invalid_utf8`: completion `""`).
        - `generate`: `prompt` plus scalars `max_new_tokens` int32,
          `temperature` float32 (`0`: greedy), `top_k` int32 (`0`: all),
          `top_p` float32 (`1`: all), `seed` int32 -> the same outputs.
          Out-of-range values are not errors in a served graph; they are
          read as: `max_new_tokens` clipped to `[1, max_length - 1]` (a
          prompt keeps its last `max_length - max_new_tokens` tokens,
          `truncated` says when it lost some); `temperature <= 0` (or NaN)
          greedy; `top_k <= 0` all tokens; `top_p` outside `(0, 1)` (or
          NaN) all tokens.
        - `score`: `text` `tf.string (B,)` -> `token_log_probs` float32
          `(B, T)` and `tokens` `tf.string (B, T)` (`0` / `""` past a row's
          tokens), `num_tokens` int32, `log_likelihood` and `perplexity`
          float32 `(B,)`, `status` `tf.string (B,)` (`truncated`: the text
          was cut; `invalid_utf8`: no tokens, `0` scores, perplexity `1`;
          `empty_input`: `[END]` alone is scored).
        """
        prompt = tf.TensorSpec([None], tf.string)
        return {
            "serving_default": (self.serve, {"prompt": prompt}),
            "generate": (self.serve_generate, {
                "prompt": prompt,
                "max_new_tokens": tf.TensorSpec([], tf.int32),
                "temperature": tf.TensorSpec([], tf.float32),
                "top_k": tf.TensorSpec([], tf.int32),
                "top_p": tf.TensorSpec([], tf.float32),
                "seed": tf.TensorSpec([], tf.int32),
            }),
            "score": (self.serve_score, {"text": tf.TensorSpec([None], tf.string)}),
        }  # fmt: skip

    def evaluate(self, data, batch_size=32, limit=None):
        """Perplexity on held-out text: per word piece and per word.

        The corpus is packed into windows of `sequence_length` as in
        training; every token but the first is predicted from the tokens
        before it in its window.

        Returns:
            A dict: `"tokens"` (predictions scored), `"words"`
            (`pipelines.causal_lm.count_words`), `"loss"` (mean negative
            log-likelihood per token, nats), `"perplexity"` (`exp(loss)`) and
            `"word_perplexity"` (`exp(total NLL / words)`), comparable across
            tokenizers.
        """
        documents = self.read_data(data)
        batch_size = positive_int(f"{_NAME}.evaluate", "batch_size", batch_size)
        dataset = self.make_dataset(documents, batch_size=batch_size)
        if limit is not None:
            limit = positive_int(f"{_NAME}.evaluate", "limit", limit)
            dataset = dataset.unbatch().take(limit).batch(batch_size)
        total, count = 0.0, 0.0
        for inputs, labels, weights in dataset:
            log_probs = tf.nn.log_softmax(self.backbone(inputs, training=False))
            picked = tf.gather(log_probs, labels, batch_dims=2)
            total -= float(tf.reduce_sum(picked * weights))
            count += float(tf.reduce_sum(weights))
        words = pipeline.count_words(documents) if limit is None else None
        loss = total / max(count, 1.0)
        return {
            "tokens": int(count),
            "words": words,
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "word_perplexity": (
                math.exp(min(total / words, 700.0)) if words else None
            ),
        }

    def summarize(self, result, split="validation"):
        line = (f"{split}: {result['tokens']} tokens: perplexity {result['perplexity']:.2f} per "
                "word piece")  # fmt: skip
        if result.get("word_perplexity") is not None:
            line += f", {result['word_perplexity']:.2f} per word ({result['words']} words)"
        return [line]

    # -- the training hooks ---------------------------------------------------------------------

    # A corpus: `pipelines.masked_lm.read_corpus` (documents, each a list of paragraphs).
    read_data = classmethod(MaskedLM.read_data.__func__)

    @classmethod
    def build_preprocessor(cls, config, data, assets_dir):
        """Learns the WordPiece vocabulary into `assets_dir`."""
        path = os.path.join(assets_dir, VOCABULARY)
        build_wordpiece_vocab(
            (paragraph for document in data for paragraph in document), path,
            config.vocabulary_size, lowercase=config.lowercase,
        )  # fmt: skip
        return pipeline.CausalLMPreprocessor(path, config.sequence_length)

    @classmethod
    def load_preprocessor(cls, config, assets_dir):
        return pipeline.CausalLMPreprocessor.from_assets(
            assets_dir, sequence_length=config.sequence_length
        )

    @classmethod
    def build(cls, config, preprocessor):
        """A new (untrained) causal LM for a `CausalLMConfig`."""
        model = gpt_causal_lm(preprocessor.tokenizer.vocabulary_size, **config.backbone_options())
        task = cls(model, preprocessor, **config.generation_options())
        task.training_options = config
        return task

    def make_dataset(self, data, batch_size=32, shuffle=False, seed=None):
        """Packed next-token windows of a corpus (`pipelines.causal_lm.make_dataset`)."""
        return pipeline.make_dataset(
            data, self.preprocessor, batch_size=batch_size, shuffle=shuffle,
            seed=0 if seed is None else seed,
        )  # fmt: skip

    def loss(self, config=None):
        """The cross-entropy of every next token."""
        return masked_loss(0.0)

    def metrics(self, config=None):
        """The next-token accuracy."""
        return [MaskedTokenAccuracy()]

    # -- the traced functions -------------------------------------------------------------------

    def _serve_default(self, prompt):
        temperature = 0.0 if self.sampler == "greedy" else self.temperature
        seed = tf.random.uniform([], -(2**31), 2**31 - 1, tf.int32)  # a new draw per request
        return self._serve_generate(
            prompt, tf.constant(self.max_new_tokens), tf.constant(temperature, tf.float32),
            tf.constant(self.top_k), tf.constant(self.top_p, tf.float32), seed,
        )  # fmt: skip

    def _serve_generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed):
        max_new_tokens = tf.clip_by_value(max_new_tokens, 1, self.max_length - 1)
        token_ids, padding_mask, truncated, status = self._prompts(prompt, max_new_tokens)
        tokens = generate_ids(
            self.backbone, token_ids, padding_mask, self.max_length, "sample",
            max_new_tokens=max_new_tokens, stop_token_ids=(self.preprocessor.end_id,),
            suppress_token_ids=self.never_generated_ids, pad_id=self.preprocessor.pad_id,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        )  # fmt: skip
        return self._answer(tokens, padding_mask, truncated, status)

    def _answer(self, tokens, padding_mask, truncated, status):
        """The outputs of `generate`: the completion (`""` for undecodable prompts) and status."""
        completion = self._completion(tokens, padding_mask)
        completion = tf.where(tf.equal(status, INVALID_UTF8), "", completion)
        return {"completion": completion, "truncated": truncated, "status": status}

    def _prompts(self, prompt, max_new_tokens):
        """Prompts -> left-aligned ids and mask keeping room for `max_new_tokens`, `truncated`, status.

        An undecodable prompt is framed as `""` (never tokenized).
        """
        prompt, valid = sanitize(prompt)
        inputs = self.preprocessor.preprocess_prompts(prompt, self.max_length - 1)
        budget = self.max_length - max_new_tokens  # >= 1: [START] at least
        token_ids, padding_mask, cut = keep_last(inputs["token_ids"], inputs["padding_mask"],
                                                 budget)  # fmt: skip
        truncated = tf.logical_or(inputs["truncated"], cut)
        counts = self.preprocessor.tokenizer.tokenize(prompt).row_lengths()
        return token_ids, padding_mask, truncated, input_status(valid, counts, truncated=truncated)

    def _completion(self, tokens, padding_mask):
        """Generated ids `(B, L)` -> the text after each prompt."""
        lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)
        new = tf.range(tf.shape(tokens)[1])[None, :] >= lengths[:, None]
        return self.preprocessor.detokenize(tf.where(new, tokens, self.preprocessor.pad_id))

    def _serve_score(self, text):
        text, valid_text = sanitize(text)
        counts = self.preprocessor.tokenizer.tokenize(text).row_lengths()
        status = input_status(valid_text, counts, self.preprocessor.sequence_length - 1)
        inputs = self.preprocessor.preprocess_texts(text)
        token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
        width = tf.maximum(tf.reduce_max(tf.concat(
            [tf.reduce_sum(tf.cast(mask, tf.int32), axis=1), [2]], 0)), 2)  # fmt: skip
        token_ids, mask = token_ids[:, :width], mask[:, :width]
        logits = self.backbone(
            {"token_ids": token_ids[:, :-1], "padding_mask": tf.cast(mask[:, :-1], tf.int32)},
            training=False,
        )
        targets, valid = token_ids[:, 1:], mask[:, 1:] & valid_text[:, None]
        picked = tf.gather(tf.nn.log_softmax(logits), targets, batch_dims=2)
        token_log_probs = tf.where(valid, picked, 0.0)
        num_tokens = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
        log_likelihood = tf.reduce_sum(token_log_probs, axis=1)
        mean = -log_likelihood / tf.cast(tf.maximum(num_tokens, 1), tf.float32)
        return {
            "token_log_probs": token_log_probs,
            "tokens": tf.where(valid, tf.gather(self._vocabulary, targets), ""),
            "num_tokens": num_tokens,
            "log_likelihood": log_likelihood,
            "perplexity": tf.exp(mean),
            "status": status,
        }

    def _beam_function(self, beam_width, length_penalty):
        key = (positive_int(f"{_NAME}.generate", "beam_width", beam_width),
               number(f"{_NAME}.generate", "length_penalty", length_penalty, low=0.0,
                      what="a non-negative float"))  # fmt: skip
        if key not in self._beam_functions:

            def run(prompt, max_new_tokens):
                max_new_tokens = tf.clip_by_value(max_new_tokens, 1, self.max_length - 1)
                token_ids, padding_mask, truncated, status = self._prompts(prompt, max_new_tokens)
                tokens = generate_ids(
                    self.backbone, token_ids, padding_mask, self.max_length, "beam",
                    max_new_tokens=max_new_tokens, stop_token_ids=(self.preprocessor.end_id,),
                    suppress_token_ids=self.never_generated_ids,
                    pad_id=self.preprocessor.pad_id, beam_width=key[0], length_penalty=key[1],
                )  # fmt: skip
                return self._answer(tokens, padding_mask, truncated, status)

            self._beam_functions[key] = tf.function(run, input_signature=[
                tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])  # fmt: skip
        return self._beam_functions[key]

    def _generation_options(self, max_new_tokens=None, sampler=None, temperature=None,
                            top_k=None, top_p=None, seed=None):  # fmt: skip
        owner = f"{_NAME}.generate"
        options = {
            "max_new_tokens": positive_int(owner, "max_new_tokens",
                                           self.max_new_tokens if max_new_tokens is None
                                           else max_new_tokens),
            "sampler": one_of(owner, "sampler", self.sampler if sampler is None else sampler,
                              SAMPLERS),
            "temperature": number(owner, "temperature", self.temperature if temperature is None
                                  else temperature, low=0.0, what="a non-negative float"),
            "top_k": int32_option(owner, "top_k", self.top_k if top_k is None else top_k,
                                  minimum=0),
            "top_p": number(owner, "top_p", self.top_p if top_p is None else top_p, low=0.0,
                            high=1.0, low_open=True, what="a float in (0, 1]"),
            "seed": seed,
        }  # fmt: skip
        if options["max_new_tokens"] >= self.max_length:
            raise ValueError(
                f"{owner}: `max_new_tokens` must leave room for the prompt's start token: at "
                f"most {self.max_length - 1}. Received: max_new_tokens={options['max_new_tokens']}"
            )
        if seed is not None:
            options["seed"] = int32_option(owner, "seed", seed, minimum=-(2**31))
        return options

    # -- on device ------------------------------------------------------------------------------

    def preprocess_for_device(self, prompts):
        """Prompts -> `(token_ids, padding_mask)` NumPy arrays (the host side of the LiteRT loop)."""
        token_ids, padding_mask, _, _ = self._prompts(
            tf.constant(list(prompts), tf.string), tf.constant(self.max_new_tokens)
        )
        return token_ids.numpy(), padding_mask.numpy()

    def device_status(self, prompts, max_new_tokens=None):
        """The `status` of each prompt (list of `str`), as the SavedModel answers it (a prompt
        is `truncated` when it leaves less than `max_new_tokens`, default the task's, room)."""
        budget = self._generation_options(max_new_tokens)["max_new_tokens"]  # checked
        prompts = tf.constant(list(prompts), tf.string, shape=[len(prompts)])
        return decode_statuses(self._prompts(prompts, tf.constant(budget))[3])

    def postprocess_from_device(self, tokens, padding_mask):
        """Generated ids -> completions (the text after each prompt)."""
        completion = self._completion(tf.constant(tokens, tf.int32), tf.constant(padding_mask))
        return [c.decode("utf-8") for c in completion.numpy()]


def keep_last(token_ids, padding_mask, budget):
    """Left-aligned `[START] tokens` rows cut to `budget` tokens: `[START]` and the last ones.

    Args:
        token_ids: int32 `(B, P)`, left-aligned, `[START]` first.
        padding_mask: bool `(B, P)`.
        budget: int32 scalar `>= 1`.

    Returns:
        `(token_ids, padding_mask, cut)`: the rows, still `(B, P)`, and bool
        `(B,)`, whether a row lost tokens.
    """
    lengths = tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=1)  # (B,)
    shift = tf.maximum(lengths - budget, 0)  # tokens dropped after [START]
    width = tf.shape(token_ids)[1]
    positions = tf.range(width)[None, :]
    source = tf.where(positions == 0, 0, positions + shift[:, None])  # (B, P)
    source = tf.minimum(source, width - 1)
    kept = positions < (lengths - shift)[:, None]
    token_ids = tf.where(kept, tf.gather(token_ids, source, batch_dims=1), 0)
    return token_ids, kept, shift > 0


def _signature_arguments(options):
    """The `generate` signature's scalar tensors from `_generation_options`."""
    temperature = 0.0 if options["sampler"] == "greedy" else options["temperature"]
    seed = new_seed() if options["seed"] is None else options["seed"]
    return (
        tf.constant(options["max_new_tokens"], tf.int32),
        tf.constant(temperature, tf.float32),
        tf.constant(options["top_k"], tf.int32),
        tf.constant(options["top_p"], tf.float32),
        tf.constant(seed, tf.int32),
    )


def _check_preprocessor(backbone, preprocessor):
    if not isinstance(preprocessor, pipeline.CausalLMPreprocessor):
        raise ValueError(
            f"{_NAME}: `preprocessor` must be a pipelines.causal_lm.CausalLMPreprocessor. "
            f"Received: preprocessor={preprocessor!r}"
        )
    learned = backbone.backbone.position_embedding is not None
    if learned and preprocessor.sequence_length > backbone.max_sequence_length:
        raise ValueError(
            f"{_NAME}: the preprocessor's sequence_length may not exceed the model's "
            f"max_sequence_length ({backbone.max_sequence_length} learned positions). "
            f"Received: sequence_length={preprocessor.sequence_length}"
        )
    size = preprocessor.tokenizer.vocabulary_size
    if size != backbone.vocabulary_size:
        raise ValueError(
            f"{_NAME}: the vocabulary must have the model's {backbone.vocabulary_size} tokens. "
            f"Received: tokenizer.vocabulary_size={size}"
        )
