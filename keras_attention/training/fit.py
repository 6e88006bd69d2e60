"""One generic `fit` for every task: progress, best checkpoint, resume, TensorBoard, budget, schedule."""

import dataclasses
import json
import math
import os
import shutil
import time

import keras

from keras_attention.tasks import Task
from keras_attention.training import distribute
from keras_attention.training.callbacks import (
    BestValue,
    FiniteModelCheckpoint,
    LearningRateSchedule,
    ResumedEarlyStopping,
    SafeBackupAndRestore,
    WallClockBudget,
    WeightAverage,
)
from keras_attention.training.config import FitConfig

CHECKPOINT = os.path.join("checkpoints", "best.keras")
BEST_FILE = os.path.join("checkpoints", "best.json")
BACKUP_DIR = "backup"
AVERAGE_DIR = "average"  # the last epochs' weights, with `average_last_epochs`, until saved
LOG_DIR = "logs"


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    Attributes:
        history: per-epoch metric lists of this call (`loss`, `val_loss`, ...).
        epochs: the epoch numbers (0-based) this call trained; a resumed run
            starts after the last finished epoch.
        resumed_from: the epochs finished before this call (`0` for a fresh run).
        train_seconds: wall-clock seconds in `Model.fit`.
        stop_reason: `"epochs"` (all done), `"budget"`, `"early_stopping"` or
            `"nan"` (the loss stopped being finite; the weights are then the
            last ones, and the best checkpoint is kept).
        best: `{"monitor", "epoch", "value"}` of the best epoch (1-based), or
            `None`.
        restored_best: whether the weights were set back to the best epoch's.
        validation_seconds: seconds spent in validation passes (with a budget).
        averaged: with `config.average_last_epochs`, `{"epochs": [...] (1-based),
            "value": the monitored loss of the averaged weights (validation
            loss; `None` without validation data), "kept": whether the
            weights are now the average}`; `None` when nothing was averaged
            (fewer than two finished epochs, or a NaN loss).
    """

    history: dict
    epochs: list
    resumed_from: int
    train_seconds: float
    stop_reason: str
    best: dict
    restored_best: bool
    validation_seconds: float = 0.0
    averaged: dict = None


def fit(
    model,
    train_dataset,
    output_dir,
    *,
    validation_data=None,
    config=None,
    loss=None,
    metrics=None,
    callbacks=None,
    resume=True,
):
    """Trains a model or a task's backbone, keeping what a long run needs in `output_dir`.

    It compiles the model with Adam (`config.learning_rate`, gradient
    clipping at `config.clipnorm`) and `loss`/`metrics`, then runs
    `Model.fit` with Keras's own callbacks and a few of this package:

    | callback | writes |
    |---|---|
    | `SafeBackupAndRestore` (Keras's `BackupAndRestore`, kill- and NaN-safe) | `backup/`: the state after each epoch; a run started again with `resume=True` continues after the last finished epoch (deleted when the run ends) |
    | `FiniteModelCheckpoint` (Keras's `ModelCheckpoint`, never a NaN epoch) | `checkpoints/best.keras`: the model of the best epoch by `val_loss` (`loss` without validation data); `checkpoints/best.json` remembers its value across resumes |
    | `keras.callbacks.TensorBoard` | `logs/`: `tensorboard --logdir <output_dir>/logs` |
    | `keras.callbacks.TerminateOnNaN` | stops when the loss is not finite (`stop_reason="nan"`) |
    | `LearningRateSchedule` | warmup, then constant or cosine (`config.schedule`) |
    | `WallClockBudget` | stops when `config.budget_minutes` are spent |
    | `keras.callbacks.EarlyStopping` | stops after `config.early_stopping_patience` epochs without a better monitored loss |
    | `WeightAverage` | with `config.average_last_epochs`: the trainable weights after each of the last N epochs, in memory and in `average/` (kept and removed with `backup/`, read back on resume) |

    then `callbacks`. At the end the weights of the best epoch are restored
    (`config.restore_best_weights`, unless the loss became NaN). With
    `config.average_last_epochs` the mean of the last N epochs' weights
    (checkpoint averaging, as in Vaswani et al. 2017) is then evaluated on
    the validation data (one more pass, after a budget) and kept when its
    loss is at most the best epoch's; without validation data it is kept.

    With `config.strategy` `"mirrored"` or `"multi-worker"` it trains under
    that `tf.distribute` strategy (`keras_attention.training.distribute`):
    the model must have been created under `get_strategy(...).scope()`
    (`train` does it), the batches are global batches, sharded by data
    between workers, and only the chief writes `output_dir`; another worker
    writes `<output_dir>/worker-<index>/` (its backup, to resume) and deletes
    it when the fit ends.

    Args:
        model: a `keras.Model`, or a `keras_attention.tasks.Task` (its
            backbone is trained; `loss` and `metrics` default to the task's).
        train_dataset: a `tf.data.Dataset` of `(inputs, labels)` batches
            (or anything `Model.fit` takes).
        output_dir: the directory of the checkpoints, backup and logs.
        validation_data: optional validation batches.
        config: a `FitConfig`. Defaults to `FitConfig()`.
        loss: the loss (required for a plain model).
        metrics: optional list of metrics.
        callbacks: optional more Keras callbacks, run after the built-in ones.
        resume: bool; `False` deletes the backup of an interrupted run first.
            Defaults to `True`.

    Returns:
        A `FitResult`.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> inputs = keras.Input((3,))
    >>> net = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    >>> x, y = np.random.rand(64, 3), np.random.rand(64, 1)
    >>> result = fit(net, (x, y), tempfile.mkdtemp(), loss="mse",
    ...              config=FitConfig(epochs=2, batch_size=16, verbose=0))
    >>> result.epochs, result.stop_reason, result.best["epoch"] in (1, 2)
    ([0, 1], 'epochs', True)
    """
    config = FitConfig() if config is None else config
    if not isinstance(config, FitConfig):
        raise ValueError(f"fit: `config` must be a FitConfig. Received: config={config!r}")
    strategy = distribute.get_strategy(config.strategy, config.cpu_replicas)
    with strategy.scope():  # a task may make its training network now (a captioner's)
        network, loss, metrics = _network_loss_metrics(model, loss, metrics)
    distribute.check_built_under(network, strategy, config.strategy)
    if isinstance(train_dataset, tuple):  # (x, y) arrays
        train_dataset = _array_dataset(train_dataset, config)
    if config.strategy != "default":
        train_dataset = distribute.shard_by_data(train_dataset)
        validation_data = distribute.shard_by_data(validation_data)
    given_dir = os.fspath(output_dir)
    output_dir = distribute.worker_dir(given_dir, strategy)  # only the chief writes given_dir
    os.makedirs(os.path.join(output_dir, os.path.dirname(CHECKPOINT)), exist_ok=True)
    backup = os.path.join(output_dir, BACKUP_DIR)
    if not resume:
        shutil.rmtree(backup, ignore_errors=True)
    resumed_from = finished_epochs(output_dir)
    distribute.check_same_start(strategy, resumed_from)
    monitor = "loss" if validation_data is None else "val_loss"
    best = BestValue.read(os.path.join(output_dir, BEST_FILE), monitor) if resumed_from else None
    with strategy.scope():
        network.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
            loss=loss,
            metrics=metrics or None,
            jit_compile=config.keras_jit_compile,
        )
    start = _start_time(output_dir, resumed_from)
    built_in = _callbacks(config, output_dir, monitor, best, start, train_dataset, resumed_from)
    with distribute.strategy_fit(network, strategy, train_dataset):
        history = network.fit(
            train_dataset,
            validation_data=validation_data,
            epochs=config.epochs,
            callbacks=[*built_in.values(), *(callbacks or ())],
            verbose=config.verbose,
            shuffle=False,  # datasets shuffle themselves
        )
        seconds = time.perf_counter() - start
        stop_reason = _stop_reason(history, built_in)
        best = built_in["best"].best
        restored = (
            config.restore_best_weights
            and stop_reason != "nan"
            and _restore_best(network, output_dir, best, resumed_from + len(history.epoch))
        )
        averaged = None
        if "average" in built_in and stop_reason != "nan":
            # Inside `strategy_fit`: evaluating across workers needs its patched test step.
            averaged = _average_weights(network, built_in["average"], validation_data, best)
    if output_dir != given_dir:  # a non-chief worker called directly: nothing of it stays
        shutil.rmtree(output_dir, ignore_errors=True)
    budget = built_in.get("budget")
    return FitResult(
        history={key: [float(v) for v in values] for key, values in history.history.items()},
        epochs=list(history.epoch),
        resumed_from=resumed_from,
        train_seconds=seconds,
        stop_reason=stop_reason,
        best=best,
        restored_best=restored,
        validation_seconds=0.0 if budget is None else budget.validation_seconds,
        averaged=averaged,
    )


def finished_epochs(output_dir):
    """The epochs an interrupted run in `output_dir` finished (its backup's count), or `0`."""
    return int(_backup_metadata(output_dir).get("epoch", 0))


def _start_time(output_dir, resumed_from):
    """`time.perf_counter()` of the run's start; a resumed run counts the time its interrupted
    epochs spent (saved with the backup), so its budget and schedule go on where they stopped."""
    metadata = _backup_metadata(output_dir) if resumed_from else {}
    return time.perf_counter() - float(metadata.get("elapsed_seconds", 0.0))


def _backup_metadata(output_dir):
    """The backup's `training_metadata.json` (epoch, batch, elapsed seconds), or `{}`."""
    path = os.path.join(os.fspath(output_dir), BACKUP_DIR, "training_metadata.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _stop_reason(history, built_in):
    budget, stopping = built_in.get("budget"), built_in.get("early_stopping")
    if any(not math.isfinite(float(v)) for v in history.history.get("loss", [])):
        return "nan"
    if budget is not None and budget.stopped:
        return "budget"
    if stopping is not None and stopping.stopped_epoch > 0:
        return "early_stopping"
    return "epochs"


def _restore_best(network, output_dir, best, last_epoch):
    """Loads the best checkpoint unless the last epoch is the best; returns whether it did."""
    checkpoint = os.path.join(output_dir, CHECKPOINT)
    if best is None or best["epoch"] == last_epoch or not os.path.isfile(checkpoint):
        return False
    network.load_weights(checkpoint)
    return True


def _average_weights(network, average, validation_data, best):
    """Sets the mean of the kept epochs' weights if it is no worse (see `fit`); returns a summary."""
    if len(average.epochs) < 2:
        return None
    mean = average.average()
    current = [keras.ops.convert_to_numpy(w) for w in network.trainable_weights]
    for variable, value in zip(network.trainable_weights, mean, strict=True):
        variable.assign(value)
    value = None
    if validation_data is not None:
        data = validation_data if isinstance(validation_data, tuple) else (validation_data,)
        logs = network.evaluate(*data, verbose=0, return_dict=True)  # (x, y[, w]) as fit takes
        value = float(logs["loss"])
    kept = value is None or (
        math.isfinite(value) and (best is None or value <= best["value"])
    )
    if not kept:
        for variable, array in zip(network.trainable_weights, current, strict=True):
            variable.assign(array)
    return {"epochs": list(average.epochs), "value": value, "kept": kept}


def _network_loss_metrics(model, loss, metrics):
    if isinstance(model, Task):
        network = model.training_network()
        loss = model.loss() if loss is None else loss
        metrics = model.metrics() if metrics is None else metrics
    elif isinstance(model, keras.Model):
        network = model
    else:
        raise ValueError(
            "fit: `model` must be a keras.Model or a keras_attention.tasks.Task. "
            f"Received: model={type(model).__name__}"
        )
    if loss is None:
        raise ValueError("fit: a keras.Model needs a `loss`. Received: loss=None")
    return network, loss, list(metrics or ())


def _array_dataset(arrays, config):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays).batch(config.batch_size)


def _callbacks(config, output_dir, monitor, best, start, train_dataset, resumed_from):
    """The built-in callbacks, by role, in the order they run."""
    # The backup last of the three: an epoch is marked finished only once its checkpoint and
    # best record are written (a kill in between re-runs the epoch).
    callbacks = {
        "checkpoint": FiniteModelCheckpoint(
            os.path.join(output_dir, CHECKPOINT),
            monitor=monitor,
            save_best_only=True,
            initial_value_threshold=None if best is None else best["value"],
        ),
        "best": BestValue(os.path.join(output_dir, BEST_FILE), monitor, initial=best),
    }
    if config.average_last_epochs is not None:  # written before the backup, as the checkpoint
        callbacks["average"] = WeightAverage(
            config.average_last_epochs, os.path.join(output_dir, AVERAGE_DIR), resumed_from
        )
    callbacks |= {
        "backup": SafeBackupAndRestore(os.path.join(output_dir, BACKUP_DIR), start=start),
        "tensorboard": keras.callbacks.TensorBoard(
            os.path.join(output_dir, LOG_DIR), write_graph=False
        ),
        "nan": keras.callbacks.TerminateOnNaN(),
    }
    if config.schedule != "constant" or config.warmup_steps:
        steps = _steps_per_epoch(train_dataset)
        if steps is None and config.schedule != "constant" and config.budget_seconds is None:
            raise ValueError(
                f"fit: schedule={config.schedule!r} decays over the run's steps, and the training "
                "data's number of batches is unknown (e.g. after `filter`): the rate would stay "
                "at its peak. Give the dataset its size (`dataset.apply(tf.data.experimental."
                "assert_cardinality(batches))`), a `budget_minutes`, or schedule='constant'."
            )
        callbacks["schedule"] = LearningRateSchedule(
            config.learning_rate,
            config.warmup_steps,
            config.schedule,
            total_steps=None if steps is None else steps * config.epochs,
            budget_seconds=config.budget_seconds,
            start=start,
            initial_step=0 if steps is None else steps * resumed_from,
        )
    if config.budget_seconds is not None:
        callbacks["budget"] = WallClockBudget(start, config.budget_seconds)
    if config.early_stopping_patience is not None:
        callbacks["early_stopping"] = ResumedEarlyStopping(
            monitor=monitor, patience=config.early_stopping_patience, best=best,
            resumed_from=resumed_from,
        )  # fmt: skip
    return callbacks


def _steps_per_epoch(dataset):
    cardinality = getattr(dataset, "cardinality", None)
    if cardinality is None:
        return None
    steps = int(cardinality())
    return steps if steps > 0 else None
