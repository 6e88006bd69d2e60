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


# The slow run's longest files (minutes each), collected first: with pytest-xdist (`.ci/run`: two
# workers, one file at a time) a worker that drew one of them last would run on alone for
# minutes while the other idles. Longest first; every other file keeps its place after them.
_LONG_FILES = (
    "tests/tasks/test_captioner_quality.py",
    "tests/training/test_distribute_multi_worker.py",
    "tests/training/test_distribute.py",
    "tests/benchmarks/test_masked_lm_benchmark.py",
    "tests/tasks/test_bert_tasks.py",
    "tests/test_cli_translation.py",
    "tests/tasks/test_causal_lm.py",
    "tests/demos/test_dates.py",
    "tests/training/test_kill_resume.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
