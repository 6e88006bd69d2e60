"""Training glue for the translators: masked loss and accuracy, callbacks, run directories.

`train_translation` is what `keras-attention train translation` runs: it
builds WordPiece vocabularies from the training text, feeds
`pipelines.translation.make_dataset` batches to a `seq2seq_translator` or a
`transformer_translator`, and fits it with a progress bar, checkpoints, a
backup to resume from after an interruption and TensorBoard logs. At the end
it saves a `keras_attention.models.Translator` into the run directory.

A run directory (`output_dir`) holds:

| path                                  | what                                              |
|---------------------------------------|---------------------------------------------------|
| `source_vocab.txt`, `target_vocab.txt`| the vocabularies (with their `.json` option files)|
| `train_config.json`                   | the model and data options of the run             |
| `checkpoints/best.keras`              | the model of the best epoch (`ModelCheckpoint`)   |
| `backup/`                             | `BackupAndRestore` state, deleted when a run ends |
| `logs/`                               | TensorBoard logs (`tensorboard --logdir logs`)    |
| `translator/`                         | the trained `Translator` (`Translator.load`)      |

Resuming: when `backup/` exists (a run was interrupted), the next call with
the same `output_dir` reuses the vocabularies and continues after the last
finished epoch, with the weights and optimizer state of that epoch.
"""

import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
from keras import ops

from keras_attention.layers.attention_decoder import ATTENTIONS, CELLS, STYLES
from pipelines.text import PAD_ID

MODELS = ("rnn", "transformer")
# The decoder's own score names, then the attentions built here as layers (see
# `build_translator_model`).
SCORES = (*ATTENTIONS, "location", "local_monotonic", "local_predictive", "hard")

SOURCE_VOCAB = "source_vocab.txt"
TARGET_VOCAB = "target_vocab.txt"
CONFIG_FILE = "train_config.json"
CHECKPOINT = os.path.join("checkpoints", "best.keras")
BACKUP_DIR = "backup"
LOG_DIR = "logs"
TRANSLATOR_DIR = "translator"

# Options that shape the vocabularies or the model: a resumed run must keep them.
_RESUME_KEYS = (
    "model",
    "score",
    "style",
    "cell",
    "embedding_dim",
    "units",
    "num_layers",
    "hidden_dim",
    "num_heads",
    "intermediate_dim",
    "dropout",
    "vocab_size",
    "lowercase",
    "max_source_length",
    "max_target_length",
)


def masked_loss():
    """Sparse categorical cross-entropy over the logits, ignoring padding labels (`0`).

    The mean is taken over the non-padding labels only, so a batch's loss does
    not depend on how much padding it holds.

    Returns:
        A `keras.losses.SparseCategoricalCrossentropy(from_logits=True,
        ignore_class=0)`.

    Example:

    >>> labels = np.array([[3, 4, 0]])
    >>> logits = np.log(np.array([[[.1, .1, .1, .6, .1], [.1, .1, .1, .1, .6],
    ...                            [.9, .1, 0, 0, 0]]], "float32") + 1e-9)
    >>> round(float(masked_loss()(labels, logits)), 4), round(float(-np.log(0.6)), 4)
    (0.5108, 0.5108)
    """
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=PAD_ID, name="masked_loss"
    )


