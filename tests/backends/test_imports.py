"""The layers, ops and backbones import without TensorFlow on JAX and PyTorch."""

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

_PROGRAM = """
import sys
import keras_attention.layers, keras_attention.ops, keras_attention.models
import keras
assert keras.backend.backend() == {backend!r}, keras.backend.backend()
loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
assert not loaded, loaded[:5]
print("ok")
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layers_ops_models_import_without_tensorflow(backend):
    # Each backend's stage of CI checks its own backend (a fresh process each, ~10 s).
    if keras.backend.backend() != backend:
        pytest.skip(f"checked in the KERAS_BACKEND={backend} stage")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM.format(backend=backend)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
