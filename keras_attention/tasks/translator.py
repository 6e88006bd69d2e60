"""The translation task: text in, text out, with the tokenizers and the decoding inside."""

import shutil
import warnings

import numpy as np
import tensorflow as tf

from keras_attention.layers import make_score
from keras_attention.layers.multi_head_attention import fast_decoding
from keras_attention.models.encoder_decoder_backbone import EncoderDecoderBackbone
from keras_attention.models.seq2seq_translator import Seq2SeqTranslator
from keras_attention.models.transformer_translator import TransformerTranslator
from keras_attention.models.translator_decoding import TranslatorDecoding
from keras_attention.tasks.decoding import decode, never_generated_ids, never_generated_mask
from keras_attention.tasks.losses import MaskedTokenAccuracy, masked_loss
from keras_attention.tasks.registry import register_task
from keras_attention.tasks.serving_status import answered, decode_statuses, input_status, sanitize
from keras_attention.tasks.task import Task
from keras_attention.tasks.translation_config import TranslationConfig, TranslationData
from keras_attention.utils import boolean, describe, number, positive_int, renamed_argument
from pipelines.text import START_ID, build_wordpiece_vocab, sidecar_path
from pipelines.translation import (
    SOURCE_VOCABULARY,
    TARGET_VOCABULARY,
    TranslationPreprocessor,
    make_dataset,
    read_pairs,
)

_NAME = "Translator"
_DEFAULT_LENGTH = 64
_SOURCE_BUCKET = 16  # `jit_compile`: sources padded to a multiple of this many tokens


