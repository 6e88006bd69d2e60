"""Two workers on 127.0.0.1 train the translator through the CLI with `--strategy multi-worker`.

Run as a script (`python -m tests.training.test_distribute_multi_worker
<report.json> <train arguments>`), this module is one worker: with
`TF_CONFIG` set, it checks which examples its replica gets, then runs
`keras-attention train` and writes what it saw and its loss history.
"""

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = ["--embedding-dim", "8", "--units", "8", "--vocabulary-size", "100"]
BATCH = 16


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _write_data(path, rows=96):
    from pipelines import synthetic

    with open(path, "w", encoding="utf-8") as f:
        for source, target in synthetic.dates(rows, seed=1):
            f.write(f"{source}\t{target}\n")


def _train_args(tsv, output_dir, epochs, strategy):
    return ["train", "translation", "--tsv", str(tsv), *MODEL, "--epochs", str(epochs),
            "--batch-size", str(BATCH), "--jit-compile", "off", "--verbose", "2",
            "--strategy", strategy, "--output-dir", str(output_dir)]  # fmt: skip


def _start(report, args, tf_config=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(str(report) + ".log", "w")  # noqa: SIM115 - closed with the process
    command = [sys.executable, "-m", "tests.training.test_distribute_multi_worker", str(report)]
    process = subprocess.Popen(
        [*command, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    process.log = log
    return process


def _cluster(ports):
    hosts = [f"127.0.0.1:{port}" for port in ports]
    return [
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        for i in range(len(hosts))
    ]


def _wait(processes, timeout=400):
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
        process.log.close()
    return codes


def _log(report):
    with open(str(report) + ".log", encoding="utf-8") as f:
        return f.read()[-4000:]


def _backup_epoch(run_dir):
    path = os.path.join(run_dir, "backup", "training_metadata.json")
    try:
        with open(path, encoding="utf-8") as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_two_workers_train_like_one_and_recover_from_a_killed_worker(tmp_path):
    tsv = tmp_path / "dates.tsv"
    _write_data(tsv)
    epochs = 6
    # One process, the same global batch: the reference trajectory.
    single = _start(tmp_path / "single.json", _train_args(tsv, tmp_path / "single", epochs,
                                                          "default"))  # fmt: skip
    assert _wait([single]) == [0], _log(tmp_path / "single.json")
    reference = json.loads((tmp_path / "single.json").read_text())["history"]["loss"]

    # Two workers ("machines": a run directory each), with validation data and checkpoint
    # averaging (its evaluation runs across workers). One is killed mid-run: every worker
    # stops, all restart with the same command.
    killed = tmp_path / "killed"
    run_dirs = (killed / "chief", killed / "worker")
    args = [_train_args(tsv, run_dir, epochs, "multi-worker") + [
        "--valid-tsv", str(tsv), "--average-last-epochs", "2"] for run_dir in run_dirs]  # fmt: skip
    cluster = _cluster(_free_ports(2))
    reports = [killed / "w0.json", killed / "w1.json"]
    killed.mkdir()
    first = [killed / "w0-first.json", killed / "w1-first.json"]
    workers = [_start(first[i], args[i], cluster[i]) for i in range(2)]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (
        _backup_epoch(run_dirs[0]) >= 2 and _backup_epoch(run_dirs[1] / "worker-1") >= 2
    ):
        assert all(p.poll() is None for p in workers), _log(first[0]) + _log(first[1])
        time.sleep(0.2)
    workers[1].send_signal(signal.SIGKILL)
    finished_before = _backup_epoch(run_dirs[0])
    assert 2 <= finished_before < epochs
    # The chief cannot finish without its peer: it fails (or hangs in a collective) and is
    # stopped too, as a cluster manager would.
    killed_at = time.monotonic()
    codes = _wait(workers, timeout=90)
    print(f"the chief ended {time.monotonic() - killed_at:.1f}s after the kill: {codes[0]}")
    assert codes[1] == -signal.SIGKILL and codes[0] == 2
    assert "a worker of the cluster stopped" in _log(first[0])
    assert not (run_dirs[0] / "task.json").exists()
    # Had the worker died between the chief's backup of an epoch and its own, the workers
    # would resume after different epochs: refused, and the chief's backup is the remedy.
    worker_backup = run_dirs[1] / "worker-1" / "backup"
    metadata = json.loads((worker_backup / "training_metadata.json").read_text())
    (worker_backup / "training_metadata.json").write_text(
        json.dumps({**metadata, "epoch": finished_before - 1})
    )
    mismatched = [_start(first[i], args[i], cluster[i]) for i in range(2)]
    assert _wait(mismatched, timeout=200) == [2, 2]
    assert "backups end at different epochs" in _log(first[0])
    shutil.rmtree(worker_backup)
    shutil.copytree(run_dirs[0] / "backup", worker_backup)
    workers = [_start(reports[i], args[i] + ["--check-shards"], cluster[i]) for i in range(2)]
    assert _wait(workers) == [0, 0], _log(reports[0]) + _log(reports[1])
    resumed = [json.loads(report.read_text()) for report in reports]
    # Sharded: every example once per epoch across the workers, half each.
    every = collections.Counter(map(tuple, resumed[0]["all_sources"]))
    mine = [collections.Counter(map(tuple, report["my_sources"])) for report in resumed]
    assert mine[0] + mine[1] == every
    assert abs(sum(mine[0].values()) - sum(mine[1].values())) <= BATCH
    for report in resumed:
        assert report["resumed_from"] == finished_before
        assert len(report["history"]["loss"]) == epochs - finished_before
    assert resumed[0]["history"]["loss"] == pytest.approx(resumed[1]["history"]["loss"])
    # The same trajectory as one process with the same global batch: the killed run's epochs
    # (whose weights the resumed run starts from) and the resumed ones (the same seed and
    # data order).
    for one, two in zip(reference[finished_before:], resumed[0]["history"]["loss"], strict=True):
        assert abs(one - two) <= 2e-3 * abs(one), (reference, resumed[0]["history"]["loss"])
    # Only the chief writes: checkpoints, TensorBoard, run.json and the saved task.
    for name in ("task.json", "model.weights.h5", "run.json", "checkpoints/best.keras", "logs"):
        assert (run_dirs[0] / name).exists(), name
    assert list(run_dirs[1].iterdir()) == []
    run = json.loads((run_dirs[0] / "run.json").read_text())
    assert run["result"]["epochs"] == epochs
    # The weights of the last 2 epochs are kept on disk too (each worker's own `average/`): a
    # run resumed for its last epoch alone averages the same two.
    averaged = run["result"]["averaged"]
    assert averaged["epochs"] == [epochs - 1, epochs] and isinstance(averaged["kept"], bool)


def _worker(report_path, argv):
    """One worker: the shards its replica gets (with --check-shards), then the CLI's training."""
    from keras_attention import cli, training

    check = "--check-shards" in argv
    argv = [arg for arg in argv if arg != "--check-shards"]
    # The strategy first: before TensorFlow starts (train would make the same one).
    strategy = training.get_strategy(argv[argv.index("--strategy") + 1])
    report = {"replicas": strategy.num_replicas_in_sync}
    if check:
        report.update(_shards(strategy, argv))
    runs = []
    train = training.train

    def recording_train(*args, **kwargs):
        runs.append(train(*args, **kwargs))
        return runs[-1]

    training.train = recording_train
    code = cli.main(argv)
    if runs:
        report["history"] = runs[-1].history
        report["resumed_from"] = runs[-1].resumed_from
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f)
    return code


def _shards(strategy, argv):
    """The source rows of one epoch: all of them, and those this worker's replica gets."""
    import tempfile

    import numpy as np

    from keras_attention.tasks import TranslationConfig, get_task
    from keras_attention.training import distribute

    task_cls = get_task("translation")
    config = TranslationConfig(embedding_dim=8, units=8, vocabulary_size=100)
    data = task_cls.read_data(argv[argv.index("--tsv") + 1])
    preprocessor = task_cls.build_preprocessor(config, data, tempfile.mkdtemp())
    with strategy.scope():
        task = task_cls.build(config, preprocessor)
    dataset = task.make_dataset(data, BATCH, True, 0)  # as `train` makes it

    def rows(tensors):
        return [[int(t) for t in row if t] for tensor in tensors for row in np.asarray(tensor)]

    everything = rows(inputs["source"] for inputs, _ in dataset)
    mine = []
    for inputs, _ in strategy.experimental_distribute_dataset(distribute.shard_by_data(dataset)):
        mine += rows(strategy.experimental_local_results(inputs["source"]))
    return {"all_sources": everything, "my_sources": mine}


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1], sys.argv[2:]))
