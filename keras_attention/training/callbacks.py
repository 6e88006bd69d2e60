"""Keras callbacks of the generic fit: time budget, learning-rate schedule, throughput, best value."""

import collections
import contextlib
import contextvars
import json
import math
import os
import re
import shutil
import time

import keras
import numpy as np

from keras_attention.utils.files import write_json


class WallClockBudget(keras.callbacks.Callback):
    """Stops training when the budget, counted from `start`, is spent.

    After every batch: stop if less time is left than the last validation pass
    took (validation and checkpointing still run after the stop, inside the
    budget).

    Args:
        start: `time.perf_counter()` when the budget started.
        budget_seconds: the budget.

    Attributes:
        stopped: whether this callback stopped training.
        validation_seconds: the time spent in validation passes.
    """

    def __init__(self, start, budget_seconds):
        super().__init__()
        self.start, self.budget_seconds = start, float(budget_seconds)
        self.validation_seconds = 0.0
        self.stopped = False
        self._last_validation = 0.0
        self._test_begin = None

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self.start
        if elapsed + self._last_validation >= self.budget_seconds:
            self.model.stop_training = True
            self.stopped = True

    def on_test_begin(self, logs=None):
        self._test_begin = time.perf_counter()

    def on_test_end(self, logs=None):
        self._last_validation = time.perf_counter() - self._test_begin
        self.validation_seconds += self._last_validation


class LearningRateSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every batch: warmup, then constant or cosine.

    `lr = peak * min(1, step / warmup_steps) * f(progress)` where `f` is `1`
    (`"constant"`) or `min_ratio + (1 - min_ratio) * (1 + cos(pi * progress)) / 2`
    (`"cosine"`), and `progress` is the larger of the fraction of
    `total_steps` done and the fraction of `budget_seconds` spent since
    `start` (whichever is known), so the decay fits a step count or a time
    budget without knowing the other.

    Args:
        peak: the peak learning rate.
        warmup_steps: int >= 0, linear warmup steps (`0`: none).
        schedule: `"constant"` or `"cosine"`.
        total_steps: optional, the steps of the whole run.
        budget_seconds: optional time budget, counted from `start`.
        start: `time.perf_counter()` when the budget started (with
            `budget_seconds`).
        min_ratio: the cosine's floor, a fraction of `peak`. Defaults to
            `0.05`.
        initial_step: the steps done before (a resumed run). Defaults to `0`.
    """

    def __init__(self, peak, warmup_steps=0, schedule="constant", total_steps=None,
                 budget_seconds=None, start=None, min_ratio=0.05, initial_step=0):  # fmt: skip
        super().__init__()
        self.peak, self.warmup_steps, self.schedule = float(peak), int(warmup_steps), schedule
        self.total_steps, self.budget_seconds = total_steps, budget_seconds
        self.start = time.perf_counter() if start is None else start
        self.min_ratio = float(min_ratio)
        self.step = int(initial_step)

    def rate(self):
        """The learning rate of the current step."""
        warmup = min(1.0, self.step / self.warmup_steps) if self.warmup_steps else 1.0
        if self.schedule == "constant":
            return self.peak * warmup
        progress = 0.0
        if self.total_steps:
            progress = self.step / self.total_steps
        if self.budget_seconds:
            progress = max(progress, (time.perf_counter() - self.start) / self.budget_seconds)
        progress = min(progress, 1.0)
        cosine = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.peak * warmup * cosine

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        self.model.optimizer.learning_rate = self.rate()


class ThroughputMeter(keras.callbacks.Callback):
    """Tokens per second of training batches, with and without tracing.

    A batch's time is from `on_train_batch_begin` to `on_train_batch_end` (the
    step has run when the call returns); its tokens come from a metric that
    counts them over the epoch (`keras_attention.tasks.TargetTokens`, logged
    as `count_metric`). Batches whose time per token is more than 5 times the
    median are counted as tracing (the first batch, and the retrace when a
    new shape generalises the traced function) and left out of
    `tokens_per_second`; `tokens_per_second_overall` is all tokens over the
    whole training time (tracing and validation included).

    Args:
        count_metric: the name of the counting metric in the logs. Defaults
            to `"target_tokens"`.
    """

    def __init__(self, count_metric="target_tokens"):
        super().__init__()
        self.count_metric = count_metric
        self.batches = []  # (seconds, tokens)
        self.steps = 0
        self._epoch_tokens = 0.0
        self._start = self._batch_begin = None
        self._seconds = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_train_end(self, logs=None):
        self._seconds = time.perf_counter() - self._start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_tokens = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._batch_begin
        total = float(logs[self.count_metric])
        self.batches.append((seconds, total - self._epoch_tokens))
        self._epoch_tokens = total
        self.steps += 1

    def summary(self):
        """Tokens, tokens per second (steady and overall), tracing left out."""
        if not self.batches:
            return {"target_tokens": 0, "tokens_per_second": 0.0}
        per_token = sorted(s / max(n, 1.0) for s, n in self.batches)
        limit = 5 * per_token[len(per_token) // 2]
        steady = [(s, n) for s, n in self.batches if s / max(n, 1.0) <= limit]
        total_tokens = sum(n for _, n in self.batches)
        return {
            "target_tokens": int(total_tokens),
            "tokens_per_second": sum(n for _, n in steady) / sum(s for s, _ in steady),
            "tokens_per_second_overall": total_tokens / max(self._seconds, 1e-9),
            "longest_batch_seconds": round(max(s for s, _ in self.batches), 1),
            "tracing_batches_excluded": len(self.batches) - len(steady),
            "tracing_seconds_excluded": round(
                sum(s for s, n in self.batches if s / max(n, 1.0) > limit), 1
            ),
        }


class WeightAverage(keras.callbacks.Callback):
    """Keeps the trainable weights after each of the last `count` epochs (checkpoint averaging).

    An epoch whose loss is not finite is not kept. The snapshots live in
    memory (`count` copies of the trainable weights) and, with `directory`,
    also on disk (`epoch-<N>.npz`, each written atomically before the epoch's
    backup), so a resumed run averages the same epochs as an uninterrupted
    one, even one killed after its last epoch.

    Args:
        count: int >= 2, the number of epochs to average.
        directory: optional folder for the snapshot files. Defaults to `None`
            (memory only).
        resumed_from: the epochs the resumed run already finished: their
            snapshot files are read back (later ones, of an epoch whose backup
            was never written, are removed). `0` starts over.

    Attributes:
        epochs: the 1-based epoch numbers of the kept snapshots, oldest first.

    Example:

    >>> import numpy as np
    >>> inputs = keras.Input((2,))
    >>> net = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    >>> average = WeightAverage(2)
    >>> average.set_model(net)
    >>> for epoch, value in enumerate([1.0, 2.0, 4.0]):
    ...     net.set_weights([np.full((2, 1), value)])
    ...     average.on_epoch_end(epoch, {"loss": 0.5})
    >>> average.epochs, average.average()[0].ravel().tolist()
    ([2, 3], [3.0, 3.0])
    """

    def __init__(self, count, directory=None, resumed_from=0):
        super().__init__()
        self._snapshots = collections.deque(maxlen=int(count))  # (epoch, weights), oldest first
        self.directory = None if directory is None else os.fspath(directory)
        self._not_finite = False
        if self.directory is not None:
            self._read_snapshots(int(resumed_from))

    @property
    def epochs(self):
        return [epoch for epoch, _ in self._snapshots]

    def _file(self, epoch):
        return os.path.join(self.directory, f"epoch-{epoch}.npz")

    def _saved_epochs(self):
        names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
        epochs = (int(n[6:-4]) for n in names if re.fullmatch(r"epoch-[0-9]+\.npz", n))
        return sorted(e for e in epochs if f"epoch-{e}.npz" in names)  # ours: no "epoch-01"

    def _read_snapshots(self, resumed_from):
        if not resumed_from:
            shutil.rmtree(self.directory, ignore_errors=True)
            return
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else []:
            if name.endswith(".tmp"):  # a write a kill interrupted
                os.remove(os.path.join(self.directory, name))
        for epoch in self._saved_epochs():
            if epoch > resumed_from:  # trained again by this run
                os.remove(self._file(epoch))
            elif epoch > resumed_from - self._snapshots.maxlen:
                with np.load(self._file(epoch), allow_pickle=False) as data:
                    weights = [data[f"arr_{i}"] for i in range(len(data.files))]
                self._snapshots.append((epoch, weights))

    def on_train_begin(self, logs=None):
        shapes = [tuple(w.shape) for w in self.model.trainable_weights]
        for epoch, weights in self._snapshots:
            if [w.shape for w in weights] != shapes:
                raise ValueError(
                    f"WeightAverage: the snapshot {self._file(epoch)!r} does not hold this "
                    "model's trainable weights; start over (resume=False, command line: "
                    "--no-resume) or remove the folder."
                )

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._not_finite = True
            return
        weights = [np.array(keras.ops.convert_to_numpy(w)) for w in self.model.trainable_weights]
        self._snapshots.append((epoch + 1, weights))
        if self.directory is not None:
            self._write_snapshot(epoch + 1, weights)

    def on_train_end(self, logs=None):
        # The files go with the backup (see `SafeBackupAndRestore`); the snapshots stay in memory.
        if self.directory is not None and not self._not_finite and not _KEEP_BACKUP.get():
            shutil.rmtree(self.directory, ignore_errors=True)

    def _write_snapshot(self, epoch, weights):
        os.makedirs(self.directory, exist_ok=True)
        staged = self._file(epoch) + ".tmp"
        with open(staged, "wb") as f:
            np.savez(f, *weights)
        os.replace(staged, self._file(epoch))  # a kill leaves the whole file or none
        for old in self._saved_epochs():
            if old not in self.epochs:
                os.remove(self._file(old))

    def average(self):
        """The mean of the kept snapshots, one array per trainable weight (`None` if none kept)."""
        if not self._snapshots:
            return None
        stacks = zip(*(weights for _, weights in self._snapshots), strict=True)
        return [np.mean(np.stack(stack), axis=0) for stack in stacks]


class BestValue(keras.callbacks.Callback):
    """Keeps `{"monitor", "epoch", "value"}` of the best epoch in a JSON file.

    `ModelCheckpoint(save_best_only=True)` forgets its best value when a run
    is interrupted; the generic fit reads this file back on resume
    (`initial_value_threshold`), so a resumed run never replaces a better
    checkpoint with a worse one.

    Args:
        path: the JSON file.
        monitor: the logged value, lower is better.
        initial: the best value so far (a resumed run). Defaults to `None`.
    """

    def __init__(self, path, monitor, initial=None):
        super().__init__()
        self.path, self.monitor = os.fspath(path), monitor
        self.best = initial

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is None or float(value) < self.best["value"]:
            self.best = {"monitor": self.monitor, "epoch": epoch + 1, "value": float(value)}
            write_json(self.path, self.best)  # atomic: a kill leaves the old record or the new

    @staticmethod
    def read(path, monitor):
        """The best record in `path` for `monitor`, or `None`."""
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            try:
                best = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"'{path}' (the best epoch of the interrupted run) is not valid JSON: {error}. "
                    "Start over (resume=False, command line: --no-resume) or restore the file."
                ) from None
        return best if isinstance(best, dict) and best.get("monitor") == monitor else None


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that a resumed run continues instead of starting over.

    Keras's callback forgets its best value and patience count at the start of
    every `fit`; a run resumed after `resumed_from` epochs starts from the
    saved best record (`BestValue`: `{"epoch" (1-based), "value"}`), having
    waited `resumed_from - epoch` epochs since it.
    """

    def __init__(self, monitor, patience, best=None, resumed_from=0):
        super().__init__(monitor=monitor, patience=patience)
        self._resume = (best, int(resumed_from))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, resumed_from = self._resume
        if best is not None and resumed_from:
            self.best = float(best["value"])
            self.wait = max(0, resumed_from - int(best["epoch"]))


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that a kill at any moment or a NaN cannot spoil.

    Differences from Keras's callback (which it otherwise is: the backup after
    every epoch, restored by the next `fit` on the same directory):

    - the backup is written into `<backup_dir>.staged` and swapped in by
      renames, so a process killed while writing leaves the previous backup
      (`recover_backup` finishes or undoes a half-done swap);
    - it also keeps the state of the model's random seed generators
      (dropout), which `save_weights` leaves out, so a resumed run draws the
      same dropout masks as an uninterrupted one;
    - an epoch whose loss is not finite is not backed up, and the backup of the
      last finite epoch is kept at the end (`stopped_on_nan`);
    - inside `keep_backup_until_saved()` the backup outlives training: the
      caller removes it once the result is saved (`train` does), so a process
      killed while saving resumes with nothing left to train instead of
      starting over.

    Args:
        backup_dir: the backup directory.
    """

    def __init__(self, backup_dir, start=None):
        super().__init__(os.fspath(backup_dir))
        self.stopped_on_nan = False
        self.start = start  # `time.perf_counter()` of the run's start: the elapsed time is kept

    def on_train_begin(self, logs=None):
        recover_backup(self.backup_dir)
        super().on_train_begin(logs)
        path = os.path.join(self.backup_dir, _SEED_STATES)
        if os.path.isfile(path):
            with np.load(path) as saved:
                states = [saved[f"state_{i}"] for i in range(len(saved.files))]
            variables = _seed_states(self.model)
            if len(states) == len(variables):
                for variable, value in zip(variables, states, strict=True):
                    variable.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        # Every logged loss (validation too) and every weight finite, or no backup: a NaN from
        # the epoch's last step leaves a finite mean loss but NaN weights and `val_loss`.
        losses = [v for k, v in (logs or {}).items() if k == "loss" or k.endswith("_loss")]
        if not all(math.isfinite(float(v)) for v in losses) or not _finite_weights(self.model):
            self.stopped_on_nan = True
            return
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if not self.stopped_on_nan and not _KEEP_BACKUP.get():
            super().on_train_end(logs)

    def _save_model(self):
        staged = self.backup_dir + _STAGED
        shutil.rmtree(staged, ignore_errors=True)
        os.makedirs(staged)
        self.model.save_weights(os.path.join(staged, os.path.basename(self._weights_path)))
        states = {
            f"state_{i}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(_seed_states(self.model))
        }
        np.savez(os.path.join(staged, _SEED_STATES), **states)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        if self.start is not None:
            metadata["elapsed_seconds"] = time.perf_counter() - self.start
        with open(os.path.join(staged, os.path.basename(self._training_metadata_path)), "w") as f:
            json.dump(metadata, f)
        old = self.backup_dir + _OLD
        if os.path.isdir(self.backup_dir):
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.backup_dir, old)
        os.rename(staged, self.backup_dir)
        shutil.rmtree(old, ignore_errors=True)


class FiniteModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that never saves an epoch whose monitored value is NaN/inf.

    Keras's callback saves the first epoch whatever its value (its best starts
    as `None`), so a run whose loss is NaN from the start would leave a NaN
    model as its "best" checkpoint.
    """

    def _should_save_model(self, epoch, batch, logs, filepath):
        value = (logs or {}).get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            return False
        return super()._should_save_model(epoch, batch, logs, filepath)


