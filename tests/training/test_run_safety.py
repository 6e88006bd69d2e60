"""Runs that cannot mix or lose work: fingerprints on resume, one process per run, NaN stops.

Each test drives `keras-attention train` (in this process, or as real processes where a
process's death matters) the way a user would.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

import keras_attention
from keras_attention import cli, training
from keras_attention.tasks import Captioner, CaptioningConfig, TranslationConfig, Translator
from keras_attention.training import fingerprint
from keras_attention.training.fit import FitResult
from keras_attention.training.lock import LOCK_FILE, run_lock
from keras_attention.training.run import _check_resumable, _description, _finish
from keras_attention.utils.options import to_dict
from pipelines import synthetic

SIZES = ["--embedding-dim", "8", "--units", "8", "--vocabulary-size", "200", "--verbose", "0"]
# The same tiny translator for `training.train_translation` (each test adds its epochs).
TINY_RUN = {"embedding_dim": 8, "units": 8, "vocabulary_size": 200, "verbose": 0, "batch_size": 32}
LOCK_MODULE = os.path.join(os.path.dirname(keras_attention.__file__), "training", "lock.py")


def _write_pairs(directory, count, seed, prefix=""):
    pairs = synthetic.dates(count, seed=seed)
    src, tgt = directory / f"{prefix}src.txt", directory / f"{prefix}tgt.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return str(src), str(tgt)


def _interrupted_run(run, given, fit_config=None, valid=None, **config):
    """A run directory as an interrupted `train translation` leaves it (backup, assets, run.json)."""
    (run / "backup").mkdir(parents=True)
    (run / "assets").mkdir()
    description = _description(
        Translator, TranslationConfig(**config), fit_config or training.FitConfig(),
        Translator.read_data(given), None if valid is None else Translator.read_data(valid),
        (given, valid),
    )  # fmt: skip
    (run / "run.json").write_text(json.dumps(description))


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _train_argv(src, tgt, run, *more):
    return ["train", "translation", "--src-file", src, "--tgt-file", tgt, "--output-dir", str(run),
            *SIZES, *more]  # fmt: skip


# -- fingerprint: options ---------------------------------------------------------------------


def test_resume_refuses_other_fit_and_task_options_naming_both_values(tmp_path, capsys):
    src, tgt = _write_pairs(tmp_path, 20, seed=0)
    run = tmp_path / "run"
    _interrupted_run(run, (src, tgt), embedding_dim=8, units=8, vocabulary_size=200)
    assert (
        cli.main(_train_argv(src, tgt, run, "--learning-rate", "0.01", "--batch-size", "32")) == 2
    )
    err = capsys.readouterr().err
    assert "was started with batch_size=64, learning_rate=0.001" in err
    assert "Received: batch_size=32, learning_rate=0.01" in err and "--no-resume" in err
    # A task option that is not a model size but changes the training: refused too.
    assert cli.main(_train_argv(src, tgt, run, "--label-smoothing", "0.1")) == 2
    err = capsys.readouterr().err
    assert "label_smoothing=0.0" in err and "Received: label_smoothing=0.1" in err
    assert cli.main(_train_argv(src, tgt, run, "--seed", "3")) == 2
    assert "seed=0" in capsys.readouterr().err
    assert (run / "backup").is_dir() and not (run / "task.json").exists()


def test_how_long_and_how_loud_may_change_on_resume():
    defaults = {"config": {}, "fit": to_dict(training.FitConfig())}

    def description(**fit):
        return {"config": {}, "fit": {**defaults["fit"], **fit}}

    saved = description()
    now = description(epochs=20, verbose=0, budget_minutes=5.0)
    assert fingerprint.option_differences(saved, now, defaults) == []
    # The devices: the global batch, hence every step, is the same under each strategy.
    now = description(strategy="mirrored", cpu_replicas=2)
    assert fingerprint.option_differences(saved, now, defaults) == []
    assert fingerprint.option_differences(saved, description(seed=7), defaults) == [
        ("seed", training.FitConfig().seed, 7)
    ]
    # With the cosine schedule the epochs set the decay: a change is refused.
    saved, now = description(schedule="cosine"), description(schedule="cosine", epochs=20)
    assert fingerprint.option_differences(saved, now, defaults) == [("epochs", 10, 20)]
    # A run file written before a field existed: compared with the field's default.
    old = {"config": {}, "fit": {k: v for k, v in defaults["fit"].items() if k != "clipnorm"}}
    assert fingerprint.option_differences(old, description(clipnorm=1.0), defaults) == [
        ("clipnorm", None, 1.0)
    ]


# -- fingerprint: data ------------------------------------------------------------------------


def test_resume_names_the_data_file_that_changed(tmp_path, capsys):
    src, tgt = _write_pairs(tmp_path, 20, seed=0)
    run = tmp_path / "run"
    _interrupted_run(run, (src, tgt), embedding_dim=8, units=8, vocabulary_size=200)
    with open(tgt, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[3] = "1999-01-01"
    with open(tgt, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    assert cli.main(_train_argv(src, tgt, run)) == 2
    err = capsys.readouterr().err
    assert "was started on other train data" in err
    assert f"the train data file '{os.path.abspath(tgt)}' changed" in err
    assert "src.txt" not in err.split("changed")[0].split("file")[-1]
    assert (run / "backup").is_dir()


def test_resume_names_other_files_and_validation_data(tmp_path, capsys):
    src, tgt = _write_pairs(tmp_path, 20, seed=0)
    other_src, other_tgt = _write_pairs(tmp_path, 20, seed=5, prefix="other_")
    run = tmp_path / "run"
    _interrupted_run(run, (src, tgt), embedding_dim=8, units=8, vocabulary_size=200)
    assert cli.main(_train_argv(other_src, other_tgt, run)) == 2
    err = capsys.readouterr().err
    assert f"read from '{os.path.abspath(src)}', '{os.path.abspath(tgt)}'" in err
    assert f"not '{os.path.abspath(other_src)}'" in err
    # Validation data added to a run started without: refused, naming the split.
    argv = _train_argv(src, tgt, run, "--valid-src-file", other_src, "--valid-tgt-file", other_tgt)
    assert cli.main(argv) == 2
    assert "started without valid data" in capsys.readouterr().err


def test_images_are_fingerprinted_by_content(tmp_path):
    """A captioner's images changed on disk (same captions file, same names): refused."""
    files = synthetic.write_shape_scenes(tmp_path / "scenes", 4, seed=0, captions_per_image=1)
    given = (files["images"], files["coco"], False)
    config, fit_config = CaptioningConfig(), training.FitConfig()
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "assets").mkdir()
    saved = _description(Captioner, config, fit_config, Captioner.read_data(given), None,
                         (given, None))  # fmt: skip
    (run / "run.json").write_text(json.dumps(saved))
    now = _description(Captioner, config, fit_config, Captioner.read_data(given), None,
                       (given, None))  # fmt: skip
    _check_resumable(str(run), now, config)  # unchanged: resumable
    paths, _ = Captioner.read_data(given)
    with open(paths[2], "rb") as f:
        other = f.read()
    with open(paths[1], "wb") as f:
        f.write(other)  # scene 1 now shows scene 2
    now = _description(Captioner, config, fit_config, Captioner.read_data(given), None,
                       (given, None))  # fmt: skip
    with pytest.raises(ValueError, match=r"other train data: the files its train data names"):
        _check_resumable(str(run), now, config)


