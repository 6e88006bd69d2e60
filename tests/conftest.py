"""Test-wide settings: quiet TensorFlow, the TensorFlow backend, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import gc  # noqa: E402
import itertools  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

# A full garbage collection costs 0.3-1 s once TensorFlow holds many objects; after every test it
# was a large share of the default run. Collect every `_GC_EVERY` tests instead.
_GC_EVERY = 25
_test_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32, a fixed seed and no leftover global state."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    if next(_test_counter) % _GC_EVERY == 0:
        gc.collect()
