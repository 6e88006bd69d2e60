"""The task registry: what `keras-attention train|predict|evaluate|export` and the trainer read."""

_TASKS = {}


def register_task(task_cls):
    """Registers a `Task` subclass under its `task_name` (a class decorator)."""
    name = task_cls.task_name
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"register_task: {task_cls.__name__}.task_name must be a non-empty string. "
            f"Received: task_name={name!r}"
        )
    if name in _TASKS and _TASKS[name] is not task_cls:
        raise ValueError(
            f"register_task: the task name {name!r} is taken by {_TASKS[name].__name__}. "
            f"Received: {task_cls.__name__}"
        )
    _TASKS[name] = task_cls
    return task_cls


def get_task(name):
    """The `Task` subclass registered as `name`."""
    if name not in _TASKS:
        raise ValueError(f"unknown task. Expected one of {task_names()}. Received: task={name!r}")
    return _TASKS[name]


def task_names():
    """The registered task names, sorted."""
    return tuple(sorted(_TASKS))
