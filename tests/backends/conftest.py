"""Tests that run on every Keras backend: `KERAS_BACKEND=jax|torch|tensorflow pytest -m backends`.

Every test collected here carries the `backends` mark, which the default run leaves out
(`.ci/run` runs them once per backend in its own stage). The per-backend layer contract is
skipped on TensorFlow, where `tests/layers` already runs it in the default run.
"""

import os
import pathlib

import keras
import pytest

BACKEND = keras.backend.backend()
_HERE = pathlib.Path(__file__).parent

# Eager JAX compiles every operation once per shape and dtype with XLA, which is most of the
# JAX stage's time; without LLVM's expensive passes compiling is ~25% faster (the numbers are
# the same: no fast-math either way). Set before JAX starts its CPU client.
_FAST_XLA_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if BACKEND == "jax" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_XLA_COMPILE}".strip()
if BACKEND == "torch":
    # The tests' tensors are tiny: PyTorch's intra-op threads only wait for each other, and on
    # a busy 2-core machine their spinning made eager checks up to 4x slower.
    import torch

    torch.set_num_threads(1)

collect_ignore_glob = ["test_layer_contract*.py"] if BACKEND == "tensorflow" else []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.backends)
