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


def pytest_collection_finish(session):
    """What is imported by now (TensorFlow, Keras, keras_hub, the package, the test modules)
    lives to the end: `gc.freeze()` leaves it out of every later full collection (the
    imports alone hold ~430k objects, 0.27 s a collection, ~60 full collections a worker)."""
    gc.collect()
    gc.freeze()


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
    "tests/benchmarks/test_multi30k_smoke.py",
    "tests/demos/test_dates.py",
    "tests/training/test_kill_resume.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(_LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def _threads_per_worker():
    """CPU cores per pytest-xdist worker, or None outside xdist (one process: all of them)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def pytest_configure(config):
    """The slow run's workers get their share of the cores, not all of them each.

    With two workers on two cores, each TensorFlow process sized its intra-op pool to both
    cores: four busy threads for two cores. In the slow run (training, exports, fresh
    processes) that made it up to 2x slower: two of its long tests side by side took 256 s,
    130 s with one intra-op thread each; the whole slow run 34.1 -> 27.8 min the same day. The
    default run's small tests were faster with the shared pools (270 of them: 140 s against
    158), so it keeps them. Set before the first TensorFlow operation (TensorFlow reads it when
    it starts its pools, not at import), inherited by the processes a test starts; a value set
    by hand wins.
    """
    threads = _threads_per_worker()
    if threads is None or (config.option.markexpr or "").strip() != "slow":
        return
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