@register_task
class Translator(Task):
    """Translates strings with a translator backbone and its two WordPiece tokenizers.

    The whole path runs in one `tf.function` traced for a `tf.string`
    `(batch_size,)` input, the same function `translate`,
    `translate_with_attention` and `keras_attention.export.export_translator`
    use, so the in-memory and the exported translations cannot diverge:

    1. tokenize, truncate and pad with the `TranslationPreprocessor` (no
       `[START]`/`[END]`, as `pipelines.translation.make_dataset` frames
       sources for training; a source longer than `source_sequence_length`
       tokens keeps its first `source_sequence_length` tokens, status
       `truncated`); an input without tokens (`""`, whitespace, NUL and
       other control characters: status `empty_input`) or with bytes that
       are not UTF-8 (status `invalid_utf8`, never tokenized) is translated
       as `""`, never as a made-up sentence (see
       `keras_attention.tasks.serving_status`);
    2. encode, then generate at most `max_length` tokens from `[START]` until
       `[END]`: `greedy_search` when `beam_width == 1`, else `beam_search`
       with GNMT's `length_penalty` (`[PAD]` and `[START]` are never
       generated);
    3. detokenize with the target tokenizer (cut at `[END]`).

    Give either the two tokenizers (and the lengths) or a `preprocessor`.

    Args:
        backbone: a `Seq2SeqTranslator` or `TransformerTranslator` (built by
            `seq2seq_translator` / `transformer_translator`), trained on ids
            from the tokenizers. (`model` is its other name, as an attribute.)
        source_tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        target_tokenizer: the same for the target language; its vocabulary
            size must equal the model's target vocabulary size.
        source_sequence_length: positive int, the most source tokens kept (at
            most the model's source positions: a Transformer's
            `sequence_length`, a `LocationAttention`'s `max_length`).
            Defaults to the preprocessor's, else the model's source
            positions, else `64`. (`max_source_length` is its deprecated
            name.)
        max_length: positive int, the most target tokens generated, `[END]`
            included (at most the Transformer's `sequence_length`). Defaults
            to the preprocessor's `target_sequence_length`, else `64` (at most
            the Transformer's `sequence_length`).
            (`max_output_length` is its deprecated name.)
        beam_width: positive int; `1` is greedy search. Defaults to `1`.
        length_penalty: non-negative float, GNMT's `alpha` for beam search.
            Defaults to `0.6`.
        jit_compile: bool, run step 2 (encode and decode) compiled with XLA.
            On a CPU that makes one sentence 4-6x faster with greedy search and
            3-3.5x with beam search (README, "Multi30K": the served
            Transformer). XLA compiles once per shape, so the
            sources are padded to a multiple of 16 tokens and the batch to
            a power of two (with copies of its first row, whose answers are
            dropped): the first call of each shape takes a few seconds. The
            tokens are those of `jit_compile=False` up to float rounding
            (a test checks the translations in float32; a model computing in
            bfloat16 rounds differently under XLA, and beam search may then
            order near-ties differently: 4 of 62 sentences of the README's
            bfloat16 Multi30K model). An exported translator keeps it
            inside its SavedModel: TF Serving runs it when started with
            `--xla_cpu_compilation_enabled=true`; a Python process loading
            the export needs nothing more. XLA drops the layers' run-time
            checks (the decoding builds valid inputs). Defaults to `False`.
        preprocessor: a `pipelines.translation.TranslationPreprocessor`,
            instead of the tokenizers and `source_sequence_length`.

    Attributes:
        backbone (also `model`), preprocessor, source_tokenizer,
        target_tokenizer, source_sequence_length, max_length, beam_width,
        length_penalty, jit_compile; `decoding`, a `TranslatorDecoding` of the backbone;
        `serve` and `serve_attention`, the traced functions of the
        `serving_default` and `attention` signatures.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> from keras_attention.models import seq2seq_translator
    >>> vocabulary = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", "march",
    ...               "3", "2021", "0", "##3"]
    >>> tokenizer = TextTokenizer(vocabulary, lowercase=True)
    >>> model = seq2seq_translator(len(vocabulary), len(vocabulary), embedding_dim=4, units=4)
    >>> translator = Translator(model, tokenizer, tokenizer, max_length=8)
    >>> outputs = translator.translate(["March 3, 2021", ""])  # untrained: some ISO-like noise
    >>> len(outputs), all(isinstance(t, str) for t in outputs)
    (2, True)
    """

    task_name = "translation"
    train_summary = (
        "Train an attention translator (RNN or Transformer) on sentence pairs: aligned text "
        "files or a TSV."
    )
    preprocessor_class = TranslationPreprocessor
    config_class = TranslationConfig
    data_class = TranslationData
    # The outputs of the exported signatures (how `ServedTask` recognises a translator export).
    serving_outputs = {
        "serving_default": ("status", "translation"),
        "attention": ("attention", "source_tokens", "status", "target_tokens", "translation"),
    }

    def __init__(
        self,
        backbone,
        source_tokenizer=None,
        target_tokenizer=None,
        source_sequence_length=None,
        max_length=None,
        beam_width=1,
        length_penalty=0.6,
        *,
        jit_compile=False,
        preprocessor=None,
        **kwargs,
    ):
        source_sequence_length = renamed_argument(
            _NAME, kwargs, "max_source_length", "source_sequence_length", source_sequence_length
        )
        max_length = renamed_argument(_NAME, kwargs, "max_output_length", "max_length", max_length)
        if kwargs:
            raise TypeError(f"{_NAME}() got unexpected arguments {sorted(kwargs)}")
        backbone = _check_backbone(backbone)
        preprocessor = _make_preprocessor(
            preprocessor, source_tokenizer, target_tokenizer, source_sequence_length, max_length,
            backbone.source_sequence_length,
        )  # fmt: skip
        if preprocessor.source_sequence_length is None and backbone.source_sequence_length:
            # An unbounded preprocessor: truncate to the positions the model has.
            preprocessor = TranslationPreprocessor(
                preprocessor.source_tokenizer,
                preprocessor.target_tokenizer,
                backbone.source_sequence_length,
                preprocessor.target_sequence_length,
            )
        super().__init__(backbone, preprocessor)
        if max_length is None:
            max_length = min(
                preprocessor.target_sequence_length or _DEFAULT_LENGTH,
                backbone.target_sequence_length or _DEFAULT_LENGTH,
            )
        self.max_length = positive_int(_NAME, "max_length", max_length)
        self.beam_width = positive_int(_NAME, "beam_width", beam_width)
        self.length_penalty = number(
            _NAME, "length_penalty", length_penalty, low=0.0, what="a non-negative float"
        )
        self.jit_compile = boolean(_NAME, "jit_compile", jit_compile)
        self._check_sizes()
        self._compiled_decode = tf.function(self._encode_and_decode_fast, jit_compile=True)
        self.decoding = TranslatorDecoding(self.backbone, self._cache_length)
        # Padding and the start token are never generated (an undertrained model may favour them).
        self.never_generated_ids = never_generated_ids(self.target_tokenizer.vocabulary)
        self._never_generated = never_generated_mask(self.target_tokenizer.vocabulary)
        self._source_vocabulary = tf.constant(self.source_tokenizer.vocabulary)
        self._target_vocabulary = tf.constant(self.target_tokenizer.vocabulary)
        text_spec = tf.TensorSpec([None], tf.string, name="text")
        self.serve = tf.function(self._serve, input_signature=[text_spec])
        self.serve_attention = tf.function(self._serve_attention, input_signature=[text_spec])

    # -- attributes -----------------------------------------------------------------------------

    @property
    def export_name(self):
        """The default model name of the SavedModel export: `"translator"`."""
        return "translator"

    @property
    def model(self):
        """The backbone (the name this attribute had before tasks)."""
        return self.backbone

    @property
    def source_tokenizer(self):
        return self.preprocessor.source_tokenizer

    @property
    def target_tokenizer(self):
        return self.preprocessor.target_tokenizer

    @property
    def source_sequence_length(self):
        return self.preprocessor.source_sequence_length

    @property
    def max_source_length(self):
        """Deprecated name of `source_sequence_length`."""
        return self.source_sequence_length

    @property
    def max_output_length(self):
        """Deprecated name of `max_length`."""
        return self.max_length

    @property
    def _cache_length(self):
        """The KV cache size: `max_length` for a Transformer, nothing for an RNN."""
        return None if self.backbone.target_sequence_length is None else self.max_length

    # -- public API -----------------------------------------------------------------------------

    def translate(self, texts):
        """Translates a batch of sentences.

        Args:
            texts: a list of `str`, or a `(batch_size,)` `tf.string` tensor.

        Returns:
            A list of `str`, one translation per input.
        """
        texts = _check_texts(texts)
        if texts.shape[0] == 0:
            return []
        return [_decode(t) for t in self.serve(texts)["translation"].numpy()]

    def translate_with_attention(self, texts):
        """Translates a batch and returns the cross-attention of every translation.

        The attention is recomputed by teacher-forcing the decoded tokens
        through the model (`backbone.alignment`): for a `Seq2SeqTranslator`
        the decoder's attention weights, for a `TransformerTranslator` the
        mean over heads of the cross-attention of the last decoder block. Row
        `t` is the attention while target token `t` was produced.

        Args:
            texts: a list of `str`, or a `(batch_size,)` `tf.string` tensor.

        Returns:
            A dict with `"translations"` (list of `str`), `"source_tokens"`
            (list of lists of `S_i` word pieces, after truncation),
            `"target_tokens"` (list of lists of the `T_i` generated word
            pieces, `"[END]"` included when generated) and `"attention"`
            (list of float32 arrays `(T_i, S_i)`; each row sums to 1 over the
            source, or is all zeros for an empty source), and `"status"` (as
            `translate_with_status` gives it).
        """
        texts = _check_texts(texts)
        if texts.shape[0] == 0:
            return {**unpack_attention({}, 0), "status": []}
        outputs = {key: value.numpy() for key, value in self.serve_attention(texts).items()}
        return unpack_attention(outputs, texts.shape[0])

    def translate_with_status(self, texts):
        """`translate`, with the `status` of each input (`keras_attention.tasks.serving_status`).

        Returns:
            A dict with `"outputs"` (list of `str`, the translations; `""` for an
            `empty_input` or `invalid_utf8` input) and `"status"` (list of `str`: `"ok"`,
            `"truncated"`, `"empty_input"` or `"invalid_utf8"`), what the exported
            signatures answer as `translation` and `status`.
        """
        texts = _check_texts(texts)
        if texts.shape[0] == 0:
            return {"outputs": [], "status": []}
        outputs = self.serve(texts)
        return {
            "outputs": [_decode(t) for t in outputs["translation"].numpy()],
            "status": decode_statuses(outputs["status"]),
        }

    def predict(self, texts):
        """`translate` (the name every task answers to)."""
        return self.translate(texts)

    def predict_with_status(self, texts):
        """`translate_with_status` (the name every task answers to)."""
        return self.translate_with_status(texts)

    def predict_with_attention(self, texts):
        """`translate_with_attention`, with the outputs under `"outputs"` as for every task."""
        result = self.translate_with_attention(texts)
        return {"outputs": result["translations"], **result}

    def __call__(self, texts):
        return self.translate(texts)

    def evaluate(self, data, batch_size=64, limit=None):
        """Translates held-out pairs and scores them.

        Args:
            data: pairs in any form `pipelines.translation.read_pairs` reads.
            batch_size: sentences per call. Defaults to `64`.
            limit: optional positive int, score the first `limit` pairs only.

        Returns:
            A dict: `"pairs"` (how many were scored), `"exact_match"` (the
            fraction translated exactly as the target tokenizer writes the
            reference back: its lower-casing, normalization and spacing, so a
            perfect model scores 1; spaces stripped), `"bleu"` (sacrebleu
            corpus BLEU, 13a-tokenized and lower-cased, when sacrebleu is
            installed) and `"samples"` (the first three `(source,
            translation, reference)` triples).
        """
        sources, references = read_pairs(data)
        if limit is not None:
            limit = positive_int(f"{_NAME}.evaluate", "limit", limit)
            sources, references = sources[:limit], references[:limit]
        batch_size = positive_int(f"{_NAME}.evaluate", "batch_size", batch_size)
        translations = []
        for start in range(0, len(sources), batch_size):
            translations += self.translate(sources[start : start + batch_size])
        tokenizer = self.preprocessor.target_tokenizer
        written = [_decode(t) for t in tokenizer.detokenize(tokenizer.tokenize(references)).numpy()]
        result = {"pairs": len(sources), "exact_match": exact_match(translations, written)}
        try:
            import sacrebleu
        except ImportError:  # the `bleu` extra
            pass
        else:
            bleu = sacrebleu.corpus_bleu(translations, [references], tokenize="13a", lowercase=True)
            result["bleu"] = round(bleu.score, 2)
        result["samples"] = list(zip(sources, translations, references, strict=True))[:3]
        return result

    def summarize(self, result, split="validation"):
        """Lines describing an `evaluate` result, for the command line."""
        lines = [
            f"{split} exact match: {result['exact_match']:.2%} of {result['pairs']} pairs"
            + (f", BLEU {result['bleu']:.2f}" if "bleu" in result else "")
        ]
        lines += [f"  {source}  ->  {translation}" for source, translation, _ in result["samples"]]
        return lines

    def get_config(self):
        """The decoding options (the lengths are the preprocessor's, the rest are assets)."""
        return {
            "max_length": self.max_length,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
            "jit_compile": self.jit_compile,
        }

    @staticmethod
    def unpack_attention(outputs, batch_size):
        """The `attention` signature's padded NumPy outputs as `translate_with_attention` gives them."""
        return unpack_attention(outputs, batch_size)

    @staticmethod
    def serving_input(texts):
        """What the exported signatures take for `texts`: a `tf.string` batch."""
        return tf.constant(list(texts), tf.string, shape=[len(texts)])

    @staticmethod
    def write_attention_png(result, row, label, path):
        """Writes the alignment heat map of `result` row `row` to `path` (`None`: nothing to plot)."""
        from keras_attention.visualize import plot_attention

        weights = result["attention"][row]
        if weights.size == 0:
            return None
        plot_attention(
            weights,
            source_tokens=result["source_tokens"][row],
            target_tokens=result["target_tokens"][row],
            path=path,
            title=f"{label!r} -> {result['outputs'][row]!r}",
        )
        return path

    def preprocess_for_device(self, texts):
        """`(source ids (B, S), answered (B,))`: the `.tflite` file's `encode` input.

        Rows that are not `answered` (`empty_input`, `invalid_utf8`) get the translation `""`,
        as the SavedModel answers.
        """
        text, status = self._source_status(self.serving_input(texts))
        _, source_ids = self.preprocessor.generate_preprocess(text)
        return source_ids.numpy(), answered(status).numpy()

    def device_status(self, texts):
        """The `status` of each text (list of `str`), as the SavedModel answers it."""
        return decode_statuses(self._source_status(self.serving_input(texts))[1])

    def postprocess_from_device(self, token_ids):
        """Generated ids `(B, L)` -> translations."""
        return [_decode(t) for t in self.preprocessor.generate_postprocess(token_ids).numpy()]

    def write_vocabularies(self, directory):
        """Writes `source_vocab.txt`, `target_vocab.txt` and their sidecars; returns the 4 paths."""
        return self.preprocessor.save_assets(directory)

    def serving_signatures(self):
        """`{"serving_default", "attention"}`: `(fn, {"text": tf.string (batch_size,)})` each."""
        text_spec = {"text": tf.TensorSpec([None], tf.string)}
        return {
            "serving_default": (self.serve, text_spec),
            "attention": (self.serve_attention, text_spec),
        }

    def warmup_requests(self):
        """With `jit_compile`: one sentence per padded source length, for TF Serving's warm-up.

        Each is a single sentence (batch 1, the latency case) of 1, 17, 33,
        ... source tokens up to `source_sequence_length`, so a server has
        compiled every source shape of one sentence before its first request
        (about 4 s each on a 2-core CPU). Without `jit_compile` nothing.
        """
        if not self.jit_compile:
            return []
        word = _one_token_word(self.source_tokenizer)
        if word is None:
            return []
        longest = self.source_sequence_length or _DEFAULT_LENGTH
        return [
            ("serving_default", {"text": np.array([" ".join([word] * n)], dtype=object)})
            for n in range(1, longest + 1, _SOURCE_BUCKET)
        ]

    # -- the training hooks (see `Task` and `keras_attention.training.train`) -------------------

    @classmethod
    def read_data(cls, data):
        """Reads and checks sentence pairs: `(sources, targets)`, two lists of `str`."""
        return read_pairs(data)

    @classmethod
    def build_preprocessor(cls, config, data, assets_dir):
        """Learns both WordPiece vocabularies from the training pairs into `assets_dir`.

        With `config.shared_vocabulary` one vocabulary is learned on both sides' sentences
        and written as both files (with their option sidecars).
        """
        if config.shared_vocabulary:
            sides = [(SOURCE_VOCABULARY, [*data[0], *data[1]])]
        else:
            sides = list(zip((SOURCE_VOCABULARY, TARGET_VOCABULARY), data, strict=True))
        for file_name, texts in sides:
            build_wordpiece_vocab(
                texts,
                f"{assets_dir}/{file_name}",
                config.vocabulary_size,
                lowercase=config.lowercase,
            )
        if config.shared_vocabulary:
            for source, target in (
                (SOURCE_VOCABULARY, TARGET_VOCABULARY),
                (sidecar_path(SOURCE_VOCABULARY), sidecar_path(TARGET_VOCABULARY)),
            ):
                shutil.copyfile(f"{assets_dir}/{source}", f"{assets_dir}/{target}")
        return cls.load_preprocessor(config, assets_dir)

    @classmethod
    def load_preprocessor(cls, config, assets_dir):
        """The preprocessor of the vocabularies `build_preprocessor` wrote."""
        return TranslationPreprocessor.from_assets(
            assets_dir,
            source_sequence_length=config.source_sequence_length,
            target_sequence_length=config.target_sequence_length,
        )

    @classmethod
    def build(cls, config, preprocessor):
        """A new (untrained) translator for a `TranslationConfig`."""
        return cls(
            build_backbone(
                config,
                preprocessor.source_tokenizer.vocabulary_size,
                preprocessor.target_tokenizer.vocabulary_size,
            ),
            preprocessor=preprocessor,
            beam_width=config.beam_width,
            length_penalty=config.length_penalty,
            jit_compile=config.decode_jit_compile,
        )

    def make_dataset(self, data, batch_size=64, shuffle=False, seed=None):
        """Teacher-forcing batches of `(sources, targets)`, with a known number of batches.

        One pass fills the (in-memory) cache and counts the batches, so a
        progress bar knows the total; pairs that do not fit the lengths (or
        have a blank side) are dropped, with a warning saying how many, and
        none fitting raises a `ValueError`.
        """
        sources, targets = data
        dataset = make_dataset(
            list(zip(sources, targets, strict=True)),
            self.preprocessor,
            batch_size=batch_size,
            shuffle=min(len(sources), 100_000) if shuffle else None,
            seed=seed if shuffle else None,
            cache=True,
        )
        counts = dataset.reduce(
            (np.int64(0), np.int64(0)),
            lambda count, batch: (count[0] + 1, count[1] + tf.cast(tf.shape(batch[1])[0], tf.int64)),
        )
        batches, kept = int(counts[0]), int(counts[1])
        lengths = self.preprocessor.get_config()
        limits = (
            f"source_sequence_length={lengths['source_sequence_length']} and "
            f"target_sequence_length={lengths['target_sequence_length']} (target tokens + 1)"
        )
        if batches == 0:
            raise ValueError(
                f"no pair fits {limits} among {len(sources)} pairs (pairs with a blank side are "
                "left out too); raise the limits."
            )
        if kept < len(sources):
            warnings.warn(
                f"{len(sources) - kept} of {len(sources)} pairs left out: a blank source or "
                f"target, or longer than {limits}.",
                stacklevel=2,
            )
        return dataset.apply(tf.data.experimental.assert_cardinality(batches))

    def loss(self, config=None):
        """The masked cross-entropy (label-smoothed as `config` says)."""
        return masked_loss(0.0 if config is None else config.label_smoothing)

    def metrics(self, config=None):
        """The masked token accuracy."""
        return [MaskedTokenAccuracy()]

    # -- the traced path ------------------------------------------------------------------------

    def _serve(self, text):
        """`text` `(B,)` -> `{"translation": (B,), "status": (B,)}` (`serving_default`)."""
        _, _, tokens, _, status = self._generate(text)
        return {"translation": self.preprocessor.generate_postprocess(tokens), "status": status}

    def _serve_attention(self, text):
        """`text` `(B,)` -> translation, padded token strings and attention (the `attention` one)."""
        source, source_ids, tokens, lengths, status = self._generate(text)
        batch_size = tf.shape(tokens)[0]
        max_target = tf.reduce_max(tf.concat([lengths, [0]], 0))
        tokens = tokens[:, :max_target]  # (B, T)
        target_mask = tf.sequence_mask(lengths, max_target)  # (B, T)
        # Decoder inputs: [START] then the generated tokens, shifted right, padded after `lengths`.
        start = tf.fill([batch_size, 1], tf.constant(START_ID, tf.int32))
        target_in = tf.concat([start, tokens[:, :-1]], axis=1)
        target_in = tf.where(target_mask, target_in, 0)
        weights = self.backbone.alignment(source_ids, target_in)  # (B, T, S)
        max_source = tf.cast(source.bounding_shape(axis=1), tf.int32)
        weights = tf.cast(weights, tf.float32)[:, :, :max_source]  # (B, T, S)
        source_mask = tf.sequence_mask(source.row_lengths(), max_source)  # (B, S)
        weights = tf.where(target_mask[:, :, None] & source_mask[:, None, :], weights, 0.0)
        source_tokens = tf.gather(self._source_vocabulary, source).to_tensor(default_value="")
        target_tokens = tf.where(target_mask, tf.gather(self._target_vocabulary, tokens), "")
        return {
            "translation": self.preprocessor.generate_postprocess(tokens),
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "attention": weights,
            "status": status,
        }

    def _generate(self, text):
        """Tokenize, truncate, encode, generate.

        Returns `(source, source_ids, tokens, lengths, status)`: the truncated
        source ids (ragged), the same padded `(B, S)`, the generated tokens
        `(B, L)` and their lengths `(B,)` (`[END]` included; all `[PAD]` and
        `0` for an input that gets no answer), and the `status` `(B,)`.
        """
        text, status = self._source_status(text)
        source, source_ids = self.preprocessor.generate_preprocess(text)
        if self.jit_compile:
            tokens, lengths = self._decode_compiled(source_ids)
        else:
            tokens, lengths = self._encode_and_decode(source_ids)
        keep = answered(status)
        tokens = tf.where(keep[:, None], tokens, tf.zeros_like(tokens))  # [PAD]: detokenized ""
        lengths = tf.where(keep, lengths, tf.zeros_like(lengths))
        return source, source_ids, tokens, lengths, status

    def _encode_and_decode(self, source_ids):
        """Source ids `(B, S)` -> `(tokens (B, max_length), lengths (B,))`."""
        state = self.backbone.encode(source_ids, max_length=self._cache_length)
        return decode(
            self.backbone,
            state,
            tf.shape(source_ids)[0],
            self.max_length,
            self.beam_width,
            self.length_penalty,
            self._never_generated,
        )

    def _encode_and_decode_fast(self, source_ids):
        """`_encode_and_decode` with the projection kernels made 2-D once and heads-first caches.

        Under XLA on a CPU a one-token step reads a reshaped kernel 1.7x
        slower than a 2-D one (greedy, batch 1: 22 ms -> 13 ms per sentence);
        see `layers.multi_head_attention.fast_decoding`. Same results.
        """
        with fast_decoding(self.backbone, heads_first=True):
            return self._encode_and_decode(source_ids)

    def _decode_compiled(self, source_ids):
        """`_encode_and_decode` with XLA, on a few padded shapes (see `jit_compile`)."""
        batch_size, length = tf.shape(source_ids)[0], tf.shape(source_ids)[1]

        def run():
            rows = _padded_rows(batch_size)
            columns = _padded_columns(length, self.backbone.source_sequence_length)
            # Extra rows repeat row 0: they end when it ends, never later.
            row_ids = tf.where(tf.range(rows) < batch_size, tf.range(rows), 0)
            padded = tf.pad(tf.gather(source_ids, row_ids), [[0, 0], [0, columns - length]])
            tokens, lengths = self._compiled_decode(padded)
            return tokens[:batch_size], lengths[:batch_size]

        def nothing():  # no row to repeat
            return (
                tf.zeros([0, self.max_length], tf.int32),
                tf.zeros([0], tf.int32),
            )

        return tf.cond(batch_size > 0, run, nothing)

    def _source_status(self, text):
        """`(text, status)`: the sources as the tokenizer gets them, and their `status` `(B,)`."""
        text, valid = sanitize(text)
        counts = self.source_tokenizer.tokenize(text).row_lengths()
        return text, input_status(valid, counts, self.source_sequence_length)

    # -- checks ---------------------------------------------------------------------------------

    def _check_sizes(self):
        backbone = self.backbone
        for arg, value, limit in (
            ("source_sequence_length", self.source_sequence_length, backbone.source_sequence_length),
            ("max_length", self.max_length, backbone.target_sequence_length),
        ):
            if limit is not None and value is not None and value > limit:
                raise ValueError(
                    f"{_NAME}: `{arg}` may not exceed the model's sequence_length "
                    f"({limit} positions). Received: {arg}={value}"
                )
        source_size = self.source_tokenizer.vocabulary_size
        if source_size > backbone.source_vocabulary_size:
            raise ValueError(
                f"{_NAME}: the source vocabulary ({source_size} tokens) is larger than the "
                f"model's source vocabulary ({backbone.source_vocabulary_size}). "
                f"Received: source_tokenizer.vocabulary_size={source_size}"
            )
        target_size = self.target_tokenizer.vocabulary_size
        if target_size != backbone.target_vocabulary_size:
            raise ValueError(
                f"{_NAME}: the target vocabulary must have the model's "
                f"{backbone.target_vocabulary_size} target tokens (the logits). "
                f"Received: target_tokenizer.vocabulary_size={target_size}"
            )


