"""The same weights give the same numbers on TensorFlow, JAX and PyTorch; `.keras` files travel.

For every `ContractSpec` of `tests/layers`, `tests.backends.parity` builds the spec's
functional model with fixed weights on each backend (this process for TensorFlow, a
subprocess each for JAX and PyTorch, run at the same time) and writes its outputs,
gradients (w.r.t. the float inputs and every trainable weight) and `.keras` file; each
backend then loads the other backends' files. The tests compare:

- outputs and gradients across backends, to 1e-5;
- a model loaded from another backend's `.keras` file gives exactly the outputs of the
  model built here with the same weights (and so the saving backend's outputs to 1e-5).

The whole comparison runs once, in the TensorFlow stage (`KERAS_BACKEND=tensorflow pytest
-m backends tests/backends`); a backend that is not installed is left out.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.backends import parity
from tests.backends.specs import all_specs

BACKENDS = ("tensorflow", "jax", "torch")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
SPEC_IDS = sorted(all_specs())
_SUBPROCESS_TIMEOUT = 600
_ROOT = pathlib.Path(__file__).parents[2]

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the cross-backend comparison runs once, from the TensorFlow stage, which starts "
    "the JAX and PyTorch runs itself",
)


def _installed(backend):
    return importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`{backend: directory}` of every installed backend's files, after all loads are done."""
    root = tmp_path_factory.mktemp("parity")
    backends = [b for b in BACKENDS if _installed(b)]
    dirs = {b: root / b for b in backends}
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    processes = {}
    for backend in backends:
        if backend == "tensorflow":
            continue
        command = [sys.executable, "-m", "tests.backends.parity", "--out", str(dirs[backend])]
        for other in backends:
            if other != backend:
                command += ["--load", str(dirs[other])]
        command += ["--wait", str(_SUBPROCESS_TIMEOUT)]
        processes[backend] = subprocess.Popen(
            command,
            env={**env, "KERAS_BACKEND": backend},
            cwd=_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        parity.run(dirs["tensorflow"])  # saves here while the others start
        failures = []
        for backend, process in processes.items():
            output, _ = process.communicate(timeout=_SUBPROCESS_TIMEOUT)
            if process.returncode != 0:
                failures.append(f"{backend} (exit {process.returncode}):\n{output[-4000:]}")
        assert not failures, "\n".join(failures)
        others = [dirs[b] for b in backends if b != "tensorflow"]
        parity.run(dirs["tensorflow"], others, save=False)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return dirs


def _results(directory, spec_id):
    with np.load(directory / f"{parity.file_name(spec_id)}.npz") as data:
        return {key: data[key] for key in data.files}


def _loaded(directory, saver, spec_id):
    with np.load(directory / "loaded" / saver / f"{parity.file_name(spec_id)}.npz") as data:
        return {key: data[key] for key in data.files}


def test_every_installed_backend_ran(runs):
    for backend, directory in runs.items():
        meta = json.loads((directory / "meta.json").read_text())
        assert meta["backend"] == backend
        assert sorted(meta["specs"]) == SPEC_IDS
    assert "tensorflow" in runs and len(runs) >= 2, sorted(runs)  # something was compared


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_same_outputs_and_gradients_on_every_backend(runs, spec_id):
    reference = _results(runs["tensorflow"], spec_id)
    outputs = [k for k in reference if k.startswith("out:")]
    grads = [k for k in reference if k.startswith("grad_")]
    assert outputs and grads, sorted(reference)
    for backend, directory in runs.items():
        if backend == "tensorflow":
            continue
        result = _results(directory, spec_id)
        assert sorted(result) == sorted(reference), backend
        for i in range(sum(k.startswith("weight_path:") for k in reference)):
            key = f"weight_path:{i}"
            assert str(result[key]) == str(reference[key]), (backend, key)  # the same weights
        for key in outputs + grads:
            np.testing.assert_allclose(
                result[key], reference[key], **TOLERANCE, err_msg=f"{backend} vs tensorflow: {key}"
            )


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_keras_files_load_on_every_other_backend(runs, spec_id):
    pairs = 0
    for loader, directory in runs.items():
        own = _results(directory, spec_id)
        for saver in runs:
            if saver == loader:
                continue
            loaded = _loaded(directory, saver, spec_id)
            saved = _results(runs[saver], spec_id)
            outputs = [k for k in own if k.startswith("out:")]
            assert sorted(loaded) == sorted(outputs), (saver, loader)
            for key in outputs:
                # Loaded here: exactly the numbers of the model built here with those weights.
                np.testing.assert_array_equal(
                    loaded[key], own[key], err_msg=f"{saver} file on {loader}: {key}"
                )
                np.testing.assert_allclose(
                    loaded[key], saved[key], **TOLERANCE, err_msg=f"{saver} file on {loader}"
                )
            pairs += 1
    assert pairs == len(runs) * (len(runs) - 1)
