"""`train_translation`: `train("translation", ...)` with every option as a keyword argument."""

import dataclasses

from keras_attention.tasks.translation_config import MODELS, TranslationConfig
from keras_attention.tasks.translator import build_backbone
from keras_attention.training.config import FitConfig
from keras_attention.training.run import train
from keras_attention.utils import renamed_argument

# Old argument names that keep working for a release (with a DeprecationWarning).
_RENAMED = {
    "vocab_size": "vocabulary_size",
    "max_source_length": "source_sequence_length",
    "max_target_length": "target_sequence_length",
}


def train_translation(
    train_data,
    output_dir,
    *,
    valid_data=None,
    resume=True,
    overwrite=False,
    callbacks=None,
    **options,
):
    """Trains a translator on sentence pairs and saves it in `output_dir`.

    `train("translation", ...)` with the fields of `TranslationConfig` (model,
    vocabularies, lengths, decoding) and of `FitConfig` (epochs, batch size,
    learning rate, ...) as keyword arguments: see those classes for each
    option and its default.

    Args:
        train_data: the training pairs, any form
            `pipelines.translation.read_pairs` accepts: a
            `(source_file, target_file)` pair of paths, a TSV path, or a list
            of `(source, target)` strings.
        output_dir: the run directory (see `keras_attention.training.train`).
        valid_data: optional validation pairs, same forms.
        resume: bool, continue an interrupted run in `output_dir`. Defaults
            to `True`.
        overwrite: bool, replace a finished run in `output_dir`. Defaults to
            `False`.
        callbacks: optional more Keras callbacks.
        **options: `TranslationConfig` and `FitConfig` fields
            (`vocab_size`, `max_source_length` and `max_target_length` are the
            deprecated names of `vocabulary_size`, `source_sequence_length`
            and `target_sequence_length`).

    Returns:
        A `TrainingRun`; `run.task` (also `run.translator`) is the `Translator`.

    Example:

    >>> import os
    >>> import tempfile
    >>> from pipelines import synthetic
    >>> run = train_translation(synthetic.dates(32, seed=1), tempfile.mkdtemp(), epochs=1,
    ...                         embedding_dim=4, units=4, vocabulary_size=100, batch_size=32,
    ...                         verbose=0)
    >>> sorted(run.history), run.epochs, os.path.isfile(os.path.join(run.output_dir, "task.json"))
    (['accuracy', 'loss'], [0], True)
    """
    for old, new in _RENAMED.items():
        value = renamed_argument("train_translation", options, old, new, options.get(new))
        if value is not None:
            options[new] = value
    configs = {}
    for cls in (TranslationConfig, FitConfig):
        names = {field.name for field in dataclasses.fields(cls)}
        configs[cls] = cls(**{key: options.pop(key) for key in list(options) if key in names})
    if options:
        raise TypeError(f"train_translation() got unexpected arguments {sorted(options)}")
    return train(
        "translation",
        train_data,
        output_dir,
        config=configs[TranslationConfig],
        valid_data=valid_data,
        fit_config=configs[FitConfig],
        resume=resume,
        overwrite=overwrite,
        callbacks=callbacks,
    )


def build_translator_model(model, source_vocabulary_size, target_vocabulary_size, **options):
    """A `Seq2SeqTranslator` (`model="rnn"`) or `TransformerTranslator` from `TranslationConfig` options.

    Example:

    >>> network = build_translator_model("rnn", 30, 20, score="dot", embedding_dim=8, units=16)
    >>> network.decoder.score
    'dot'
    """
    for old, new in _RENAMED.items():
        value = renamed_argument("build_translator_model", options, old, new, options.get(new))
        if value is not None:
            options[new] = value
    return build_backbone(
        TranslationConfig(model=model, **options), source_vocabulary_size, target_vocabulary_size
    )


__all__ = ["MODELS", "build_translator_model", "train_translation"]