def build_backbone(config, source_vocabulary_size, target_vocabulary_size):
    """The backbone a `TranslationConfig` describes (`make_score` picks the RNN's attention).

    The Transformer's position tables cover
    `max(source_sequence_length, target_sequence_length) + 1` positions;
    `"location"` attention covers `source_sequence_length` source positions.

    Example:

    >>> model = build_backbone(TranslationConfig(score="location", units=8), 30, 20)
    >>> type(model.decoder.score).__name__, model.decoder.score.max_length
    ('LocationAttention', 64)
    """
    dropout = config.resolved_dropout
    if config.model == "transformer":
        return TransformerTranslator(
            source_vocabulary_size,
            target_vocabulary_size,
            sequence_length=max(config.source_sequence_length, config.target_sequence_length) + 1,
            num_layers=config.num_layers,
            hidden_dim=config.hidden_dim,
            num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim,
            dropout=dropout,
            normalize_first=config.normalize_first,
            tie_embeddings=config.tie_embeddings,
        )
    score = config.resolved_score
    if score == "location":  # the one score the decoder cannot size by itself
        score = make_score(score, max_length=config.source_sequence_length, name="attention")
    return Seq2SeqTranslator(
        source_vocabulary_size,
        target_vocabulary_size,
        embedding_dim=config.embedding_dim,
        units=config.units,
        cell=config.cell,
        score=score,
        style=config.style,
        dropout=dropout,
    )


