"""`train`: a task trained from data into a run directory that is also its saved task."""

import dataclasses
import hashlib
import json
import os
import shutil

import keras

import keras_attention
from keras_attention.tasks import Task, get_task, is_saved_task
from keras_attention.tasks.task import ASSETS_DIR, TASK_FILE, WEIGHTS_FILE
from keras_attention.training.config import FitConfig
from keras_attention.training.fit import BACKUP_DIR, CHECKPOINT, LOG_DIR, finished_epochs, fit
from keras_attention.utils.files import read_json, write_json
from keras_attention.utils.options import resume_mismatches, to_dict

RUN_FILE = "run.json"
CACHE_DIR = "cache"  # the task's work files (`Task.work_dir`), e.g. cached image features
_FORMAT = "keras_attention.run"


@dataclasses.dataclass
class TrainingRun:
    """What `train` returns.

    Attributes:
        task: the trained task (also saved in `output_dir`).
        history: dict of per-epoch metric lists of this call.
        epochs: the epoch numbers (0-based) this call trained.
        resumed_from: the epochs finished before this call (`0` for a fresh run).
        output_dir: the run directory.
        train_seconds: wall-clock seconds spent in `fit`.
        stop_reason: see `FitResult`.
        best: the best epoch's `{"monitor", "epoch", "value"}`.
    """

    task: Task
    history: dict
    epochs: list
    resumed_from: int
    output_dir: str
    train_seconds: float
    stop_reason: str = "epochs"
    best: dict = None

    @property
    def translator(self):
        """The trained task (the name of this attribute before tasks)."""
        return self.task

    @property
    def translator_dir(self):
        """Where the task was saved: the run directory itself."""
        return self.output_dir


def train(
    task,
    train_data,
    output_dir,
    *,
    config=None,
    valid_data=None,
    fit_config=None,
    resume=True,
    overwrite=False,
    callbacks=None,
):
    """Trains a registered task on data and saves it; the run directory is its saved task.

    In order: the data is read and checked (bad files fail before anything is
    written); the run directory is prepared (a finished run is kept unless
    `overwrite`; an interrupted one is resumed if its options and data are
    the same); the preprocessor is built from the training data into
    `<output_dir>/assets` (or reloaded when resuming); the task is built from
    `config`; `fit` trains it; the task is saved into `output_dir`.

    A run directory holds:

    | path | what |
    |---|---|
    | `run.json` | the task, its options, the fit options, a fingerprint of the data, how the run ended |
    | `assets/` | the preprocessor's files (vocabularies) |
    | `checkpoints/best.keras`, `checkpoints/best.json` | the best epoch's model and value |
    | `backup/` | `BackupAndRestore` state while a run is unfinished |
    | `logs/` | TensorBoard logs |
    | `cache/` | the task's work files while training (a captioner's cached image features and frozen encoder); removed when a run starts over |
    | `task.json`, `model.weights.h5` | the trained task (with `assets/`): `Task.load(output_dir)` |

    Args:
        task: a registered task name (`"translation"`) or `Task` subclass.
        train_data: the training data, any form the task's `read_data` takes.
        output_dir: the run directory.
        config: the task's options (its `config_class`). Defaults to its
            defaults.
        valid_data: optional validation data.
        fit_config: a `FitConfig`. Defaults to `FitConfig()`.
        resume: bool. `True` continues an interrupted run found in
            `output_dir`; `False` deletes its backup and starts over.
            Defaults to `True`.
        overwrite: bool, replace a finished run in `output_dir`. Defaults to
            `False`: a `FileExistsError`.
        callbacks: optional more Keras callbacks.

    Returns:
        A `TrainingRun`.

    Raises:
        FileExistsError: `output_dir` holds a finished run and not `overwrite`.
        ValueError: bad options or data; an interrupted run started with other
            options or data; a loss that became NaN (nothing is saved as the
            task then; the best checkpoint stays).

    Example:

    >>> import tempfile
    >>> from pipelines import synthetic
    >>> from keras_attention.tasks import TranslationConfig
    >>> run = train("translation", synthetic.dates(32, seed=1), tempfile.mkdtemp(),
    ...             config=TranslationConfig(embedding_dim=4, units=4, vocabulary_size=100),
    ...             fit_config=FitConfig(epochs=1, batch_size=32, verbose=0))
    >>> sorted(run.history), run.epochs, type(Task.load(run.output_dir)).__name__
    (['accuracy', 'loss'], [0], 'Translator')
    """
    task_cls = get_task(task) if isinstance(task, str) else task
    if not (isinstance(task_cls, type) and issubclass(task_cls, Task) and task_cls.task_name):
        raise ValueError(f"train: `task` must be a registered task. Received: task={task!r}")
    config = task_cls.config_class() if config is None else config
    fit_config = FitConfig() if fit_config is None else fit_config
    if not isinstance(config, task_cls.config_class):
        raise ValueError(
            f"train: `config` must be a {task_cls.config_class.__name__}. "
            f"Received: config={type(config).__name__}"
        )
    # Reading the data first: missing or misaligned files fail before anything is written.
    train_data = task_cls.read_data(train_data)
    valid_data = None if valid_data is None else task_cls.read_data(valid_data)
    output_dir = os.fspath(output_dir)
    description = _description(task_cls, config, fit_config, train_data, valid_data)
    resumed = _prepare_run_dir(output_dir, description, config, resume, overwrite)
    keras.utils.set_random_seed(fit_config.seed)
    assets_dir = os.path.join(output_dir, ASSETS_DIR)
    if not resumed:  # the work files of an earlier run (e.g. a frozen encoder's weights) go
        shutil.rmtree(os.path.join(output_dir, CACHE_DIR), ignore_errors=True)
    if resumed:
        preprocessor = task_cls.load_preprocessor(config, assets_dir)
    else:
        os.makedirs(assets_dir, exist_ok=True)
        preprocessor = task_cls.build_preprocessor(config, train_data, assets_dir)
    model = task_cls.build(config, preprocessor)
    model.work_dir = output_dir
    datasets = [
        None if data is None else model.make_dataset(data, fit_config.batch_size, shuffle, seed)
        for data, shuffle, seed in ((train_data, True, fit_config.seed), (valid_data, False, None))
    ]
    if resumed and fit_config.verbose:
        print(
            f"resuming the interrupted run in {output_dir}: {finished_epochs(output_dir)} of "
            f"{fit_config.epochs} epochs done",
            flush=True,
        )
    result = fit(
        model,
        datasets[0],
        output_dir,
        validation_data=datasets[1],
        config=fit_config,
        loss=model.loss(config),
        metrics=model.metrics(config),
        callbacks=callbacks,
        resume=resume,
    )
    _finish(output_dir, model, description, result)
    return TrainingRun(
        task=model,
        history=result.history,
        epochs=result.epochs,
        resumed_from=result.resumed_from,
        output_dir=output_dir,
        train_seconds=result.train_seconds,
        stop_reason=result.stop_reason,
        best=result.best,
    )


