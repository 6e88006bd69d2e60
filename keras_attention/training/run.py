"""`train`: a task trained from data into a run directory that is also its saved task."""

import dataclasses
import math
import os
import re
import shutil

import keras
import numpy as np

import keras_attention
from keras_attention.tasks import Task, get_task, is_saved_task
from keras_attention.tasks.task import ASSETS_DIR, TASK_FILE, WEIGHTS_FILE, recover_assets
from keras_attention.training import distribute, fingerprint
from keras_attention.training.callbacks import keep_backup_until_saved, recover_backup
from keras_attention.training.config import FitConfig
from keras_attention.training.fit import (
    AVERAGE_DIR,
    BACKUP_DIR,
    CHECKPOINT,
    LOG_DIR,
    finished_epochs,
    fit,
)
from keras_attention.training.lock import LOCK_FILE, run_lock
from keras_attention.utils.files import read_json, write_json
from keras_attention.utils.options import to_dict

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
        averaged: checkpoint averaging's summary (`FitResult.averaged`), or
            `None`.
    """

    task: Task
    history: dict
    epochs: list
    resumed_from: int
    output_dir: str
    train_seconds: float
    stop_reason: str = "epochs"
    best: dict = None
    averaged: dict = None

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
    written); the run directory is locked (a second process training into it
    is refused, naming the PID that holds it) and prepared (a finished run is
    kept unless `overwrite`; an interrupted one is resumed if its options and
    data are the same: every option but `epochs`, `budget_minutes`,
    `verbose`, `strategy` and `cpu_replicas`, and the data, by content;
    otherwise the error names what
    differs); the preprocessor is built from the training data into
    `<output_dir>/assets` (or reloaded when resuming); the task is built from
    `config`; `fit` trains it; the task is saved into `output_dir`.

    A run directory holds:

    | path | what |
    |---|---|
    | `run.json` | the task, its options, the fit options, a fingerprint of the data, how the run ended |
    | `assets/` | the preprocessor's files (vocabularies) |
    | `checkpoints/best.keras`, `checkpoints/best.json` | the best epoch's model and value |
    | `backup/` | `BackupAndRestore` state while a run is unfinished (the last epoch with a finite loss; swapped in atomically, with the dropout seed state) |
    | `average/` | with `average_last_epochs`, the last epochs' weights while a run is unfinished |
    | `logs/` | TensorBoard logs |
    | `run.lock` | locked (`fcntl.flock`, with the PID) while a process trains into the directory |
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
            options or data (the message names them); a loss or weights that
            became NaN or inf (nothing is saved as the task then; the best
            checkpoint and the backup of the last finite epoch stay).
        keras_attention.training.lock.RunLockedError: another process is
            training into `output_dir` (an `OSError`).

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
    # The strategy first: logical devices and collectives must be set before TensorFlow starts.
    strategy = distribute.get_strategy(fit_config.strategy, fit_config.cpu_replicas)
    # Reading the data first: missing or misaligned files fail before anything is written.
    given = (train_data, valid_data)
    train_data = task_cls.read_data(train_data)
    valid_data = None if valid_data is None else task_cls.read_valid_data(valid_data, train_data)
    _check_init_from(config, output_dir)
    output_dir = distribute.worker_dir(os.fspath(output_dir), strategy)  # chief: output_dir
    description = _description(task_cls, config, fit_config, train_data, valid_data, given)
    with run_lock(output_dir):  # one process per run directory, released however it ends
        resumed = _prepare_run_dir(output_dir, description, config, resume, overwrite)
        return _train_locked(task_cls, config, fit_config, (train_data, valid_data), output_dir,
                             description, strategy, resumed, resume, callbacks)  # fmt: skip


def _train_locked(task_cls, config, fit_config, data, output_dir, description, strategy,
                  resumed, resume, callbacks):  # fmt: skip
    """`train` once the run directory is locked and prepared."""
    train_data, valid_data = data
    keras.utils.set_random_seed(fit_config.seed)
    assets_dir = os.path.join(output_dir, ASSETS_DIR)
    if not resumed:  # the work files of an earlier run (e.g. a frozen encoder's weights) go
        shutil.rmtree(os.path.join(output_dir, CACHE_DIR), ignore_errors=True)
    if resumed:
        preprocessor = task_cls.load_preprocessor(config, assets_dir)
    else:
        os.makedirs(assets_dir, exist_ok=True)
        preprocessor = task_cls.build_preprocessor(config, train_data, assets_dir)
    with strategy.scope():  # the strategy places the model's variables
        model = task_cls.build(config, preprocessor)
    model.work_dir = output_dir
    datasets = [
        None if data is None else model.make_dataset(data, fit_config.batch_size, shuffle, seed)
        for data, shuffle, seed in ((train_data, True, fit_config.seed), (valid_data, False, None))
    ]
    if resumed:
        _skip_shuffles(datasets[0], finished_epochs(output_dir))
    if resumed and fit_config.verbose:
        print(
            f"resuming the interrupted run in {output_dir}: {finished_epochs(output_dir)} of "
            f"{fit_config.epochs} epochs done",
            flush=True,
        )
    with keep_backup_until_saved():  # removed by `_finish` once the task is saved
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
    if not distribute.is_chief(strategy):  # a non-chief worker keeps nothing
        shutil.rmtree(output_dir, ignore_errors=True)
    return TrainingRun(
        task=model,
        history=result.history,
        epochs=result.epochs,
        resumed_from=result.resumed_from,
        output_dir=output_dir,
        train_seconds=result.train_seconds,
        stop_reason=result.stop_reason,
        best=result.best,
        averaged=result.averaged,
    )


def _finish(output_dir, model, description, result):
    """Saves the task into the run directory and records how the run ended (not after a NaN)."""
    problem, epoch = _not_finite(result, model), result.resumed_from + len(result.epochs)
    if problem:
        raise ValueError(
            f"training stopped because a value stopped being finite: {problem} in epoch {epoch}; "
            f"nothing was saved as a task in {output_dir!r}. {_kept(output_dir)} Lower "
            f"--learning-rate or set --clipnorm, and start over with --no-resume."
        )
    model.save(output_dir)
    description["result"] = {
        "epochs": result.resumed_from + len(result.epochs),
        "stop_reason": result.stop_reason,
        "best": result.best,
        "restored_best": result.restored_best,
        "averaged": result.averaged,
        "train_seconds": round(result.train_seconds, 1),
    }
    _write_run_file(output_dir, description)
    # Only now: a process killed while saving resumes from the backup with nothing left to train.
    shutil.rmtree(os.path.join(output_dir, BACKUP_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(output_dir, AVERAGE_DIR), ignore_errors=True)


def read_run_file(output_dir):
    """The `run.json` of a run directory, or `None` when there is none."""
    path = os.path.join(os.fspath(output_dir), RUN_FILE)
    if not os.path.isfile(path):
        return None
    return read_json(path, _FORMAT, "a keras-attention run file")


def _not_finite(result, model):
    """What is not finite at the end of training (`"the training loss became nan"`), or `None`."""
    for key in ("loss", "val_loss"):
        for value in result.history.get(key, ()):
            if not math.isfinite(value):
                return f"the {'training' if key == 'loss' else 'validation'} loss became {value}"
    if result.stop_reason == "nan":
        return "the training loss became NaN or inf"
    if any(
        not np.isfinite(keras.ops.convert_to_numpy(w)).all()
        for w in model.training_network().weights
    ):
        return "the weights became NaN or inf"
    return None


def _kept(output_dir):
    """What a run that stopped on a NaN keeps: the best checkpoint, the last good backup."""
    kept = [
        f"{what} {path}"
        for what, path in (
            ("the best checkpoint", os.path.join(output_dir, CHECKPOINT)),
            ("the backup of the last good epoch", os.path.join(output_dir, BACKUP_DIR)),
        )
        if os.path.exists(path)
    ]
    return f"Kept: {' and '.join(kept)}." if kept else "No epoch finished with a finite loss."


def _description(task_cls, config, fit_config, train_data, valid_data, given=(None, None)):
    """What `run.json` records: the task, its options, and fingerprints of the data."""
    splits = {"train": (given[0], train_data), "valid": (given[1], valid_data)}
    return {
        "format": _FORMAT,
        "version": 1,
        "keras_attention": keras_attention.__version__,
        "task": task_cls.task_name,
        "config": to_dict(config),
        "fit": to_dict(fit_config),
        "data": {split: _fingerprint(read) for split, (_, read) in splits.items()},
        "data_files": {
            split: fingerprint.data_record(raw, read) for split, (raw, read) in splits.items()
        },
    }


def _check_init_from(config, output_dir):
    """Refuses a run whose output directory is the run it starts from (it would be replaced)."""
    init_from = getattr(config, "init_from", None)
    if init_from is None:
        return
    if os.path.realpath(os.fspath(init_from)) == os.path.realpath(os.fspath(output_dir)):
        raise ValueError(
            "train: `output_dir` is the run `init_from` starts from; writing there would "
            "replace the pre-trained model before it is read. Choose another output directory. "
            f"Received: output_dir={os.fspath(output_dir)!r}, init_from={init_from!r}"
        )


def _prepare_run_dir(output_dir, description, config, resume, overwrite):
    """Makes `output_dir` ready; returns whether an interrupted run is resumed."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"`output_dir` must be a directory. Received: output_dir={output_dir!r} (a file)"
        )
    _check_not_foreign(output_dir, overwrite)
    recover_assets(output_dir)  # a process killed while it saved the task
    backup = os.path.join(output_dir, BACKUP_DIR)
    recover_backup(backup)  # a process killed while it replaced the backup
    if os.path.isdir(backup) and not resume:
        shutil.rmtree(backup)
        shutil.rmtree(os.path.join(output_dir, AVERAGE_DIR), ignore_errors=True)
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