def unpack_attention(outputs, batch_size):
    """The `attention` signature's padded outputs (NumPy) as `translate_with_attention`'s lists."""
    result = {"translations": [], "source_tokens": [], "target_tokens": [], "attention": []}
    for row in range(batch_size):
        source = [_decode(t) for t in outputs["source_tokens"][row] if t]
        target = [_decode(t) for t in outputs["target_tokens"][row] if t]
        result["translations"].append(_decode(outputs["translation"][row]))
        result["source_tokens"].append(source)
        result["target_tokens"].append(target)
        result["attention"].append(
            np.asarray(outputs["attention"][row, : len(target), : len(source)], "float32")
        )
    if "status" in outputs:
        result["status"] = decode_statuses(outputs["status"][:batch_size])
    return result


def _one_token_word(tokenizer):
    """A word of `tokenizer`'s vocabulary that it tokenizes to one token, or `None`."""
    for word in tokenizer.vocabulary[:200]:
        if word.isalpha() and word.isascii() and not word.startswith("["):
            ids = tokenizer.tokenize(tf.constant([f"{word} {word}"])).to_list()[0]
            if len(ids) == 2 and ids[0] == ids[1] and ids[0] > 4:
                return word
    return None


def _padded_rows(batch_size):
    """The next power of two `>= batch_size` (`1` for `0`), a scalar int32 tensor."""
    powers = tf.bitwise.left_shift(1, tf.range(31))  # 1, 2, 4, ..., 2**30
    return tf.reduce_min(tf.where(powers >= batch_size, powers, powers[-1]))