# -- one process per run directory --------------------------------------------------------------


def _hold_lock(directory):
    """A process that holds the run lock of `directory` (lock.py loaded alone: no TensorFlow)."""
    code = (
        "import importlib.util, sys, time\n"
        "spec = importlib.util.spec_from_file_location('lock', sys.argv[1])\n"
        "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
        "held = lock.run_lock(sys.argv[2]); held.__enter__()\n"
        "print('locked', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, LOCK_MODULE, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    src, tgt = _write_pairs(tmp_path, 20, seed=0)
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        start = time.perf_counter()
        assert cli.main(_train_argv(src, tgt, run)) == 2
        assert time.perf_counter() - start < 10  # refused before any data or model work
        err = capsys.readouterr().err
        assert f"'{run}' is in use: process PID {holder.pid} is training into it" in err
        assert sorted(os.listdir(run)) == [LOCK_FILE]  # nothing written, nothing removed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(run):  # the OS released the lock of the killed process
        assert _read(run / LOCK_FILE).strip() == str(os.getpid())
    assert not (run / LOCK_FILE).exists()  # released and removed on exit


@pytest.mark.slow
def test_two_cli_processes_on_one_output_dir(tmp_path):
    """Real `keras-attention train` processes: the second is refused at once; after the first is
    SIGKILLed a third one trains."""
    src, tgt = _write_pairs(tmp_path, 64, seed=0)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "keras_attention.cli", *_train_argv(src, tgt, run)[:]]
    first = subprocess.Popen([*command, "--epochs", "500", "--batch-size", "8"])
    try:
        deadline = time.monotonic() + 120
        while not (run / LOCK_FILE).is_file() or not _read(run / LOCK_FILE).strip():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        start = time.monotonic()
        second = subprocess.run([*command, "--epochs", "500", "--batch-size", "8"],
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"process PID {first.pid} is training into it" in second.stderr
        assert str(run) in second.stderr
        assert time.monotonic() - start < 60  # the import of TensorFlow, no training
        assert first.poll() is None  # the first one trains on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = subprocess.run([*command, "--epochs", "1", "--no-resume"], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert third.returncode == 0, third.stderr
    assert (run / "task.json").is_file()


# -- NaN / inf ----------------------------------------------------------------------------------


def test_a_loss_that_becomes_nan_exits_non_zero_and_saves_no_task(tmp_path, capsys):
    src, tgt = _write_pairs(tmp_path, 64, seed=0)
    run = tmp_path / "run"
    argv = _train_argv(src, tgt, run, "--learning-rate", "1e38", "--epochs", "2")
    assert cli.main(argv + ["--batch-size", "32"]) == 2
    err = capsys.readouterr().err
    assert "stopped being finite" in err and "in epoch 1" in err
    assert "No epoch finished with a finite loss" in err and "--learning-rate" in err
    assert not (run / "task.json").exists() and not (run / "model.weights.h5").exists()
    assert not (run / "checkpoints" / "best.keras").exists()  # no NaN model as the "best"
    assert json.loads((run / "run.json").read_text()).get("result") is None


class _NaNInEpoch(keras.callbacks.Callback):
    """Sets the weights to NaN in one epoch: the loss stops being finite there."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self._epoch = None

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == self.epoch and batch == 0:
            self.model.set_weights([np.full_like(w, np.nan) for w in self.model.get_weights()])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint_and_backup(
    tmp_path, capsys, monkeypatch
):
    src, tgt = _write_pairs(tmp_path, 64, seed=0)
    run = tmp_path / "run"
    argv = _train_argv(src, tgt, run, "--epochs", "3", "--batch-size", "32")
    train = training.train
    monkeypatch.setattr(
        training, "train", lambda *a, **k: train(*a, **k, callbacks=[_NaNInEpoch(1)])
    )
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "stopped being finite: the training loss became nan in epoch 2" in err
    assert f"the best checkpoint {run / 'checkpoints' / 'best.keras'}" in err
    assert f"the backup of the last good epoch {run / 'backup'}" in err
    assert not (run / "task.json").exists()
    # The best checkpoint is epoch 1's, finite; the backup holds epoch 1, finite.
    assert json.loads((run / "checkpoints" / "best.json").read_text())["epoch"] == 1
    best = keras.saving.load_model(run / "checkpoints" / "best.keras", compile=False)
    assert all(np.isfinite(w).all() for w in best.get_weights())
    backup = run / "backup"
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    with h5py.File(backup / "latest.weights.h5") as f:
        arrays = []
        f.visititems(lambda _, v: arrays.append(v[()]) if isinstance(v, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")
    # Nothing is lost: the same command resumes after epoch 1 and finishes.
    monkeypatch.setattr(training, "train", train)
    assert cli.main(argv) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert (run / "task.json").is_file() and not backup.exists()


def test_a_validation_loss_that_is_not_finite_saves_no_task(tmp_path):
    result = FitResult(history={"loss": [1.0, 0.9], "val_loss": [1.1, math.nan]}, epochs=[0, 1],
                       resumed_from=0, train_seconds=1.0, stop_reason="epochs", best=None,
                       restored_best=False)  # fmt: skip
    with pytest.raises(ValueError, match="the validation loss became nan in epoch 2"):
        _finish(str(tmp_path), None, {}, result)
    assert os.listdir(tmp_path) == []


# -- a crash while the result is saved ----------------------------------------------------------


def test_a_crash_while_saving_the_task_resumes_with_nothing_left_to_train(tmp_path, monkeypatch):
    """The backup outlives training until the task is saved: nothing is trained twice or lost."""
    pairs = synthetic.dates(64, seed=0)
    options = {**TINY_RUN, "epochs": 2}
    run = tmp_path / "run"
    save = Translator.save

    def crash(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(Translator, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        training.train_translation(pairs, run, **options)
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    monkeypatch.setattr(Translator, "save", save)
    again = training.train_translation(pairs, run, **options)
    assert again.resumed_from == 2 and again.epochs == []
    assert (run / "task.json").is_file() and not (run / "backup").exists()
    assert json.loads((run / "run.json").read_text())["result"]["epochs"] == 2


def test_a_kill_inside_the_assets_swap_leaves_a_run_that_resumes(tmp_path, monkeypatch):
    """`Task.save` swaps `assets/` in by renames: a kill between them loses neither copy."""
    pairs = synthetic.dates(64, seed=0)
    options = {**TINY_RUN, "epochs": 1}
    run = tmp_path / "run"
    replace = os.replace

    def killed_moving_the_new_assets_in(source, target):
        if os.path.basename(source).startswith(".assets-"):
            raise OSError("killed")
        return replace(source, target)

    monkeypatch.setattr(os, "replace", killed_moving_the_new_assets_in)
    with pytest.raises(OSError, match="killed"):
        training.train_translation(pairs, run, **options)
    monkeypatch.setattr(os, "replace", replace)
    assert not (run / "assets").exists() and (run / "assets.old").is_dir()
    assert not (run / "task.json").exists()  # not a task while it is rewritten
    again = training.train_translation(pairs, run, **options)  # recovered, nothing to train
    assert again.resumed_from == 1 and again.epochs == []
    assert Translator.load(run).translate(["3 mar 2021"]) == again.task.translate(["3 mar 2021"])
    assert not (run / "assets.old").exists()


def test_a_directory_of_other_files_is_refused_unless_overwrite(tmp_path, capsys):
    pairs = synthetic.dates(32, seed=0)
    options = {**TINY_RUN, "epochs": 1}
    mine = tmp_path / "mine"
    (mine / "assets").mkdir(parents=True)
    (mine / "assets" / "notes.txt").write_text("my notes")
    (mine / "cache").mkdir()
    with pytest.raises(FileExistsError, match=r"is not empty \(assets, cache\) and holds no "
                                              r"keras-attention run"):  # fmt: skip
        training.train_translation(pairs, mine, **options)
    assert (mine / "assets" / "notes.txt").read_text() == "my notes" and (mine / "cache").is_dir()
    assert sorted(os.listdir(mine)) == ["assets", "cache"]  # nothing written, not even a lock
    src, tgt = _write_pairs(tmp_path, 32, 0)
    assert cli.main(_train_argv(src, tgt, mine, "--epochs", "1")) == 2
    assert "add --overwrite" in capsys.readouterr().err
    training.train_translation(pairs, mine, overwrite=True, **options)  # asked for
    assert (mine / "task.json").is_file()
    # An empty directory, and one holding only other workers' directories of a multi-worker
    # run (made before the chief writes its run.json), need nothing.
    (tmp_path / "empty").mkdir()
    training.train_translation(pairs, tmp_path / "empty", **options)
    (tmp_path / "workers" / "worker-1").mkdir(parents=True)
    training.train_translation(pairs, tmp_path / "workers", **options)


def test_a_run_records_checkpoint_averaging(tmp_path, monkeypatch):
    """`--average-last-epochs`: the run's result says which epochs were averaged and if kept,
    also after a kill while the task was saved (the last epochs' weights are on disk)."""
    pairs = synthetic.dates(64, seed=0)
    options = {"embedding_dim": 8, "units": 8, "vocabulary_size": 200, "verbose": 0, "epochs": 3,
               "batch_size": 32, "average_last_epochs": 2, "valid_data": pairs[:32]}  # fmt: skip
    save = Translator.save

    def crash(self, directory):
        raise OSError("killed")

    monkeypatch.setattr(Translator, "save", crash)
    with pytest.raises(OSError, match="killed"):
        training.train_translation(pairs, tmp_path / "run", **options)
    monkeypatch.setattr(Translator, "save", save)
    average = tmp_path / "run" / "average"
    assert sorted(os.listdir(average)) == ["epoch-2.npz", "epoch-3.npz"]
    with np.load(average / "epoch-2.npz") as one, np.load(average / "epoch-3.npz") as two:
        mean = [(one[f"arr_{i}"] + two[f"arr_{i}"]) / 2 for i in range(len(one.files))]
    run = training.train_translation(pairs, tmp_path / "run", **options)  # nothing to train
    assert run.resumed_from == 3 and run.epochs == []
    assert run.averaged["epochs"] == [2, 3] and isinstance(run.averaged["kept"], bool)
    assert not average.exists() and not (tmp_path / "run" / "backup").exists()
    if run.averaged["kept"]:
        trained = [keras.ops.convert_to_numpy(w) for w in run.task.model.trainable_weights]
        for got, want in zip(trained, mean, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["result"]["averaged"]
    assert recorded == run.averaged
    # The saved task holds the weights the run ended with (the mean when it was kept).
    reloaded = Translator.load(tmp_path / "run")
    for saved, final in zip(reloaded.model.get_weights(), run.task.model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, final)
