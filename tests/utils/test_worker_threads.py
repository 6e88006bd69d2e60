"""tests/conftest.py: the slow run's pytest-xdist workers get their share of the cores."""

import os
import types

from tests import conftest


def _config(markexpr):
    return types.SimpleNamespace(option=types.SimpleNamespace(markexpr=markexpr))


def test_threads_per_worker_splits_the_cores(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert conftest._threads_per_worker() is None  # one process: the libraries' own defaults
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    assert conftest._threads_per_worker() is None
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert conftest._threads_per_worker() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert conftest._threads_per_worker() == 1  # never 0: at least one thread each


def test_only_the_slow_run_under_xdist_is_limited(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "")  # recorded, so that teardown restores what was there
        monkeypatch.delenv(name)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    conftest.pytest_configure(_config("not slow and not backends"))
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ
    conftest.pytest_configure(_config("slow"))
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")  # set by hand: kept
    conftest.pytest_configure(_config("slow"))
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "2"
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    conftest.pytest_configure(_config("slow"))  # one process
    assert "TF_NUM_INTRAOP_THREADS" not in os.environ