@keras.saving.register_keras_serializable(package="keras_attention")
class MaskedTokenAccuracy(keras.metrics.Metric):
    """The fraction of non-padding labels whose logit is the largest.

    `sum(argmax(logits) == labels and labels != 0) / sum(labels != 0)` over
    every batch seen since the last reset (not a mean of per-batch means).

    Args:
        name: the metric name. Defaults to `"accuracy"`.
        pad_id: the padding label, not counted. Defaults to `0`.

    Example:

    >>> metric = MaskedTokenAccuracy()
    >>> metric.update_state(np.array([[3, 4, 0, 0]]),
    ...                     np.eye(5, dtype="float32")[[[3, 1, 2, 2]]])
    >>> float(metric.result())
    0.5
    """

    def __init__(self, name="accuracy", pad_id=PAD_ID, **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = int(pad_id)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        real = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        if sample_weight is not None:
            real = real * ops.cast(sample_weight, "float32")
        hits = ops.cast(ops.equal(predicted, y_true), "float32") * real
        self.correct.assign_add(ops.sum(hits))
        self.count.assign_add(ops.sum(real))

    def result(self):
        return ops.divide_no_nan(self.correct, self.count)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


class ScalarLogs(keras.callbacks.Callback):
    """Writes the epoch metrics as TensorBoard scalars, without the `tensorboard` package.

    The layout of `keras.callbacks.TensorBoard`'s epoch logs: `log_dir/train`
    and `log_dir/validation` event files with the scalars `epoch_<metric>`
    (`val_` metrics go to `validation` without their prefix), readable by
    `tensorboard --logdir log_dir`. It uses `tf.summary.write` of TensorFlow
    itself, so it works where only `tensorflow` is installed.

    Args:
        log_dir: the log directory.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self._writers = {}

    def _writer(self, split):
        import tensorflow as tf

        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(os.path.join(self.log_dir, split))
        return self._writers[split]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(
                    f"epoch_{name}", tf.constant(float(value)), step=epoch, metadata=metadata
                )
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def tensorboard_callback(log_dir):
    """`keras.callbacks.TensorBoard(log_dir)` when `tensorboard` is installed, else `ScalarLogs`.

    Either writes the epoch metrics under `log_dir/train` and
    `log_dir/validation` for `tensorboard --logdir log_dir`.
    """
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        return keras.callbacks.TensorBoard(os.fspath(log_dir), write_graph=False)
    return ScalarLogs(log_dir)


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
        _text(p).strip() == _text(r).strip() for p, r in zip(predictions, references, strict=True)
    )
    return hits / len(references)


def build_translator_model(
    model,
    source_vocabulary_size,
    target_vocabulary_size,
    *,
    score=None,
    style="bahdanau",
    cell="gru",
    embedding_dim=128,
    units=256,
    num_layers=2,
    hidden_dim=256,
    num_heads=8,
    intermediate_dim=1024,
    dropout=None,
    max_source_length=64,
    max_target_length=64,
):
    """A `seq2seq_translator` (`model="rnn"`) or a `transformer_translator` from CLI-style options.

    `score` picks the RNN decoder's attention: `"additive"` (Bahdanau),
    `"concat"`, `"bilinear"`/`"general"` (Luong general), `"dot"`,
    `"scaled_dot"`, `"location"` (Luong location, over `max_source_length`
    positions), `"local_monotonic"`/`"local_predictive"` (Luong local-m /
    local-p) or `"hard"`. It defaults to `"additive"` and must be left `None`
    for the Transformer. `dropout` defaults to `0.0` for the RNN and `0.1` for
    the Transformer, whose position tables cover
    `max(max_source_length, max_target_length) + 1` positions.

    Returns:
        A functional `keras.Model` from `{"source", "target_in"}` ids to logits.

    Example:

    >>> model = build_translator_model("rnn", 30, 20, score="dot", embedding_dim=8, units=16)
    >>> model.get_layer("decoder").attention
    'dot'
    """
    from keras_attention import layers, models

    _check_choice("model", model, MODELS)
    if dropout is None:
        dropout = 0.1 if model == "transformer" else 0.0
    if model == "transformer":
        if score is not None:
            raise ValueError(
                "`score` chooses the attention of the RNN decoder (model='rnn'); the Transformer "
                f"uses multi-head dot-product attention. Received: score={score!r}"
            )
        return models.transformer_translator(
            source_vocabulary_size,
            target_vocabulary_size,
            max_length=max(max_source_length, max_target_length) + 1,
            num_layers=num_layers,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
        )
    score = "additive" if score is None else score
    _check_choice("score", score, SCORES)
    _check_choice("style", style, STYLES)
    attention = {
        "location": lambda: layers.LocationAttention(
            max_length=max_source_length, name="attention"
        ),
        "local_monotonic": lambda: layers.LocalAttention(mode="monotonic", name="attention"),
        "local_predictive": lambda: layers.LocalAttention(mode="predictive", name="attention"),
        "hard": lambda: layers.HardAttention(name="attention"),
    }.get(score, lambda: score)()
    return models.seq2seq_translator(
        source_vocabulary_size,
        target_vocabulary_size,
        embedding_dim=embedding_dim,
        units=units,
        cell=cell,
        attention=attention,
        style=style,
        dropout=dropout,
    )


@dataclasses.dataclass
class TrainingRun:
    """What `train_translation` returns.

    Attributes:
        translator: the trained `keras_attention.models.Translator`.
        history: dict of per-epoch metric lists of this call (`loss`,
            `accuracy`, `val_*` with validation data).
        epochs: the epoch numbers (0-based) this call trained; a resumed run
            starts after the last finished epoch.
        resumed_from: the number of epochs finished before this call (`0`
            for a fresh run).
        output_dir: the run directory.
        train_seconds: wall-clock seconds spent in `fit`.
    """

    translator: object
    history: dict
    epochs: list
    resumed_from: int
    output_dir: str
    train_seconds: float

    @property
    def translator_dir(self):
        """Where the `Translator` was saved (`<output_dir>/translator`)."""
        return os.path.join(self.output_dir, TRANSLATOR_DIR)


def train_translation(
    train_data,
    output_dir,
    *,
    valid_data=None,
    model="rnn",
    score=None,
    style="bahdanau",
    cell="gru",
    embedding_dim=128,
    units=256,
    num_layers=2,
    hidden_dim=256,
    num_heads=8,
    intermediate_dim=1024,
    dropout=None,
    vocab_size=8000,
    lowercase=False,
    epochs=10,
    batch_size=64,
    learning_rate=1e-3,
    max_source_length=64,
    max_target_length=64,
    beam_width=1,
    seed=0,
    resume=True,
    overwrite=False,
    verbose=1,
    callbacks=None,
):
    """Trains a translator on sentence pairs and saves a `Translator` in `output_dir`.

    Vocabularies are learned from the training pairs
    (`pipelines.text.build_wordpiece_vocab`, one for each side), batches come
    from `pipelines.translation.make_dataset` (pairs longer than the maximum
    lengths are dropped), the model from `build_translator_model`. It is fit
    with Adam on `masked_loss` with `MaskedTokenAccuracy` and the callbacks
    `BackupAndRestore` (`output_dir/backup`), `ModelCheckpoint` (the best
    epoch by `val_loss`, or `loss` without validation data, to
    `output_dir/checkpoints/best.keras`) and `TensorBoard` (`output_dir/logs`),
    then `callbacks`. The final model is wrapped in a `Translator` (greedy
    decoding when `beam_width=1`) and saved to `output_dir/translator`.

    Args:
        train_data: the training pairs, any form `make_dataset` accepts: a
            `(source_file, target_file)` pair of paths, a TSV path, or a
            list of `(source, target)` strings.
        output_dir: the run directory (see the module docstring).
        valid_data: optional validation pairs, same forms.
        model: `"rnn"` or `"transformer"`. Defaults to `"rnn"`.
        score, style, cell, embedding_dim, units: the RNN translator's options
            (see `build_translator_model` and `seq2seq_translator`).
        num_layers, hidden_dim, num_heads, intermediate_dim: the
            Transformer's options (see `transformer_translator`).
        dropout: defaults to `0.0` (RNN) or `0.1` (Transformer).
        vocab_size: the largest size of each vocabulary. Defaults to `8000`.
        lowercase: lower-case the text of both sides. Defaults to `False`.
        epochs: positive int, the total number of epochs (a resumed run
            trains the remaining ones). Defaults to `10`.
        batch_size: positive int. Defaults to `64`.
        learning_rate: positive float, Adam's. Defaults to `1e-3`.
        max_source_length, max_target_length: positive ints, the most tokens
            of a training source and target (longer pairs are dropped), also
            the `Translator`'s limits. Default to `64`.
        beam_width: positive int, the `Translator`'s beam width. Defaults to
            `1` (greedy).
        seed: int, seeds the weights, the shuffling and dropout. Defaults to
            `0`.
        resume: bool. `True` continues an interrupted run found in
            `output_dir`; `False` deletes its backup and starts over.
            Defaults to `True`.
        overwrite: bool, replace a finished run in `output_dir`. Defaults to
            `False`: a `FileExistsError`.
        verbose: `0`, `1` (a progress bar) or `2` (a line per epoch), Keras's
            `fit` verbosity. Defaults to `1`.
        callbacks: optional more Keras callbacks, run after the built-in ones.

    Returns:
        A `TrainingRun`.

    Raises:
        FileNotFoundError: a data file does not exist.
        FileExistsError: `output_dir` holds a finished run and `overwrite`
            is `False`.
        ValueError: bad options, misaligned or empty data, or options that
            differ from those of the interrupted run being resumed.

    Example:

    >>> import tempfile
    >>> from pipelines import synthetic
    >>> run = train_translation(synthetic.dates(32, seed=1), tempfile.mkdtemp(), epochs=1,
    ...                         embedding_dim=4, units=4, vocab_size=100, batch_size=32,
    ...                         verbose=0)
    >>> sorted(run.history), run.epochs, os.path.isfile(os.path.join(run.output_dir, CHECKPOINT))
    (['accuracy', 'loss'], [0], True)

    References:
        Bahdanau et al., 2015, "Neural Machine Translation by Jointly Learning
        to Align and Translate"; Vaswani et al., 2017, "Attention Is All You
        Need".
    """
    import tensorflow as tf

    from keras_attention.models import Translator
    from pipelines import text, translation

    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("vocab_size", vocab_size),
        ("max_source_length", max_source_length),
        ("max_target_length", max_target_length),
        ("beam_width", beam_width),
    ):
        _check_positive_int(name, value)
    if not (isinstance(learning_rate, float | int) and learning_rate > 0):
        raise ValueError(
            f"`learning_rate` must be a positive number. Received: learning_rate={learning_rate!r}"
        )
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2. Received: verbose={verbose!r}")
    config = {
        "model": model,
        "score": score if model != "rnn" or score is not None else "additive",
        "style": style,
        "cell": cell,
        "embedding_dim": embedding_dim,
        "units": units,
        "num_layers": num_layers,
        "hidden_dim": hidden_dim,
        "num_heads": num_heads,
        "intermediate_dim": intermediate_dim,
        "dropout": dropout,
        "vocab_size": vocab_size,
        "lowercase": bool(lowercase),
        "max_source_length": max_source_length,
        "max_target_length": max_target_length,
    }
    _check_choice("model", model, MODELS)
    _check_choice("cell", cell, CELLS)
    _check_choice("style", style, STYLES)
    if model == "transformer" and score is not None:
        raise ValueError(
            "`score` chooses the attention of the RNN decoder (model='rnn'); the Transformer "
            f"uses multi-head dot-product attention. Received: score={score!r}"
        )
    if score is not None:
        _check_choice("score", score, SCORES)
    if dropout is not None and not (isinstance(dropout, float | int) and 0 <= dropout < 1):
        raise ValueError(f"`dropout` must be a float in [0, 1). Received: dropout={dropout!r}")
    # Reading the data first: missing or misaligned files fail before anything is written.
    sources, targets = translation.read_pairs(train_data)
    valid = None if valid_data is None else translation.read_pairs(valid_data)

    output_dir = os.fspath(output_dir)

    def path(*parts):
        return os.path.join(output_dir, *parts)

    resumed_from = _prepare_run_dir(output_dir, config, resume, overwrite)
    keras.utils.set_random_seed(seed)
    if resumed_from is None:
        resumed_from = 0
        text.build_wordpiece_vocab(sources, path(SOURCE_VOCAB), vocab_size, lowercase=lowercase)
        text.build_wordpiece_vocab(targets, path(TARGET_VOCAB), vocab_size, lowercase=lowercase)
        with open(path(CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    source_tokenizer = text.load_tokenizer(path(SOURCE_VOCAB))
    target_tokenizer = text.load_tokenizer(path(TARGET_VOCAB))

    def dataset(pairs, shuffle):
        data = translation.make_dataset(
            list(zip(*pairs, strict=True)),
            source_tokenizer,
            target_tokenizer,
            batch_size=batch_size,
            max_source_length=max_source_length,
            max_target_length=max_target_length,
            shuffle=min(len(pairs[0]), 100_000) if shuffle else None,
            seed=seed,
            cache=True,
        )
        # One pass fills the cache and counts the batches, so the progress bar knows the total.
        batches = int(data.reduce(np.int64(0), _count))
        if batches == 0:
            raise ValueError(
                f"no training pair fits max_source_length={max_source_length} and "
                f"max_target_length={max_target_length} (target tokens + 1) among "
                f"{len(pairs[0])} pairs; raise the limits."
            )
        return data.apply(tf.data.experimental.assert_cardinality(batches))

    train_dataset = dataset((sources, targets), shuffle=True)
    valid_dataset = None if valid is None else dataset(valid, shuffle=False)

    network = build_translator_model(
        model,
        source_tokenizer.vocabulary_size,
        target_tokenizer.vocabulary_size,
        score=score,
        style=style,
        cell=cell,
        embedding_dim=embedding_dim,
        units=units,
        num_layers=num_layers,
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        intermediate_dim=intermediate_dim,
        dropout=dropout,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
    )
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=masked_loss(),
        metrics=[MaskedTokenAccuracy()],
    )
    monitor = "loss" if valid_dataset is None else "val_loss"
    os.makedirs(path("checkpoints"), exist_ok=True)
    all_callbacks = [
        keras.callbacks.BackupAndRestore(path(BACKUP_DIR)),
        keras.callbacks.ModelCheckpoint(path(CHECKPOINT), monitor=monitor, save_best_only=True),
        tensorboard_callback(path(LOG_DIR)),
        *(callbacks or ()),
    ]
    if resumed_from and verbose:
        print(
            f"resuming the interrupted run in {output_dir}: {resumed_from} of {epochs} epochs done",
            flush=True,
        )
    start = time.perf_counter()
    history = network.fit(
        train_dataset,
        validation_data=valid_dataset,
        epochs=epochs,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,  # the dataset shuffles itself
    )
    seconds = time.perf_counter() - start

    translator = Translator(
        network,
        source_tokenizer,
        target_tokenizer,
        max_source_length=max_source_length,
        max_output_length=max_target_length,
        beam_width=beam_width,
    )
    translator.save(path(TRANSLATOR_DIR))
    return TrainingRun(
        translator=translator,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        epochs=list(history.epoch),
        resumed_from=resumed_from,
        output_dir=output_dir,
        train_seconds=seconds,
    )


def _prepare_run_dir(output_dir, config, resume, overwrite):
    """Makes `output_dir` ready; returns the epochs done by a run to resume, or `None`."""
    backup = os.path.join(output_dir, BACKUP_DIR)
    finished = os.path.join(output_dir, TRANSLATOR_DIR)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"`output_dir` must be a directory. Received: output_dir={output_dir!r} (a file)"
        )
    if os.path.isdir(backup) and not resume:
        shutil.rmtree(backup)
    if os.path.isdir(backup):
        saved = _read_json(os.path.join(output_dir, CONFIG_FILE))
        missing = [
            name
            for name in (CONFIG_FILE, SOURCE_VOCAB, TARGET_VOCAB)
            if not os.path.isfile(os.path.join(output_dir, name))
        ]
        if missing or saved is None:
            raise ValueError(
                f"cannot resume the run in {output_dir!r}: {missing or [CONFIG_FILE]} missing. "
                "Start over with resume=False (command line: --no-resume)."
            )
        for key in _RESUME_KEYS:
            if saved.get(key) != config[key]:
                raise ValueError(
                    f"the interrupted run in {output_dir!r} was started with "
                    f"{key}={saved.get(key)!r}; resume it with the same options or start over "
                    f"with resume=False (command line: --no-resume). Received: {key}={config[key]!r}"
                )
        metadata = _read_json(os.path.join(backup, "training_metadata.json")) or {}
        return int(metadata.get("epoch", 0))  # the number of finished epochs
    if os.path.isdir(finished):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir!r} holds a finished run ({finished}); choose another output "
                "directory or pass overwrite=True"
            )
        shutil.rmtree(finished)
        shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)
    os.makedirs(output_dir, exist_ok=True)
    return None


def _count(count, _):
    return count + 1


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