def _padded_columns(length, limit):
    """`length` rounded up to a multiple of `_SOURCE_BUCKET`, at most `limit` (if any)."""
    columns = (length + _SOURCE_BUCKET - 1) // _SOURCE_BUCKET * _SOURCE_BUCKET
    return columns if limit is None else tf.maximum(tf.minimum(columns, limit), length)


def exact_match(predictions, references):
    """The fraction of predictions equal to their reference string (after stripping spaces).

    Example:

    >>> exact_match(["2021-03-03", "1999-05-01 "], ["2021-03-03", "1999-05-02"])
    0.5
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references) or not references:
        raise ValueError(
            "`predictions` and `references` must be non-empty and of the same length. "
            f"Received: {len(predictions)} predictions, {len(references)} references"
        )
    hits = sum(
        _decode(p).strip() == _decode(r).strip()
        for p, r in zip(predictions, references, strict=True)
    )
    return hits / len(references)


# -- helpers ------------------------------------------------------------------------------------


def _make_preprocessor(
    preprocessor, source_tokenizer, target_tokenizer, source_length, max_length, model_limit=None
):
    if preprocessor is not None:
        if source_tokenizer is not None or target_tokenizer is not None:
            raise ValueError(
                f"{_NAME}: give the tokenizers or a `preprocessor`, not both. Received: "
                f"preprocessor={type(preprocessor).__name__}, source_tokenizer="
                f"{type(source_tokenizer).__name__}, target_tokenizer="
                f"{type(target_tokenizer).__name__}"
            )
        if not isinstance(preprocessor, TranslationPreprocessor):
            raise ValueError(
                f"{_NAME}: `preprocessor` must be a pipelines.translation.TranslationPreprocessor. "
                f"Received: preprocessor={preprocessor!r}"
            )
        if source_length is None:
            return preprocessor
        return TranslationPreprocessor(
            preprocessor.source_tokenizer,
            preprocessor.target_tokenizer,
            source_length,
            preprocessor.target_sequence_length,
        )
    if source_tokenizer is None or target_tokenizer is None:
        raise ValueError(
            f"{_NAME}: give `source_tokenizer` and `target_tokenizer`, or a `preprocessor`. "
            f"Received: source_tokenizer={source_tokenizer!r}, "
            f"target_tokenizer={target_tokenizer!r}"
        )
    if source_length is None:  # the model's source positions, if it has a limit
        source_length = model_limit or _DEFAULT_LENGTH
    max_length = _DEFAULT_LENGTH if max_length is None else max_length
    for name, value in (("source_sequence_length", source_length), ("max_length", max_length)):
        positive_int(_NAME, name, value)
    return TranslationPreprocessor(
        source_tokenizer,
        target_tokenizer,
        source_sequence_length=source_length,
        target_sequence_length=max(2, max_length),
    )


def _check_backbone(backbone):
    if not isinstance(backbone, EncoderDecoderBackbone):
        raise ValueError(
            f"{_NAME}: `backbone` must be an encoder-decoder translator model "
            "(`Seq2SeqTranslator` or `TransformerTranslator`, as built by "
            f"`seq2seq_translator` / `transformer_translator`). "
            f"Received: backbone={describe(backbone)}"
        )
    return backbone


def _check_texts(texts):
    if isinstance(texts, str | bytes):
        raise ValueError(
            f"{_NAME}: `texts` must be a list of strings or a 1-D tf.string tensor (wrap one "
            f"sentence in a list). Received: texts={texts!r:.80}"
        )
    if not tf.is_tensor(texts):
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str | bytes):
                raise ValueError(
                    f"{_NAME}: `texts` must hold strings. Received: texts[{i}]={text!r:.80}"
                )
        texts = tf.constant(texts, tf.string, shape=[len(texts)])
    if texts.dtype != tf.string or texts.shape.rank != 1:
        raise ValueError(
            f"{_NAME}: `texts` must be a 1-D tf.string tensor. "
            f"Received: dtype={texts.dtype.name}, shape={texts.shape}"
        )
    return texts


def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
