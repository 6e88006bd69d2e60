"""The translation task wrapper: text in, text out, with the tokenizers and the decoding inside."""

import json
import numbers
import os

import keras
import numpy as np
import tensorflow as tf

from keras_attention.generation import beam_search, greedy_search
from keras_attention.models.translator_decoding import find_layer, translator_decoding

_NAME = "Translator"
_FORMAT = "keras_attention.translator"
_MODEL_FILE = "model.keras"
_OPTIONS_FILE = "translator.json"
_SOURCE_VOCAB = "source_vocab.txt"
_TARGET_VOCAB = "target_vocab.txt"


class Translator(tf.Module):
    """Translates strings with a translator model and its two WordPiece tokenizers.

    The whole path runs in one `tf.function` traced for a `tf.string`
    `(batch_size,)` input, the same function `translate`,
    `translate_with_attention` and `keras_attention.export.export_translator`
    use, so the in-memory and the exported translations cannot diverge:

    1. tokenize with `source_tokenizer` (no `[START]`/`[END]`, as
       `pipelines.translation.make_dataset` frames sources for training);
    2. truncate: a source longer than `max_source_length` tokens keeps its
       first `max_source_length` tokens (training never saw longer sources);
    3. pad with `0` to the longest source of the batch (at least one
       position: the empty string is an all-padding source, which the model
       decodes deterministically like any other input);
    4. encode, then generate at most `max_output_length` tokens from
       `[START]` until `[END]`: `greedy_search` when `beam_width == 1`, else
       `beam_search` with GNMT's `length_penalty` (`[PAD]` and `[START]` are
       never generated);
    5. detokenize with `target_tokenizer` (cut at `[END]`).

    Args:
        model: a translator built by `seq2seq_translator` or
            `transformer_translator` (trained on ids from the two tokenizers).
        source_tokenizer: a `pipelines.text.TextTokenizer`, or the path of a
            vocabulary written by `pipelines.text.build_wordpiece_vocab`.
        target_tokenizer: the same for the target language; its vocabulary
            size must equal the model's target vocabulary size.
        max_source_length: positive int, the most source tokens kept (at most
            the Transformer's `max_length`). Defaults to `64`.
        max_output_length: positive int, the most target tokens generated,
            `[END]` included (at most the Transformer's `max_length`).
            Defaults to `64`.
        beam_width: positive int; `1` is greedy search. Defaults to `1`.
        length_penalty: non-negative float, beam search's GNMT `alpha`.
            Defaults to `0.6`.

    Example:

    >>> from pipelines.text import TextTokenizer
    >>> from keras_attention.models import seq2seq_translator
    >>> vocabulary = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", "march",
    ...               "3", "2021", "0", "##3"]  # usually from pipelines.text.load_tokenizer
    >>> tokenizer = TextTokenizer(vocabulary, lowercase=True)
    >>> model = seq2seq_translator(len(vocabulary), len(vocabulary), embedding_dim=8, units=16)
    >>> # ... model.fit(pipelines.translation.make_dataset(pairs, tokenizer), ...) ...
    >>> translator = Translator(model, tokenizer, tokenizer, max_output_length=12)
    >>> translations = translator.translate(["March 3, 2021", ""])  # untrained: any text
    >>> len(translations), all(isinstance(t, str) for t in translations)
    (2, True)
    >>> result = translator.translate_with_attention(["March 3, 2021"])
    >>> result["source_tokens"][0], result["attention"][0].shape[1]
    (['march', '3', ',', '2021'], 4)

    References:
        - Bahdanau et al., 2015, "Neural Machine Translation by Jointly
          Learning to Align and Translate".
        - Wu et al., 2016, "Google's Neural Machine Translation System"
          (https://arxiv.org/abs/1609.08144) (beam search, length penalty).
    """

    def __init__(
        self,
        model,
        source_tokenizer,
        target_tokenizer,
        max_source_length=64,
        max_output_length=64,
        beam_width=1,
        length_penalty=0.6,
        name=None,
    ):
        super().__init__(name=name)
        from pipelines.text import END_ID, PAD_ID, START_ID, TextTokenizer, load_tokenizer

        if not isinstance(model, keras.Model):
            raise ValueError(f"{_NAME}: `model` must be a keras.Model. Received: model={model!r}")
        tokenizers = {}
        for arg, value in (
            ("source_tokenizer", source_tokenizer),
            ("target_tokenizer", target_tokenizer),
        ):
            if isinstance(value, str | os.PathLike):
                value = load_tokenizer(value)
            if not isinstance(value, TextTokenizer):
                raise ValueError(
                    f"{_NAME}: `{arg}` must be a pipelines.text.TextTokenizer or a vocabulary "
                    f"path. Received: {arg}={value!r}"
                )
            tokenizers[arg] = value
        self.source_tokenizer = tokenizers["source_tokenizer"]
        self.target_tokenizer = tokenizers["target_tokenizer"]
        self.max_source_length = _positive_int("max_source_length", max_source_length)
        self.max_output_length = _positive_int("max_output_length", max_output_length)
        self.beam_width = _positive_int("beam_width", beam_width)
        if (
            isinstance(length_penalty, bool)
            or not isinstance(length_penalty, numbers.Real)
            or not np.isfinite(length_penalty)
            or length_penalty < 0
        ):
            raise ValueError(
                f"{_NAME}: `length_penalty` must be a non-negative float. "
                f"Received: length_penalty={length_penalty!r}"
            )
        self.length_penalty = float(length_penalty)
        self.model = model
        self._start_id, self._end_id = START_ID, END_ID
        self._check_model()
        self.decoding = translator_decoding(
            model, self.max_output_length if self._is_transformer else None
        )
        # Padding and the start token are never generated (an undertrained model may favour them).
        never = np.isin(np.arange(self.target_tokenizer.vocabulary_size), [PAD_ID, START_ID])
        self._never_generated = tf.constant(never)  # (vocabulary_size,)
        self._source_vocabulary = tf.constant(self.source_tokenizer.vocabulary)
        self._target_vocabulary = tf.constant(self.target_tokenizer.vocabulary)
        text_spec = tf.TensorSpec([None], tf.string, name="text")
        self.serve = tf.function(self._serve, input_signature=[text_spec])
        self.serve_attention = tf.function(self._serve_attention, input_signature=[text_spec])

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
        through the model: for a `seq2seq_translator` the decoder's
        attention weights, for a `transformer_translator` the mean over heads
        of the cross-attention of the last decoder block. Row `t` is the
        attention while target token `t` was produced.

        Args:
            texts: a list of `str`, or a `(batch_size,)` `tf.string` tensor.

        Returns:
            A dict with `"translations"` (list of `str`), `"source_tokens"`
            (list of lists of `S_i` word pieces, after truncation),
            `"target_tokens"` (list of lists of the `T_i` generated word
            pieces, `"[END]"` included when generated) and `"attention"`
            (list of float32 arrays `(T_i, S_i)`; each row sums to 1 over the
            source, or is all zeros for an empty source).
        """
        texts = _check_texts(texts)
        result = {"translations": [], "source_tokens": [], "target_tokens": [], "attention": []}
        if texts.shape[0] == 0:
            return result
        outputs = {key: value.numpy() for key, value in self.serve_attention(texts).items()}
        for row in range(texts.shape[0]):
            source = [_decode(t) for t in outputs["source_tokens"][row] if t]
            target = [_decode(t) for t in outputs["target_tokens"][row] if t]
            result["translations"].append(_decode(outputs["translation"][row]))
            result["source_tokens"].append(source)
            result["target_tokens"].append(target)
            result["attention"].append(
                outputs["attention"][row, : len(target), : len(source)].astype("float32")
            )
        return result

    def get_config(self):
        """The options (everything but the model and the tokenizers), as in `translator.json`."""
        return {
            "max_source_length": self.max_source_length,
            "max_output_length": self.max_output_length,
            "beam_width": self.beam_width,
            "length_penalty": self.length_penalty,
        }

    def save(self, directory):
        """Writes the model, both vocabularies and the options into `directory`.

        Files: `model.keras`, `source_vocab.txt` and `target_vocab.txt` with
        their option sidecars (`<vocab>.json`, read by
        `pipelines.text.load_tokenizer`) and `translator.json`. The directory
        is created if needed; existing files of those names are replaced.

        Returns:
            The directory as a string.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        self.model.save(os.path.join(directory, _MODEL_FILE))
        self.write_vocabularies(directory)
        options = {
            "format": _FORMAT,
            "version": 1,
            **self.get_config(),
            "source_compact_punctuation": self.source_tokenizer.compact_punctuation,
            "target_compact_punctuation": self.target_tokenizer.compact_punctuation,
        }
        with open(os.path.join(directory, _OPTIONS_FILE), "w", encoding="utf-8") as f:
            json.dump(options, f, indent=2)
            f.write("\n")
        return directory

    def write_vocabularies(self, directory):
        """Writes `source_vocab.txt`, `target_vocab.txt` and their sidecars; returns the 4 paths."""
        paths = []
        for file_name, tokenizer in (
            (_SOURCE_VOCAB, self.source_tokenizer),
            (_TARGET_VOCAB, self.target_tokenizer),
        ):
            paths += _write_tokenizer(tokenizer, os.path.join(os.fspath(directory), file_name))
        return paths

    @classmethod
    def load(cls, directory):
        """A `Translator` from a directory written by `save`."""
        import keras_attention.layers  # noqa: F401  (registers the layers for deserialization)
        from pipelines.text import load_tokenizer

        directory = os.fspath(directory)
        options_path = os.path.join(directory, _OPTIONS_FILE)
        if not os.path.isfile(options_path):
            raise FileNotFoundError(
                f"{_NAME}.load: no {_OPTIONS_FILE} in '{directory}' (written by "
                f"`Translator.save`). Received: directory={directory!r}"
            )
        with open(options_path, encoding="utf-8") as f:
            options = json.load(f)
        if options.get("format") != _FORMAT:
            raise ValueError(
                f"{_NAME}.load: '{options_path}' is not a translator options file. "
                f"Received: format={options.get('format')!r}"
            )
        model = keras.saving.load_model(os.path.join(directory, _MODEL_FILE), compile=False)
        source_tokenizer = load_tokenizer(
            os.path.join(directory, _SOURCE_VOCAB), options["source_compact_punctuation"]
        )
        target_tokenizer = load_tokenizer(
            os.path.join(directory, _TARGET_VOCAB), options["target_compact_punctuation"]
        )
        return cls(
            model,
            source_tokenizer,
            target_tokenizer,
            max_source_length=options["max_source_length"],
            max_output_length=options["max_output_length"],
            beam_width=options["beam_width"],
            length_penalty=options["length_penalty"],
        )

    # -- the traced path ------------------------------------------------------------------------

    def _serve(self, text):
        """`text` `(B,)` -> `{"translation": (B,)}` (the `serving_default` signature)."""
        _, _, tokens, _ = self._generate(text)
        return {"translation": self.target_tokenizer.detokenize(tokens)}

    def _serve_attention(self, text):
        """`text` `(B,)` -> translation, padded token strings and attention (the `attention` one)."""
        source, source_ids, tokens, lengths = self._generate(text)
        batch_size = tf.shape(tokens)[0]
        max_target = tf.reduce_max(tf.concat([lengths, [0]], 0))
        tokens = tokens[:, :max_target]  # (B, T)
        target_mask = tf.sequence_mask(lengths, max_target)  # (B, T)
        # Decoder inputs: [START] then the generated tokens, shifted right, padded after `lengths`.
        start = tf.fill([batch_size, 1], tf.constant(self._start_id, tf.int32))
        target_in = tf.concat([start, tokens[:, :-1]], axis=1)
        target_in = tf.where(target_mask, target_in, 0)
        weights = self.decoding.cross_attention(source_ids, target_in)
        if isinstance(weights, dict):  # Transformer: (B, heads, T, S) per block; the last, mean
            weights = tf.reduce_mean(weights[f"decoder_block_{len(weights) - 1}"], axis=1)
        max_source = tf.cast(source.bounding_shape(axis=1), tf.int32)
        weights = tf.cast(weights, tf.float32)[:, :, :max_source]  # (B, T, S)
        source_mask = tf.sequence_mask(source.row_lengths(), max_source)  # (B, S)
        weights = tf.where(target_mask[:, :, None] & source_mask[:, None, :], weights, 0.0)
        source_tokens = tf.gather(self._source_vocabulary, source).to_tensor(default_value="")
        target_tokens = tf.where(target_mask, tf.gather(self._target_vocabulary, tokens), "")
        return {
            "translation": self.target_tokenizer.detokenize(tokens),
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "attention": weights,
        }

    def _generate(self, text):
        """Tokenize, truncate, encode, generate.

        Returns `(source, source_ids, tokens, lengths)`: the truncated source
        ids (ragged), the same padded `(B, S)`, the generated tokens `(B, L)`
        and their lengths `(B,)` (`[END]` included).
        """
        source = self.source_tokenizer.tokenize(text)[:, : self.max_source_length]  # ragged
        source_ids = source.to_tensor()  # (B, S), 0-padded
        # At least one position, so a batch of empty strings still has a (fully masked) source.
        missing = tf.maximum(1 - tf.shape(source_ids)[1], 0)
        source_ids = tf.pad(source_ids, [[0, 0], [0, missing]])
        state = self.decoding.encode(source_ids)
        start_ids = tf.fill([tf.shape(source_ids)[0]], tf.constant(self._start_id, tf.int32))

        def step_fn(token_ids, state, step):
            logits, state = self.decoding.step(token_ids, state, step)  # (B, V)
            return tf.where(self._never_generated, logits.dtype.min, logits), state

        kwargs = {
            "step_fn": step_fn,
            "state": state,
            "start_ids": start_ids,
            "end_id": self._end_id,
            "max_length": self.max_output_length,
        }
        if self.beam_width == 1:
            output = greedy_search(**kwargs)
        else:
            output = beam_search(
                **kwargs, beam_width=self.beam_width, length_penalty=self.length_penalty
            )
        return source, source_ids, output.tokens, output.lengths

    # -- checks ---------------------------------------------------------------------------------

    def _check_model(self):
        layer_names = {layer.name for layer in self.model.layers}
        self._is_transformer = "decoder_block_0" in layer_names
        source_embedding = find_layer(self.model, "source_embedding")
        if self._is_transformer:
            source_size = source_embedding.vocabulary_size
            longest = source_embedding.sequence_length
            target_longest = find_layer(self.model, "target_embedding").sequence_length
            for arg, value, limit in (
                ("max_source_length", self.max_source_length, longest),
                ("max_output_length", self.max_output_length, target_longest),
            ):
                if value > limit:
                    raise ValueError(
                        f"{_NAME}: `{arg}` may not exceed the Transformer's max_length "
                        f"({limit} positions). Received: {arg}={value}"
                    )
        else:
            source_size = getattr(source_embedding, "input_dim", None)
        target_size = find_layer(self.model, "logits").units
        if source_size is not None and self.source_tokenizer.vocabulary_size > source_size:
            raise ValueError(
                f"{_NAME}: the source vocabulary ({self.source_tokenizer.vocabulary_size} tokens) "
                f"is larger than the model's source vocabulary ({source_size}). "
                f"Received: source_tokenizer.vocabulary_size="
                f"{self.source_tokenizer.vocabulary_size}"
            )
        if self.target_tokenizer.vocabulary_size != target_size:
            raise ValueError(
                f"{_NAME}: the target vocabulary must have the model's {target_size} target "
                f"tokens (the logits). Received: target_tokenizer.vocabulary_size="
                f"{self.target_tokenizer.vocabulary_size}"
            )


# -- helpers ------------------------------------------------------------------------------------


def _positive_int(arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{_NAME}: `{arg}` must be a positive int. Received: {arg}={value!r}")
    return int(value)


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


def _write_tokenizer(tokenizer, vocab_path):
    """Writes a tokenizer's vocabulary and the sidecar `load_tokenizer` reads; returns both paths."""
    from pipelines.text import RESERVED_TOKENS, SUFFIX_INDICATOR, sidecar_path

    with open(vocab_path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(token + "\n" for token in tokenizer.vocabulary)
    options = {
        "format": "keras_attention.wordpiece",
        "version": 1,
        "lowercase": tokenizer.lowercase,
        "normalization": tokenizer.normalization,
        "strip_accents": tokenizer.strip_accents,
        "suffix_indicator": SUFFIX_INDICATOR,
        "reserved_tokens": list(RESERVED_TOKENS),
        "vocab_size": tokenizer.vocabulary_size,
    }
    with open(sidecar_path(vocab_path), "w", encoding="utf-8") as f:
        json.dump(options, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return [vocab_path, sidecar_path(vocab_path)]
