"""A task's SavedModel: strings in, strings out, tokenizers and decoding in the graph."""

import tempfile

from keras_attention.export.saved_model import export_saved_model
from keras_attention.tasks import Task, Translator


def export_translator(
    translator, base_dir="saved_models", name="translator", version=None, overwrite=False
):
    """Exports a `keras_attention.tasks.Translator` for TF Serving (`export_task`).

    The SavedModel is written by `export_saved_model` as
    `<base_dir>/<name>/<version>/` with two signatures, both the translator's
    own traced functions (`Translator.serve` and `Translator.serve_attention`,
    which `translate` and `translate_with_attention` run), so the served
    translations are the in-memory ones:

    - `"serving_default"`: `{"text": tf.string (batch_size,)}` ->
      `{"translation": tf.string (batch_size,), "status": tf.string
      (batch_size,)}`.
    - `"attention"`: `{"text": tf.string (batch_size,)}` ->
      `{"translation": tf.string (batch_size,)`, `"source_tokens": tf.string
      (batch_size, S)`, `"target_tokens": tf.string (batch_size, T)`,
      `"attention": float32 (batch_size, T, S)`, `"status"`}: the word pieces
      of the (truncated) sources and of the generated targets (`"[END]"`
      included when generated), padded with `""`, and the cross-attention of
      each target token over the source (see
      `Translator.translate_with_attention`), padded with `0`.

    `status` says what happened to each input
    (`keras_attention.tasks.serving_status`): `"ok"`, `"truncated"` (the
    source had more than `source_sequence_length` tokens; its first ones were
    translated), `"empty_input"` (`""`, whitespace, NUL: the translation is
    `""`, no tokens, no attention) or `"invalid_utf8"` (bytes that are not
    UTF-8: the same empty answer).

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
    >>> from keras_attention.models import seq2seq_translator
    >>> from keras_attention.tasks import Translator
    >>> vocabulary = ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "-", ",", "march",
    ...               "3", "2021", "0", "##3"]
    >>> tokenizer = TextTokenizer(vocabulary, lowercase=True)
    >>> model = seq2seq_translator(len(vocabulary), len(vocabulary), embedding_dim=4, units=4)
    >>> translator = Translator(model, tokenizer, tokenizer, max_output_length=8)
    >>> path = export_translator(translator, tempfile.mkdtemp())
    >>> sorted(os.listdir(os.path.join(path, "assets")))
    ['source_vocab.txt', 'source_vocab.txt.json', 'target_vocab.txt', 'target_vocab.txt.json']
    >>> import tensorflow as tf
    >>> import tensorflow_text  # registers the tokenizer ops before loading
    >>> serve = tf.saved_model.load(path).signatures["serving_default"]
    >>> served = serve(text=tf.constant(["March 3, 2021"]))["translation"]
    >>> served.numpy()[0].decode() == translator.translate(["March 3, 2021"])[0]
    True

    References:
        - Olston et al., 2017, "TensorFlow-Serving: Flexible, High-Performance
          ML Serving" (https://arxiv.org/abs/1712.06139).
    """
    if not isinstance(translator, Translator):
        raise ValueError(
            "export_translator: `translator` must be a keras_attention.models.Translator. "
            f"Received: translator={type(translator).__name__}"
        )
    return export_task(translator, base_dir, name=name, version=version, overwrite=overwrite)


def export_task(task, base_dir="saved_models", name=None, version=None, overwrite=False,
                container_base_path=None):  # fmt: skip
    """Exports any task for TF Serving: its serving signatures, its preprocessor's files as assets.

    The SavedModel (`export_saved_model`: `<base_dir>/<name>/<version>/`,
    listed in `models.config`, never overwriting a version unless asked)
    holds the task's `serving_signatures()` — the task's own traced
    functions, so what is served is what the task computes in memory — and
    the files of `task.preprocessor.save_assets` under `assets/`. Every
    signature that takes text also answers `status`, a `tf.string`
    `(batch_size,)` output (`keras_attention.tasks.serving_status`: `ok`,
    `truncated`, `empty_input`, `invalid_utf8`). The task's
    `warmup_requests()` (a translator with `jit_compile=True`: one sentence
    per padded source length) go to `assets.extra/tf_serving_warmup_requests`,
    which TF Serving replays at load. The target is checked before anything
    is traced (see `export_saved_model`).

    Args:
        task: a `keras_attention.tasks.Task`.
        base_dir: the TF Serving model base directory. Defaults to
            `"saved_models"`.
        name: the model name. Defaults to the task's `export_name`
            (`"translator"` for a translator).
        version: positive int, or `None` for the next free version.
        overwrite: bool, replace an existing version (else `FileExistsError`).
        container_base_path: where the TF Serving container sees `base_dir`
            (`export_saved_model`). Defaults to `None`: the model's existing
            `models.config` entry, else `"/models"`.

    Returns:
        The export path `<base_dir>/<name>/<version>` as a string.
    """
    if not isinstance(task, Task):
        raise ValueError(
            "export_task: `task` must be a keras_attention.tasks.Task. "
            f"Received: task={type(task).__name__}"
        )
    with tempfile.TemporaryDirectory(prefix="keras_attention_assets_") as assets_dir:
        return export_saved_model(
            task.backbone,
            base_dir,
            name=name or task.export_name,
            version=version,
            signatures=task.serving_signatures(),
            overwrite=overwrite,
            assets=task.preprocessor.save_assets(assets_dir),
            warmup_requests=task.warmup_requests(),
            container_base_path=container_base_path,
        )