def _check_not_foreign(output_dir, overwrite):
    """Refuses a non-empty directory holding no run of this package, unless `overwrite`.

    Its files are not a run's: a run would mix its checkpoints and logs with them and replace
    its `assets/`, `cache/` and weights.
    """
    if overwrite or not os.path.isdir(output_dir):
        return
    if os.path.isfile(os.path.join(output_dir, RUN_FILE)) or is_saved_task(output_dir):
        return
    # The lock, and other workers' directories (`worker-<i>`, made by a multi-worker run's
    # other processes, possibly before this chief writes its run.json), are the run's own.
    others = sorted(
        name for name in os.listdir(output_dir)
        if name != LOCK_FILE and not re.fullmatch(r"(worker|chief|evaluator|ps)-\d+", name)
    )  # fmt: skip
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise FileExistsError(
            f"{output_dir!r} is not empty ({shown}) and holds no keras-attention run "
            f"({RUN_FILE}); choose a new or empty output directory, or pass overwrite=True to "
            "train into it anyway"
        )


def _check_resumable(output_dir, description, config):
    """Raises a `ValueError` naming what differs when the run was started otherwise."""
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
    defaults = {"config": to_dict(type(config)()), "fit": to_dict(FitConfig())}
    options = fingerprint.option_differences(saved, description, defaults)
    if options:
        raise ValueError(
            f"the interrupted run in {output_dir!r} was started with "
            f"{', '.join(f'{name}={was!r}' for name, was, _ in options)}; {hint}. "
            f"Received: {', '.join(f'{name}={now!r}' for name, _, now in options)}"
        )
    for split, what in fingerprint.data_differences(saved, description):
        raise ValueError(
            f"the interrupted run in {output_dir!r} was started on other {split} data: {what}; "
            f"{hint}"
        )