@contextlib.contextmanager
def keep_backup_until_saved():
    """Inside: `SafeBackupAndRestore` leaves its backup at the end of training for the caller."""
    token = _KEEP_BACKUP.set(True)
    try:
        yield
    finally:
        _KEEP_BACKUP.reset(token)


def recover_backup(backup_dir):
    """Finishes or undoes a backup swap that a killed process left half done.

    `SafeBackupAndRestore` renames `backup` to `backup.old`, then
    `backup.staged` to `backup`: when `backup` is missing the old one is put
    back; a staged copy that was never swapped in is removed.
    """
    backup_dir = os.fspath(backup_dir)
    old = backup_dir + _OLD
    if not os.path.isdir(backup_dir) and os.path.isdir(old):
        os.rename(old, backup_dir)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(backup_dir + _STAGED, ignore_errors=True)


_STAGED, _OLD = ".staged", ".old"
_KEEP_BACKUP = contextvars.ContextVar("keep_backup", default=False)
_SEED_STATES = "seed_states.npz"


def _finite_weights(model):
    """Whether every weight of `model` is finite."""
    return all(
        np.isfinite(keras.ops.convert_to_numpy(weight)).all()
        for weight in model.weights
        if keras.backend.standardize_dtype(weight.dtype).startswith(("float", "bfloat"))
    )


def _seed_states(model):
    """The model's seed-generator state variables (in `variables`, not in `weights`)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights and "seed_generator" in v.path]
