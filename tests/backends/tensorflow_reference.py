"""One TensorFlow subprocess per test module that computes reference results on request.

A test module off TensorFlow starts `TensorFlowReference(module, directory)`:
`python -m <module> <directory>` with `KERAS_BACKEND=tensorflow`, whose `main`
calls `serve(compute)`. A test writes what the reference needs (a weights file
in `directory`), `ask(name)`s for it and goes on with its own work while
TensorFlow computes; `answer(name)` then waits for the result. The subprocess
imports TensorFlow once while the first test builds its models, and answers
in the order it was asked.
"""

import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import traceback

import keras
import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_PREFIX = "RESULT "
TIMEOUT = 600  # seconds to wait for one answer


def reference_fixture(module, directory_name):
    """A module-scoped pytest fixture: the `TensorFlowReference` of `module` (`None` on TF).

    On TensorFlow itself the test computes the reference results in its own process.
    """

    @pytest.fixture(scope="module")
    def tensorflow(tmp_path_factory):
        if keras.backend.backend() == "tensorflow":
            yield None
            return
        reference = TensorFlowReference(module, tmp_path_factory.mktemp(directory_name))
        yield reference
        reference.close()

    return tensorflow


class TensorFlowReference:
    """The subprocess, its requests and its answers (see the module docstring)."""

    def __init__(self, module, directory):
        self.directory = pathlib.Path(directory)
        self._stderr = open(self.directory / "stderr.txt", "w")  # noqa: SIM115 (closed by close())
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, str(self.directory)],
            cwd=_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )  # fmt: skip
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._answers = {}

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(_PREFIX):
                self._lines.put(json.loads(line[len(_PREFIX) :]))
        self._lines.put(None)  # the subprocess ended

    def ask(self, name):
        """Asks for the result `name` (the files it reads must be written already)."""
        try:
            self.process.stdin.write(name + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it ended: `answer` says why

    def answer(self, name):
        """Waits for the result `name`; fails with the subprocess's error if it has one."""
        while name not in self._answers:
            try:
                item = self._lines.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(f"no TensorFlow reference for {name} in {TIMEOUT} s") from None
            if item is None:
                self._stderr.flush()
                tail = (self.directory / "stderr.txt").read_text()[-3000:]
                raise AssertionError(f"the TensorFlow subprocess ended before {name}:\n{tail}")
            key, value = item
            self._answers[key] = value
        value = self._answers[name]
        if isinstance(value, dict) and "error" in value:
            raise AssertionError(f"TensorFlow failed on {name}:\n{value['error']}")
        return value

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


def serve(compute):
    """The subprocess's loop: `compute(name)` for each name read from stdin, printed as JSON."""
    for line in sys.stdin:
        name = line.strip()
        try:
            result = compute(name)
        except Exception:  # reported to the test that asked
            result = {"error": traceback.format_exc()}
        print(_PREFIX + json.dumps([name, result]), flush=True)
