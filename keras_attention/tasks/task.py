"""The base class of the tasks: a preprocessor, a backbone and decoding, saved in one layout."""

import os
import shutil
import tempfile

import keras

from keras_attention.tasks.registry import get_task
from keras_attention.utils.files import read_json, write_json

TASK_FILE = "task.json"
ASSETS_DIR = "assets"
WEIGHTS_FILE = "model.weights.h5"
_FORMAT = "keras_attention.task"
_VERSION = 1
_OLD_ASSETS = ".old"  # `assets.old/`: the assets being replaced by `Task.save`


class Task:
    """What users train, save, load, call, evaluate and export.

    A task holds a `preprocessor` (tokenizers and the framing of examples for
    training and for inference, from one definition) and a `backbone` (a
    `keras_attention.models` model), and decodes with them. Subclasses set:

    - `task_name`, the registry key (`keras-attention train <task_name>`),
      and `preprocessor_class` (with `save_assets(directory)`,
      `from_assets(directory, **config)` and `get_config()`);
    - `config_class`, the dataclass of its training options (fields made with
      `keras_attention.utils.options.option`, which generate the CLI flags and
      the resume check), and `data_class`, the dataclass of its data flags;
    - the training hooks the generic trainer (`keras_attention.training`)
      calls: `read_data` (and `read_valid_data`), `build_preprocessor`, `load_preprocessor`, `build`,
      `make_dataset`, `loss`, `metrics`;
    - `predict(inputs)` (what `keras-attention predict` prints),
      `evaluate(data)` (a dict of metrics), `serving_signatures()` (the
      SavedModel signatures, string in / string out, that
      `keras_attention.export.export_task` writes) and `preprocessor.save_assets`.

    The saved layout (`save(directory)`, `Task.load(directory)`), the same for
    every task and for the run directory of `keras-attention train`:

    | path                 | what                                                        |
    |----------------------|-------------------------------------------------------------|
    | `task.json`          | the task, its options, the preprocessor's options, the backbone's config |
    | `assets/`            | the preprocessor's files (vocabularies and their option sidecars) |
    | `model.weights.h5`   | the backbone's weights                                      |

    Args:
        backbone: the model.
        preprocessor: the task's preprocessor.
    """

    task_name = None
    preprocessor_class = None
    config_class = None
    data_class = None

    def __init__(self, backbone, preprocessor):
        self.backbone = backbone
        self.preprocessor = preprocessor
        # A directory the task may keep training files in (cached features); `train` sets it.
        self.work_dir = None

    def training_network(self):
        """The `keras.Model` `fit` trains: the backbone (a task may train a part of it)."""
        return self.backbone

    @classmethod
    def read_valid_data(cls, valid_data, train_data):
        """`read_data(valid_data)`, checked against the training data it is read with.

        Called by `train` before anything is written; a classifier refuses a
        validation label the training data does not have (its file and line
        named), which the model would have no class for.
        """
        return cls.read_data(valid_data)

    def get_config(self):
        """The task's own options (neither the backbone nor the preprocessor)."""
        return {}

    def warmup_requests(self):
        """Inputs TF Serving replays when it loads the task's export, as `(signature, inputs)`.

        `export_task` writes them to `assets.extra/tf_serving_warmup_requests`,
        so a server compiles what it needs before the first real request.
        None by default; a task that compiles per shape (a translator with
        `jit_compile=True`) lists one input per shape.
        """
        return []

    @property
    def export_name(self):
        """The default model name of the task's SavedModel export (its `task_name`)."""
        return self.task_name

    # -- the saved layout -----------------------------------------------------------------------

    def save(self, directory):
        """Writes `task.json`, `assets/` and `model.weights.h5` into `directory`.

        The directory is created if needed; files of those names are
        replaced, other files are left alone. `task.json` is written last, so
        a directory that has it holds a complete task.

        Returns:
            The directory as a string.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        recover_assets(directory)
        # A task saved before is no task while this one is written: its task.json goes first.
        task_file = os.path.join(directory, TASK_FILE)
        if os.path.isfile(task_file):
            os.remove(task_file)
        assets = os.path.join(directory, ASSETS_DIR)
        staged = tempfile.mkdtemp(prefix=".assets-", dir=directory)
        try:
            os.chmod(staged, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from other users
            self.preprocessor.save_assets(staged)
            # Swapped in by renames: a kill at any point leaves `assets/` or `assets.old/`
            # (`recover_assets` puts it back), never neither.
            old = assets + _OLD_ASSETS
            shutil.rmtree(old, ignore_errors=True)
            if os.path.isdir(assets):
                os.replace(assets, old)
            os.replace(staged, assets)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.backbone.save_weights(os.path.join(directory, WEIGHTS_FILE))
        description = {
            "format": _FORMAT,
            "version": _VERSION,
            "task": self.task_name,
            "config": self.get_config(),
            "preprocessor": self.preprocessor.get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "weights": WEIGHTS_FILE,
        }
        write_json(os.path.join(directory, TASK_FILE), description)
        return directory

    @classmethod
    def load(cls, directory):
        """The task saved in `directory` (by `save`, or a finished `keras-attention train` run).

        Called on `Task` it returns whatever task the directory holds; called
        on a subclass it also checks that the directory holds that task.
        """
        directory = os.fspath(directory)
        description = read_task_file(directory)
        task_cls = get_task(description["task"])
        if cls is not Task and not issubclass(task_cls, cls):
            raise ValueError(
                f"{cls.__name__}.load: '{directory}' holds a {task_cls.__name__} task, not a "
                f"{cls.__name__}. Received: directory={directory!r}"
            )
        import keras_attention.layers  # noqa: F401  (registers the layers for deserialization)
        import keras_attention.models  # noqa: F401  (registers the backbones)

        backbone = keras.saving.deserialize_keras_object(description["backbone"])
        backbone.load_weights(os.path.join(directory, description["weights"]))
        preprocessor = task_cls.preprocessor_class.from_assets(
            os.path.join(directory, ASSETS_DIR), **description["preprocessor"]
        )
        return task_cls.from_parts(backbone, preprocessor, description["config"])

    @classmethod
    def from_parts(cls, backbone, preprocessor, config):
        """The task from a backbone, a preprocessor and its `get_config()`."""
        return cls(backbone, preprocessor=preprocessor, **config)


def is_saved_task(directory):
    """Whether `directory` holds a complete saved task (its `task.json`)."""
    return os.path.isfile(os.path.join(os.fspath(directory), TASK_FILE))


def read_task_file(directory):
    """The checked contents of `<directory>/task.json`."""
    path = os.path.join(os.fspath(directory), TASK_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no saved task in '{directory}': {TASK_FILE} is missing (written by `Task.save` and "
            f"at the end of `keras-attention train`). Received: directory={os.fspath(directory)!r}"
        )
    description = read_json(path, _FORMAT, "a keras-attention task file")
    if description.get("version", 0) > _VERSION:
        raise ValueError(
            f"'{path}' was written by a newer keras-attention (task file version "
            f"{description['version']}; this one reads up to {_VERSION}). "
            f"Received: version={description['version']}"
        )
    return description


def _umask():
    """The process's umask, read without changing it where Linux shows it (setting it to 0 and
    back, the portable way, would let a file another thread creates meanwhile be world-writable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def recover_assets(directory):
    """Undoes an assets swap of `Task.save` that a killed process left half done.

    `assets/` missing and `assets.old/` there: the old assets are put back; both there: the
    old ones are removed.
    """
    assets = os.path.join(os.fspath(directory), ASSETS_DIR)
    old = assets + _OLD_ASSETS
    if not os.path.isdir(old):
        return
    if os.path.isdir(assets):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(old, assets)

