"""SIGKILL a `keras-attention train` process mid-epoch, start it again: the same run as without.

The run: a tiny RNN translator with dropout (so the dropout draws matter too) on generated
dates, 3 epochs of 100 steps. One process trains uninterrupted; another is killed with SIGKILL
(no handler runs) in its second epoch, after the first epoch's backup exists, then the same
command is started again. The resumed run must end after the same epochs with the same final
loss, best checkpoint value and weights.

Tolerance: both runs execute the same float32 ops in the same order on the same CPU, so they
agree bit for bit when the data order, the dropout draws and the optimizer state are restored
exactly (measured: identical). `rtol=1e-6` only leaves room for a different thread schedule of
a multi-threaded reduction; a wrong shuffle order or dropout draw after the resume moves the
final loss by about 1e-3 (measured), three orders of magnitude above it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import tensorflow as tf

from pipelines import synthetic

OPTIONS = ["--embedding-dim", "16", "--units", "16", "--vocabulary-size", "200", "--dropout", "0.1",
           "--epochs", "3", "--batch-size", "8", "--seed", "7", "--verbose", "0"]  # fmt: skip


def _command(src, tgt, run):
    return [sys.executable, "-m", "keras_attention.cli", "train", "translation", "--src-file",
            src, "--tgt-file", tgt, "--output-dir", str(run), *OPTIONS]  # fmt: skip


def _finished_epochs(run):
    path = run / "backup" / "training_metadata.json"
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError):  # not there yet, or being replaced
        return 0


def _epoch_losses(run):
    """`{epoch: loss}` from the TensorBoard logs of the run (both processes of a resumed one)."""
    losses = {}
    for root, _, files in os.walk(run / "logs" / "train"):
        for name in sorted(files):
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == "epoch_loss":
                        losses[event.step] = float(tf.make_ndarray(value.tensor))
    return losses


def _weights(run):
    arrays = {}
    with h5py.File(run / "model.weights.h5") as f:
        f.visititems(lambda k, v: arrays.update({k: v[()]}) if isinstance(v, h5py.Dataset) else 0)
    return arrays


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_same_result(tmp_path):
    pairs = synthetic.dates(800, seed=3)
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
    tgt.write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_command(str(src), str(tgt), reference), check=True, timeout=300)

    process = subprocess.Popen(_command(str(src), str(tgt), killed))
    try:
        deadline = time.monotonic() + 240
        while _finished_epochs(killed) < 1:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.8)  # into the second epoch (about 2 s of 100 steps)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _finished_epochs(killed) == 1  # killed mid-epoch 2, after epoch 1's backup
    assert not (killed / "task.json").exists()

    resumed = subprocess.run(_command(str(src), str(tgt), killed), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed after epoch 1" in resumed.stdout

    runs = {name: json.loads((run / "run.json").read_text()) for name, run in
            (("reference", reference), ("killed", killed))}  # fmt: skip
    assert runs["killed"]["result"]["epochs"] == runs["reference"]["result"]["epochs"] == 3
    losses = {name: _epoch_losses(run) for name, run in (("reference", reference),
                                                          ("killed", killed))}  # fmt: skip
    assert sorted(losses["killed"]) == sorted(losses["reference"]) == [0, 1, 2]
    np.testing.assert_allclose(losses["killed"][2], losses["reference"][2], rtol=1e-6)
    best = [runs[name]["result"]["best"] for name in ("reference", "killed")]
    assert best[0]["epoch"] == best[1]["epoch"]
    np.testing.assert_allclose(best[1]["value"], best[0]["value"], rtol=1e-6)
    reference_weights, killed_weights = _weights(reference), _weights(killed)
    assert sorted(killed_weights) == sorted(reference_weights)
    for name, value in reference_weights.items():
        np.testing.assert_allclose(killed_weights[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
