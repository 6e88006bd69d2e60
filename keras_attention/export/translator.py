"""The translator's SavedModel: strings in, strings out, tokenizers and decoding in the graph."""

import tempfile

import tensorflow as tf

from keras_attention.export.saved_model import export_saved_model


def export_translator(
    translator, base_dir="saved_models", name="translator", version=None, overwrite=False
):
    """Exports a `keras_attention.models.Translator` for TF Serving.

    The SavedModel is written by `export_saved_model` as
    `<base_dir>/<name>/<version>/` with two signatures, both the translator's
    own traced functions (`Translator.serve` and `Translator.serve_attention`,
    which `translate` and `translate_with_attention` run), so the served
    translations are the in-memory ones:

    - `"serving_default"`: `{"text": tf.string (batch_size,)}` ->
      `{"translation": tf.string (batch_size,)}`.
    - `"attention"`: `{"text": tf.string (batch_size,)}` ->
      `{"translation": tf.string (batch_size,)`, `"source_tokens": tf.string
      (batch_size, S)`, `"target_tokens": tf.string (batch_size, T)`,
      `"attention": float32 (batch_size, T, S)}`: the word pieces of the
      (truncated) sources and of the generated targets (`"[END]"` included
      when generated), padded with `""`, and the cross-attention of each
      target token over the source (see `Translator.translate_with_attention`),
      padded with `0`.

    Tokenization and detokenization are tensorflow-text ops inside the graph:
    TF Serving needs them linked in (the `tensorflow_text` ops, as in
    TF Serving builds with tensorflow-text), and a Python process loading the
    export needs `import tensorflow_text` first. Both vocabularies and their
    option sidecars are copied into `assets/` (`source_vocab.txt`,
    `target_vocab.txt`, `*.json`), so the export documents what it tokenizes
    with.

    Args:
        translator: a `keras_attention.models.Translator`.
        base_dir: the TF Serving model base directory. Defaults to
            `"saved_models"`.
        name: the model name. Defaults to `"translator"`.
        version: positive int, or `None` for the next free version.
            Defaults to `None`.
        overwrite: bool, replace an existing version (else
            `FileExistsError`). Defaults to `False`.

    Returns:
        The export path `<base_dir>/<name>/<version>` as a string.

    Example:

    >>> import os
    >>> import tempfile
    >>> from pipelines.text import TextTokenizer
    >>> from keras_attention.models import Translator, seq2seq_translator
    >>> vocabulary = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", "march",
    ...               "3", "2021", "0", "##3"]
    >>> tokenizer = TextTokenizer(vocabulary, lowercase=True)
    >>> model = seq2seq_translator(len(vocabulary), len(vocabulary), embedding_dim=4, units=4)
    >>> translator = Translator(model, tokenizer, tokenizer, max_output_length=8)
    >>> path = export_translator(translator, tempfile.mkdtemp())
    >>> sorted(os.listdir(os.path.join(path, "assets")))
    ['source_vocab.txt', 'source_vocab.txt.json', 'target_vocab.txt', 'target_vocab.txt.json']
    >>> import tensorflow_text  # registers the tokenizer ops before loading
    >>> serve = tf.saved_model.load(path).signatures["serving_default"]
    >>> served = serve(text=tf.constant(["March 3, 2021"]))["translation"]
    >>> served.numpy()[0].decode() == translator.translate(["March 3, 2021"])[0]
    True

    References:
        - Olston et al., 2017, "TensorFlow-Serving: Flexible, High-Performance
          ML Serving" (https://arxiv.org/abs/1712.06139).
    """
    from keras_attention.models.translator import Translator

    if not isinstance(translator, Translator):
        raise ValueError(
            "export_translator: `translator` must be a keras_attention.models.Translator. "
            f"Received: translator={type(translator).__name__}"
        )
    text_spec = {"text": tf.TensorSpec([None], tf.string)}
    signatures = {
        "serving_default": (translator.serve, text_spec),
        "attention": (translator.serve_attention, text_spec),
    }
    with tempfile.TemporaryDirectory(prefix="keras_attention_vocab_") as vocab_dir:
        assets = translator.write_vocabularies(vocab_dir)
        return export_saved_model(
            translator.model,
            base_dir,
            name=name,
            version=version,
            signatures=signatures,
            overwrite=overwrite,
            assets=assets,
        )
