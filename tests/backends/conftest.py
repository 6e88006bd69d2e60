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

collect_ignore = ["test_layer_contract.py"] if BACKEND == "tensorflow" else []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The `backends` mark, and an `xdist_group` per test module for `--dist loadgroup`.

    `.ci/run` runs this stage with `--dist loadgroup`: a module's tests stay on one worker (its
    module fixtures are built once), but the layer contract, most of the stage's time (260 of
    450 worker-seconds on JAX), is split by layer module, so that one worker no longer runs it
    alone while the other finishes the rest and idles (JAX: 278 s with `loadfile`). Longest
    groups first (`--no-loadscope-reorder` keeps this order; xdist's own orders by test count,
    which would leave the few long model tests for last): the other modules (a few tests of
    seconds each), then the contract's groups, each part by its number of tests.
    """
    groups = {}
    for item in items:
        path = pathlib.Path(str(item.fspath))
        if _HERE not in path.parents:
            continue
        item.add_marker(pytest.mark.backends)
        group = path.stem
        spec_id = getattr(getattr(item, "callspec", None), "params", {}).get("spec_id")
        if spec_id is not None:
            group = f"{group}:{spec_id.split(':')[0]}"
        item.add_marker(pytest.mark.xdist_group(group))
        groups.setdefault(group, []).append(item)
    if not groups:
        return
    ordered = sorted(groups, key=lambda g: (":" in g, -len(groups[g])))
    rank = {id(item): i for i, group in enumerate(ordered) for item in groups[group]}
    items.sort(key=lambda item: rank.get(id(item), -1))
