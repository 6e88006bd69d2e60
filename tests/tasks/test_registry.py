"""The task registry: the CLI's `train <task>` commands come from it, with no branch per task."""

import dataclasses
import json

import pytest

from keras_attention.cli import build_parser
from keras_attention.tasks import Task, Translator, get_task, register_task, registry, task_names
from keras_attention.utils.options import option, positive_int_argument


@dataclasses.dataclass
class _ToyConfig:
    width: int = option(4, "the width of the toy", type=positive_int_argument, resume=True)


@dataclasses.dataclass
class _ToyData:
    data_file: str = option(None, "the toy's data")


class _ToyTask(Task):
    task_name = "toy"
    train_summary = "Train the toy."
    config_class = _ToyConfig
    data_class = _ToyData


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    register_task(_ToyTask)
    return _ToyTask


def test_translation_is_registered():
    assert "translation" in task_names() and get_task("translation") is Translator
    with pytest.raises(ValueError, match=r"unknown task.*Received: task='nope'"):
        get_task("nope")


def test_a_registered_task_gets_its_train_command_from_its_dataclasses(toy_registered):
    parser = build_parser()
    args = parser.parse_args(
        ["train", "toy", "--data-file", "d.txt", "--width", "8", "--epochs", "2", "--output-dir", "r"]
    )
    assert args.task_class is toy_registered and args.handler.__name__ == "_train"
    assert (args.data_file, args.valid_data_file, args.width, args.epochs) == ("d.txt", None, 8, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "toy", "--width", "0", "--output-dir", "r"])


def test_register_task_refuses_bad_and_taken_names(toy_registered):
    class Unnamed(Task):
        task_name = None

    with pytest.raises(ValueError, match="task_name must be a non-empty string"):
        register_task(Unnamed)

    class Other(_ToyTask):
        pass

    with pytest.raises(ValueError, match="the task name 'toy' is taken by _ToyTask"):
        register_task(Other)


def test_loading_an_unknown_or_newer_task_file_is_refused(tmp_path):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"format": "keras_attention.task", "version": 1, "task": "nope"}))
    with pytest.raises(ValueError, match="unknown task"):
        Task.load(tmp_path)
    path.write_text(json.dumps({"format": "keras_attention.task", "version": 99, "task": "x"}))
    with pytest.raises(ValueError, match="written by a newer keras-attention"):
        Task.load(tmp_path)


def test_the_umask_is_read_without_changing_it(monkeypatch):
    import os
    import sys

    from keras_attention.tasks.task import _umask

    old = os.umask(0o027)
    try:
        if sys.platform.startswith("linux"):  # read from /proc: never set, not even briefly
            def refuse(mask):
                raise AssertionError(f"os.umask({mask:#o}) called")

            monkeypatch.setattr(os, "umask", refuse)
        assert _umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(old)