def _finish(output_dir, model, description, result):
    """Saves the task into the run directory and records how the run ended (not after a NaN)."""
    if result.stop_reason == "nan":
        raise ValueError(
            f"the training loss stopped being finite (NaN or inf) in epoch "
            f"{result.resumed_from + len(result.epochs)}; the model was not saved as a task. The "
            f"best checkpoint so far is {os.path.join(output_dir, CHECKPOINT)}; lower "
            f"--learning-rate or set --clipnorm. Received: loss={result.history['loss'][-1]}"
        )
    model.save(output_dir)
    description["result"] = {
        "epochs": result.resumed_from + len(result.epochs),
        "stop_reason": result.stop_reason,
        "best": result.best,
        "restored_best": result.restored_best,
        "train_seconds": round(result.train_seconds, 1),
    }
    _write_run_file(output_dir, description)


def read_run_file(output_dir):
    """The `run.json` of a run directory, or `None` when there is none."""
    path = os.path.join(os.fspath(output_dir), RUN_FILE)
    if not os.path.isfile(path):
        return None
    return read_json(path, _FORMAT, "a keras-attention run file")


def _description(task_cls, config, fit_config, train_data, valid_data):
    return {
        "format": _FORMAT,
        "version": 1,
        "keras_attention": keras_attention.__version__,
        "task": task_cls.task_name,
        "config": to_dict(config),
        "fit": to_dict(fit_config),
        "data": {"train": _fingerprint(train_data), "valid": _fingerprint(valid_data)},
    }


def _prepare_run_dir(output_dir, description, config, resume, overwrite):
    """Makes `output_dir` ready; returns whether an interrupted run is resumed."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"`output_dir` must be a directory. Received: output_dir={output_dir!r} (a file)"
        )
    backup = os.path.join(output_dir, BACKUP_DIR)
    if os.path.isdir(backup) and not resume:
        shutil.rmtree(backup)
    if os.path.isdir(backup):
        _check_resumable(output_dir, description, config)
        return True
    if is_saved_task(output_dir):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir!r} holds a finished run ({TASK_FILE}); choose another output "
                "directory or pass overwrite=True"
            )
        for name in (TASK_FILE, WEIGHTS_FILE, RUN_FILE):
            path = os.path.join(output_dir, name)
            if os.path.isfile(path):
                os.remove(path)
        for name in (ASSETS_DIR, os.path.dirname(CHECKPOINT), LOG_DIR):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    os.makedirs(output_dir, exist_ok=True)
    _write_run_file(output_dir, description)
    return False


def _check_resumable(output_dir, description, config):
    hint = "resume it with the same options or start over with resume=False (command line: --no-resume)"
    saved = read_run_file(output_dir)
    if saved is None or not os.path.isdir(os.path.join(output_dir, ASSETS_DIR)):
        raise ValueError(
            f"cannot resume the run in {output_dir!r}: {RUN_FILE} or {ASSETS_DIR}/ is missing. "
            "Start over with resume=False (command line: --no-resume)."
        )
    if saved["task"] != description["task"]:
        raise ValueError(
            f"the interrupted run in {output_dir!r} trains the task {saved['task']!r}; {hint}. "
            f"Received: task={description['task']!r}"
        )
    for name, was, now in resume_mismatches(saved["config"], config):
        raise ValueError(
            f"the interrupted run in {output_dir!r} was started with {name}={was!r}; {hint}. "
            f"Received: {name}={now!r}"
        )
    for split, fingerprint in description["data"].items():
        if saved["data"].get(split) != fingerprint:
            raise ValueError(
                f"the interrupted run in {output_dir!r} was started on other {split} data "
                f"(a different fingerprint); {hint}. Received: {split} data fingerprint "
                f"{fingerprint}, the run's {saved['data'].get(split)}"
            )


def _fingerprint(data):
    """A SHA-256 of the data as read (lists of strings): a resumed run checks it is the same."""
    if data is None:
        return None
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode("utf-8")).hexdigest()


def _write_run_file(output_dir, description):
    write_json(os.path.join(output_dir, RUN_FILE), description)