def _fingerprint(data):
    """A SHA-256 of the data as read (lists of strings): a resumed run checks it is the same."""
    return fingerprint.data_hash(data)


def _skip_shuffles(dataset, epochs):
    """Advances a resumed run's reshuffling dataset to the order of the epoch it resumes at.

    A `shuffle(..., reshuffle_each_iteration=True)` draws each order from a
    seed generator that moves on with every iterator made of the dataset; a
    fresh process starts it over, so without this a run resumed after epoch
    `k` would see another order than an uninterrupted run in epoch `k`.
    Keras's `EpochIterator` makes two iterators per epoch when the number of
    batches is known (one at the start of the epoch, one when it ends, which
    the next epoch replaces) and one in the first epoch when it is not: epoch
    `k` uses iterator `2k` (`2k - 1`); making and dropping as many first gives
    the same orders as an uninterrupted run with the same seed (checked by
    the SIGKILL test, `tests/training/test_kill_resume.py`).
    """
    if not epochs or not hasattr(dataset, "cardinality"):
        return
    known = int(dataset.cardinality()) > 0
    for _ in range(2 * epochs if known else 2 * epochs - 1):
        iter(dataset)


def _write_run_file(output_dir, description):
    write_json(os.path.join(output_dir, RUN_FILE), description)
