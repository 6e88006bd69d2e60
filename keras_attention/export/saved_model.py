"""SavedModel exports in the TF Serving layout, and their verification the way TF Serving loads them.

`export_saved_model` writes `<base_dir>/<name>/<version>/` (a SavedModel with `serving_default` and
any named signatures, method `tensorflow/serving/predict`, dense outputs only, files such as
vocabularies under `assets/`) and keeps `<base_dir>/models.config` (a TF Serving
`ModelServerConfig` text proto) listing every exported model, so one TF Serving container started
on `<base_dir>` serves them all.

`verify_export` loads an export in a fresh process with the TF1 session loader that TF Serving's
`SavedModelBundle` uses, sends REST bodies in both the row (`instances`) and columnar (`inputs`)
formats through `PredictRequest` protos, and compares the answers with the eager model.
"""

import base64
import contextlib
import dataclasses
import inspect
import json
import os
import pathlib
import posixpath
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_attention.export._rest import arrays_to_rest
from keras_attention.utils import files
from keras_attention.utils.validation import number

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
MODELS_CONFIG = "models.config"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIGNATURE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FORMATS = ("instances", "inputs")


def export_saved_model(
    obj,
    base_dir="saved_models",
    name=None,
    version=None,
    signatures=None,
    overwrite=False,
    assets=None,
    container_base_path=None,
    warmup_requests=None,
):
    """Exports a Keras model (or layer) as `<base_dir>/<name>/<version>/` for TF Serving.

    The target is checked before anything is traced: `base_dir` (and `<base_dir>/<name>`) must be
    writable folders, and an existing `models.config` must parse. The SavedModel is then written
    with `keras.export.ExportArchive` into a temporary sibling directory; `<base_dir>/models.config`
    gets an entry `name: <name>, base_path: <container_base_path>/<name>` (idempotent; every model
    exported before stays listed), and only then is the version renamed into place (a failed
    rename restores the previous `models.config`). So a failed export leaves neither a new
    version nor a half-written one, and an existing version stays intact unless `overwrite=True`.

    Args:
        obj: a built `keras.Model` or `keras.layers.Layer`. Its variables are tracked by the export.
        base_dir: the TF Serving model base directory. Defaults to `"saved_models"`.
        name: the model name, used as directory name and in TF Serving URLs
            (`/v1/models/<name>:predict`): letters, digits, `-`, `_` and `.`, starting with a letter
            or digit. Defaults to `obj.name`.
        version: positive int, the version directory. Defaults to the next free one: one more
            than the highest existing version, `1` for a new model.
        signatures: optional dict `{signature_name: (fn, input_signature)}`. `fn` returns a dict
            of dense tensors (the signature's outputs); `input_signature` is a list of named
            `tf.TensorSpec`s (passed positionally; unnamed specs take the names of `fn`'s
            parameters) or a dict `{input_name: tf.TensorSpec}` (passed by keyword). Without a
            `"serving_default"` entry, `serving_default` calls `obj` on its Keras inputs (named
            after them; outputs named after the model's output dict keys, or its `output_names`).
        overwrite: bool, replace an existing version. Defaults to `False`.
        assets: optional list of file paths copied into the export's `assets/` (e.g.
            vocabularies), tracked so that `tf.saved_model.load(path).assets` finds them.
        warmup_requests: optional list of `(signature_name, {input_name: array})`: written as
            `assets.extra/tf_serving_warmup_requests` (a TFRecord file of `PredictionLog`s, the
            tensorflow-serving-api protos), which TF Serving runs once when it loads the version,
            before it answers requests. Defaults to `None`: no file.
        container_base_path: the absolute path at which the TF Serving container sees
            `base_dir`; `models.config` lists `<container_base_path>/<name>`. Defaults to
            `None`: the `base_path` an existing entry of `name` has (one set by hand is kept),
            else `"/models"` (`docker run -v "$PWD/saved_models:/models" ...`).

    Returns:
        The export path `<base_dir>/<name>/<version>` as a string (an existing
        zero-padded folder of that version, e.g. `0001`, when `overwrite=True`).

    Raises:
        FileExistsError: the version exists and `overwrite=False`.
        NotADirectoryError: `base_dir` or `<base_dir>/<name>` is a file, or `models.config` is
            a folder.
        OSError: `base_dir` is not writable.
        ValueError: an invalid `name`, `version`, `signatures`, `assets` or
            `container_base_path`, an unbuilt `obj`, a non-dense output, or a `models.config`
            that is not a `model_config_list`.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> from keras_attention.layers import AdditiveAttention
    >>> query = keras.Input((8,), name="query")
    >>> memory = keras.Input((None, 4), name="memory")
    >>> context = AdditiveAttention(units=8)(query, memory)
    >>> model = keras.Model({"query": query, "memory": memory}, {"context": context})
    >>> base_dir = tempfile.mkdtemp()
    >>> path = export_saved_model(model, base_dir, name="attention")
    >>> os.path.relpath(path, base_dir), sorted(os.listdir(path))
    ('attention/1', ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables'])
    >>> export_saved_model(model, base_dir, name="attention")  # the next free version
    '.../attention/2'
    >>> print(open(os.path.join(base_dir, "models.config")).read())
    model_config_list {
      config {
        name: "attention"
        base_path: "/models/attention"
        model_platform: "tensorflow"
      }
    }
    """
    name = _check_name(obj, name)
    container_base_path = _check_container_base_path(container_base_path)
    base_dir = pathlib.Path(base_dir)
    model_dir = base_dir / name
    _check_target(base_dir, model_dir)  # before any tracing: a bad target fails in milliseconds
    version = _check_version(version, model_dir)
    path = pathlib.Path(files.version_folder(model_dir, version))  # `0001` too: TF Serving's 1
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"export_saved_model: version {version} of model {name!r} exists at {str(path)!r}; "
            f"pass overwrite=True to replace it or version=None for the next free one. "
            f"Received: version={version}, overwrite=False"
        )
    asset_paths = _check_assets(assets)
    signatures = _check_signatures(signatures)
    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(model_dir)
    try:  # TF Serving ignores non-numeric directories, so the staging area is never served
        staging = pathlib.Path(tempfile.mkdtemp(prefix=_staging_prefix(version), dir=model_dir))
    except OSError as error:
        _remove_if_empty(model_dir, created)
        raise OSError(
            error.errno,
            f"export_saved_model: cannot write into {str(model_dir)!r} ({error.strerror}); "
            f"`base_dir` must be a writable folder. Received: base_dir={str(base_dir)!r}",
        ) from None
    try:
        archive = _build_archive(obj, signatures, asset_paths)
        staged = staging / "export"
        archive.write_out(str(staged), verbose=False)
        if warmup_requests:
            _write_warmup_requests(staged, warmup_requests, name)
        _publish(staged, path, staging, overwrite, base_dir, name, container_base_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(model_dir, created)
    return str(path)


WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _write_warmup_requests(export_dir, requests, name):
    """Writes TF Serving's warm-up file: one `PredictionLog` per `(signature, inputs)`."""
    import tensorflow as tf

    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "export_saved_model: `warmup_requests` are written as tensorflow-serving-api "
            "protos; install it (`pip install keras-attention[serving]`)"
        ) from error
    path = pathlib.Path(export_dir) / WARMUP_FILE
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = signature_name
            for input_name, value in inputs.items():
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def update_models_config(base_dir, name, container_base_path=None):
    """Adds (or updates) model `name` in `<base_dir>/models.config`; returns the config path.

    The file is a TF Serving `ModelServerConfig` text proto with a `model_config_list`; it is
    parsed and written with the protobuf classes, so it always parses. Leading `#` comment lines
    are kept. Calling it again with the same arguments leaves the file byte-identical. It is
    replaced atomically (a temporary file renamed over it), keeping the old file's permissions;
    a new file gets `0o666` less the umask (`0o644` with the usual umask `022`), so a TF Serving
    process running as another user can read it.

    Args:
        base_dir: the directory holding `models.config`.
        name: the model name (see `export_saved_model`).
        container_base_path: the container path of `base_dir`. Defaults to `None`: an
            existing entry's `base_path` is kept (e.g. one edited by hand), a new entry gets
            `"/models/<name>"`.

    Returns:
        The path of `models.config` as a string.

    Example:

    >>> import tempfile
    >>> base_dir = tempfile.mkdtemp()
    >>> path = update_models_config(base_dir, "a")
    >>> path = update_models_config(base_dir, "b", container_base_path="/srv/models")
    >>> config = read_models_config(base_dir)
    >>> [(c.name, c.base_path) for c in config.model_config_list.config]
    [('a', '/models/a'), ('b', '/srv/models/b')]
    """
    name = _check_name(None, name)
    container_base_path = _check_container_base_path(container_base_path)
    config_path = pathlib.Path(base_dir) / MODELS_CONFIG
    config = read_models_config(base_dir)
    header = ""
    if config_path.exists():
        lines = config_path.read_text().splitlines(keepends=True)
        header = "".join(line for line in _leading_comments(lines))
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        entry = entries.add(name=name)
    if container_base_path is not None or not entry.base_path:
        entry.base_path = posixpath.join(container_base_path or "/models", name)
    entry.model_platform = "tensorflow"
    text = header + _config_to_text(config)
    if not config_path.exists() or config_path.read_text() != text:
        _atomic_write(config_path, text)
    return str(config_path)


def read_models_config(base_dir):
    """Parses `<base_dir>/models.config` into a `ModelServerConfig` (empty if there is none).

    Raises:
        ValueError: the file does not parse, or holds a `custom_model_config`.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    config_path = pathlib.Path(base_dir) / MODELS_CONFIG
    if not config_path.exists():
        config.model_config_list.SetInParent()
        return config
    try:
        text_format.Parse(config_path.read_text(), config)
    except text_format.ParseError as error:
        raise ValueError(
            f"{str(config_path)!r} is not a TF Serving ModelServerConfig text proto ({error}). "
            f"Received: file={str(config_path)!r}"
        ) from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(
            f"{str(config_path)!r} holds a custom_model_config; the exports need a "
            f"model_config_list. Received: file={str(config_path)!r}"
        )
    config.model_config_list.SetInParent()
    return config


# -- verification ------------------------------------------------------------------------------


@dataclasses.dataclass
class VerifyReport:
    """What `verify_export` found.

    Attributes:
        path: the export directory.
        signature_name: the signature that was run.
        signatures: `{name: {"method_name", "inputs", "outputs"}}` as the TF1 loader sees them;
            inputs and outputs map tensor names to `{"dtype", "shape", "tensor"}`.
        sizes: bytes of `saved_model.pb`, `variables/`, `assets/` and the whole export (`total`).
        max_abs_diff: `{format: {output: max |served - eager|}}` for the `instances` and `inputs`
            REST formats.
        atol: the tolerance.
        problems: what failed; empty when the export answers like the eager model.
        notes: what was skipped and why.
    """

    path: str
    signature_name: str
    signatures: dict
    sizes: dict
    max_abs_diff: dict
    atol: float
    problems: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        """Whether every request format answered and matched the eager outputs within `atol`."""
        return not self.problems

    def to_dict(self):
        """The report as plain JSON-serializable data (with `ok`)."""
        return {**dataclasses.asdict(self), "ok": self.ok}

    def __str__(self):
        return format_report(self)


def verify_export(path, examples, model=None, signature_name="serving_default", atol=1e-5):
    """Loads an export like TF Serving in a fresh process, answers REST requests, compares.

    In a child Python process the SavedModel is loaded with `tf.compat.v1.saved_model.loader.load`
    in a TF1 session with the `serve` tags (TF Serving's `SavedModelBundle` path); the signature
    defs are read back (method name, input and output names, dtypes, shapes); the examples are
    sent as REST bodies in the row format (`{"instances": [...]}`, one dict per example) and the
    columnar format (`{"inputs": {...}}`), each converted into a serialized `PredictRequest`
    proto, fed to the session with `tf.make_ndarray`, and the outputs compared with the eager
    ones.

    Args:
        path: the export directory (holding `saved_model.pb`).
        examples: dict `{input_name: array}` (a batch along axis 0), or one array for a
            signature with a single input.
        model: what gives the eager outputs: a Keras model (called on the examples in the
            structure of its inputs, `training=False`, outputs named as `export_saved_model`
            names them) or a callable taking the examples dict and returning a dict of outputs.
            Defaults to the signature of `tf.saved_model.load(path)` in this process.
        signature_name: the signature to run. Defaults to `"serving_default"`.
        atol: the largest accepted absolute difference. Defaults to `1e-5`.

    Returns:
        A `VerifyReport`; `report.ok` is `False` (and `report.problems` says why) when a
        signature check fails or a difference exceeds `atol`. `print(report)` shows it.

    Raises:
        FileNotFoundError: `path` holds no `saved_model.pb`.
        ValueError: `examples` do not name the signature's inputs.
        RuntimeError: the fresh process failed (its error output is in the message).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> inputs = keras.Input((3,), name="x")
    >>> model = keras.Model(inputs, {"y": keras.layers.Dense(2, name="dense")(inputs)})
    >>> path = export_saved_model(model, tempfile.mkdtemp(), name="dense")
    >>> report = verify_export(path, {"x": np.ones((2, 3), "float32")}, model=model)
    >>> report.ok, report.signatures["serving_default"]["inputs"]["x"]["shape"]
    (True, [None, 3])
    """
    atol = number("verify_export", "atol", atol, low=0.0)  # NaN would accept anything
    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"verify_export: no saved_model.pb in {str(path)!r}. Received: path={str(path)!r}"
        )
    signature = _read_signature_def(path, signature_name)
    examples = _check_examples(examples, signature)
    expected = _eager_outputs(path, examples, model, signature_name, signature)
    problems, notes, bodies = [], [], {}
    for format in _FORMATS:
        try:
            bodies[format] = arrays_to_rest(examples, format)
        except ValueError as error:
            notes.append(f"{format}: not sent ({error})")
    if not bodies:  # nothing a server could be sent: no check to report as passed
        raise ValueError(
            "verify_export: the examples cannot be sent to TF Serving in either request format: "
            + "; ".join(notes)
        )
    child = _run_child(path, signature_name, bodies)
    problems += child["problems"]
    max_abs_diff = {}
    for format in bodies:
        served = {
            key.split("/", 1)[1]: value
            for key, value in child["outputs"].items()
            if key.startswith(format + "/")
        }
        if not served:
            continue
        max_abs_diff[format], format_problems = _compare(format, served, expected, atol)
        problems += format_problems
    return VerifyReport(
        path=str(path),
        signature_name=signature_name,
        signatures=child["signatures"],
        sizes=export_sizes(path),
        max_abs_diff=max_abs_diff,
        atol=atol,
        problems=problems,
        notes=notes,
    )


def export_sizes(path):
    """Bytes of `saved_model.pb`, `variables/`, `assets/` and the whole export directory."""
    path = pathlib.Path(path)

    def size(p):
        if p.is_file():
            return p.stat().st_size
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0

    return {
        "saved_model.pb": size(path / "saved_model.pb"),
        "variables": size(path / "variables"),
        "assets": size(path / "assets"),
        "total": size(path),
    }


def format_report(report):
    """A readable multi-line summary of a `VerifyReport` (what the CLI prints)."""
    lines = [f"SavedModel {report.path}: {'OK' if report.ok else 'FAILED'}"]
    for name, signature in report.signatures.items():
        marker = "*" if name == report.signature_name else " "
        lines.append(f" {marker} signature {name!r} ({signature['method_name']})")
        for kind in ("inputs", "outputs"):
            for key, info in signature[kind].items():
                shape = "?" if info["shape"] is None else tuple(info["shape"])
                lines.append(f"      {kind[:-1]:6} {key}: {info['dtype']} {shape}")
    sizes = ", ".join(f"{key} {_human_bytes(value)}" for key, value in report.sizes.items())
    lines.append(f"  sizes: {sizes}")
    for format, diffs in report.max_abs_diff.items():
        shown = ", ".join(f"{key} {value:.3g}" for key, value in diffs.items())
        lines.append(f"  max |served - eager| ({format}, atol {report.atol:g}): {shown}")
    lines += [f"  note: {note}" for note in report.notes]
    lines += [f"  problem: {problem}" for problem in report.problems]
    return "\n".join(lines)


# -- export helpers ----------------------------------------------------------------------------


def _check_name(obj, name):
    if name is None:
        name = getattr(obj, "name", None)
    if (
        not isinstance(name, str)
        or not _NAME_PATTERN.match(name)
        or set(name) == {"."}
        or len(name) > 255
    ):
        raise ValueError(
            "`name` must be a TF Serving model name and directory name: letters, digits, '-', "
            f"'_' and '.', starting with a letter or digit. Received: name={name!r}"
        )
    return name


def _check_container_base_path(container_base_path):
    if container_base_path is None:  # keep an existing entry's, else "/models"
        return None
    if (
        not isinstance(container_base_path, str)
        or not container_base_path.startswith("/")
        or '"' in container_base_path
        or "\\" in container_base_path
    ):
        raise ValueError(
            "`container_base_path` must be an absolute POSIX path (where the container sees "
            f"base_dir). Received: container_base_path={container_base_path!r}"
        )
    return container_base_path.rstrip("/") or "/"


def latest_version(path):
    """`path` itself when it holds `saved_model.pb`, else its highest version folder that does.

    So `<base_dir>/<name>` (the folder TF Serving is pointed at) names the version it serves.
    Raises `FileNotFoundError`, naming `path`, when neither holds a SavedModel.
    """
    found = files.latest_version(path)
    if not os.path.isfile(os.path.join(found, "saved_model.pb")):
        path = os.fspath(path)
        raise FileNotFoundError(
            f"{path!r} holds no saved_model.pb and no version folder (1, 2, ...) with one: "
            f"give a SavedModel version directory or the model folder above it. "
            f"Received: path={path!r}"
        )
    return found


# Staging folders are `.tmp-<version>-<host>-<pid>-<random>`: a later export on the same host
# removes those whose process is gone (a killed export), never another live export's.
_STAGING = re.compile(r"^\.tmp-\d+-(?P<host>[A-Za-z0-9_.-]*)-(?P<pid>\d+)-")


def _host():
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64]


def _staging_prefix(version):
    return f".tmp-{version}-{_host()}-{os.getpid()}-"


def _process_alive(pid):
    if os.name != "posix":  # Windows: os.kill(pid, 0) would send CTRL_C_EVENT, not probe
        return True  # unknowable here: the folder is kept
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or not knowable: keep its folder
    return True


def _remove_stale_staging(model_dir):
    """Removes staging folders left by exports on this host whose process has ended."""
    host = _host()
    with contextlib.suppress(OSError):
        for entry in model_dir.iterdir():
            match = _STAGING.match(entry.name)
            if (
                match
                and entry.is_dir()
                and match["host"] == host
                and not _process_alive(int(match["pid"]))
            ):
                shutil.rmtree(entry, ignore_errors=True)


def _check_version(version, model_dir):
    if version is None:
        versions = files.saved_model_versions(model_dir, loadable=False)
        return versions[-1] + 1 if versions else 1
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 1:
        raise ValueError(
            f"`version` must be a positive int or None (the next free version). "
            f"Received: version={version!r}"
        )
    return int(version)


def _check_assets(assets):
    if assets is None:
        return []
    if isinstance(assets, str | os.PathLike) or not isinstance(assets, list | tuple):
        raise ValueError(f"`assets` must be a list of file paths. Received: assets={assets!r}")
    paths = [pathlib.Path(a) for a in assets]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"export_saved_model: asset {str(p)!r} is not a file. Received: assets={assets!r}"
            )
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ValueError(
            "`assets` must have distinct file names (they all land in assets/). "
            f"Received: assets={assets!r}"
        )
    return [str(p.resolve()) for p in paths]


def _check_signatures(signatures):
    if signatures is None:
        return {}
    if not isinstance(signatures, dict):
        raise ValueError(
            "`signatures` must be a dict {signature_name: (fn, input_signature)}. "
            f"Received: signatures={signatures!r}"
        )
    checked = {}
    for key, entry in signatures.items():
        if not isinstance(key, str) or not _SIGNATURE_PATTERN.match(key):
            raise ValueError(
                "`signatures` keys must be signature names (a letter, then letters, digits and "
                f"'_'). Received: signatures key {key!r}"
            )
        if not (isinstance(entry, tuple | list) and len(entry) == 2 and callable(entry[0])):
            raise ValueError(
                f"`signatures[{key!r}]` must be a pair (fn, input_signature). "
                f"Received: signatures[{key!r}]={entry!r}"
            )
        checked[key] = (entry[0], _named_specs(key, entry[0], entry[1]))
    return checked


def _named_specs(key, fn, input_signature):
    """`(names, specs, by_keyword)`: the input names and `tf.TensorSpec`s carrying them."""
    if isinstance(input_signature, dict):
        names, specs, by_keyword = list(input_signature), list(input_signature.values()), True
    elif isinstance(input_signature, list | tuple):
        specs, by_keyword = list(input_signature), False
        try:
            parameters = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            parameters = []
        names = [
            spec.name
            if isinstance(spec, tf.TensorSpec) and spec.name
            else (parameters[i] if i < len(parameters) else None)
            for i, spec in enumerate(specs)
        ]
    else:
        names, specs, by_keyword = [], None, False
    if (
        specs is None
        or not all(isinstance(s, tf.TensorSpec) for s in specs)
        or not all(isinstance(n, str) and _SIGNATURE_PATTERN.match(n) for n in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"`signatures[{key!r}]` needs an input_signature of named tf.TensorSpecs (a list, "
            "or a dict {input_name: tf.TensorSpec}) with distinct names made of letters, digits "
            f"and '_'. Received: input_signature={input_signature!r}"
        )
    specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in zip(specs, names, strict=True)]
    return names, specs, by_keyword


def _default_signature(obj):
    """`serving_default` from a model's Keras inputs, which give names, shapes and dtypes."""
    inputs = getattr(obj, "inputs", None) if isinstance(obj, keras.Model) else None
    if not inputs:
        raise ValueError(
            "export_saved_model: `obj` has no Keras inputs to derive `serving_default` from "
            "(a subclassed model or a layer); pass signatures={'serving_default': (fn, "
            f"input_signature)}}. Received: obj={type(obj).__name__}"
        )
    names = [t.name for t in inputs]
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name) for t in inputs]

    def serve(*args):
        return _call_model(obj, dict(zip(names, args, strict=True)))

    return serve, (names, specs, False)


def _call_model(model, arrays):
    """Calls a Keras model on `{input_name: tensor}` in the structure of its inputs."""
    inputs = model.inputs
    try:
        structure = model.input
    except (AttributeError, ValueError):
        structure = inputs[0] if len(inputs) == 1 else list(inputs)
    flat = [arrays[t.name] for t in keras.tree.flatten(structure)]
    return model(keras.tree.pack_sequence_as(structure, flat), training=False)


def _output_names(model):
    names = getattr(model, "output_names", None) or []
    return names if len(set(names)) == len(names) else []


def _named_outputs(outputs, output_names=(), where="outputs"):
    """Outputs as a flat dict of dense tensors: dict keys, else `output_names`, else `output_<i>`."""
    if isinstance(outputs, dict):
        named = dict(outputs)
    else:
        flat = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        names = list(output_names) if len(output_names) == len(flat) else []
        named = {(names[i] if names else f"output_{i}"): value for i, value in enumerate(flat)}
    for key, value in named.items():
        if isinstance(value, tf.RaggedTensor | tf.SparseTensor) or getattr(value, "sparse", False):
            raise ValueError(
                f"{where}: output {key!r} is a {type(value).__name__}; TF Serving signatures "
                "need dense tensors (convert with `.to_tensor()` or `tf.sparse.to_dense`). "
                f"Received: {key}={type(value).__name__}"
            )
        if not (tf.is_tensor(value) or isinstance(value, np.ndarray)):
            raise ValueError(
                f"{where}: output {key!r} must be a dense tensor (outputs are a flat dict of "
                f"tensors). Received: {key}={type(value).__name__}"
            )
    return named


def _endpoint(key, fn, names, by_keyword, output_names=()):
    def endpoint(*args):
        outputs = fn(**dict(zip(names, args, strict=True))) if by_keyword else fn(*args)
        return _named_outputs(outputs, output_names, where=f"signatures[{key!r}]")

    return endpoint


def _build_archive(obj, signatures, asset_paths):
    if not isinstance(obj, keras.layers.Layer):
        raise ValueError(
            f"`obj` must be a keras.Model or keras.layers.Layer. Received: obj={type(obj).__name__}"
        )
    if not obj.built:
        raise ValueError(
            "export_saved_model: `obj` must be built (call it once or build it) before export. "
            f"Received: obj={obj.name!r} with built=False"
        )
    entries = dict(signatures)
    output_names = {}
    if "serving_default" not in entries:
        entries = {"serving_default": _default_signature(obj), **entries}
        output_names["serving_default"] = _output_names(obj)
    archive = keras.export.ExportArchive()
    archive.track(obj)
    for key, (fn, (names, specs, by_keyword)) in entries.items():
        endpoint = _endpoint(key, fn, names, by_keyword, output_names.get(key, ()))
        traced = archive.add_endpoint(key, endpoint, input_signature=specs)
        traced.get_concrete_function()  # trace now: a bad output fails before anything is written
    if asset_paths:
        # Tracked on the archive's root object, the assets are copied into `assets/` and come
        # back as `tf.saved_model.load(path).assets` with their new paths.
        archive._tf_trackable.assets = [tf.saved_model.Asset(p) for p in asset_paths]
    return archive


def _check_target(base_dir, model_dir):
    """Refuses, before tracing, a target that cannot take the export."""
    for what, folder in (("base_dir", base_dir), ("the model folder", model_dir)):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(
                f"export_saved_model: {what} {str(folder)!r} is a file, not a folder. "
                f"Received: base_dir={str(base_dir)!r}"
            )
    config_path = base_dir / MODELS_CONFIG
    if config_path.exists() and not config_path.is_file():
        raise NotADirectoryError(
            f"export_saved_model: {str(config_path)!r} must be a file (TF Serving's model "
            f"config), not a folder. Received: base_dir={str(base_dir)!r}"
        )
    read_models_config(base_dir)  # a ValueError now, not after the export is written
    existing = next((p for p in (model_dir, *model_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"export_saved_model: {str(existing)!r} is not writable; `base_dir` must be a "
            f"writable folder. Received: base_dir={str(base_dir)!r}"
        )


def _publish(staged, path, staging, overwrite, base_dir, name, container_base_path):
    """Lists the model in `models.config`, then renames the version into place (or rolls back)."""
    config_path = pathlib.Path(base_dir) / MODELS_CONFIG
    previous = config_path.read_text() if config_path.exists() else None
    update_models_config(base_dir, name, container_base_path=container_base_path)
    try:
        _move_into_place(staged, path, staging, overwrite)
    except BaseException:
        if previous is None:
            config_path.unlink(missing_ok=True)
        elif config_path.read_text() != previous:
            _atomic_write(config_path, previous)
        raise


def _remove_if_empty(folder, created):
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: nothing was exported into it


def _move_into_place(staged, path, staging, overwrite):
    if path.exists():
        if not overwrite:  # it appeared while we were writing
            raise FileExistsError(
                f"export_saved_model: {str(path)!r} exists. Received: overwrite=False"
            )
        if _exchange(staged, path):  # no moment without version N for TF Serving's poll
            return  # the old version is now `staged`, removed with the staging directory
        os.rename(path, staging / "previous")  # removed with the staging directory
    os.rename(staged, path)


def _exchange(first, second):
    """Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc < 2.28, or another libc
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    return done == 0  # EINVAL/ENOSYS (a file system without it): the two renames instead


def _leading_comments(lines):
    for line in lines:
        if not line.startswith("#"):
            return
        yield line if line.endswith("\n") else line + "\n"


def _config_to_text(config):
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    return text if text.strip() else "model_config_list {\n}\n"


def _atomic_write(path, text):
    """Writes `text` to `path` through a temporary sibling renamed over it, keeping its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)  # mkstemp's 0o600 would hide models.config from TF Serving
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def file_mode(path):
    """The permission bits a rewritten `path` keeps: its own, or `0o666` less the umask if new."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


# -- verification helpers ----------------------------------------------------------------------


def _read_signature_def(path, signature_name):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            if signature_name in meta_graph.signature_def:
                return meta_graph.signature_def[signature_name]
            available = sorted(k for k in meta_graph.signature_def if not k.startswith("__"))
            raise ValueError(
                f"verify_export: {str(path)!r} has no signature {signature_name!r}; it has "
                f"{available}. Received: signature_name={signature_name!r}"
            )
    raise ValueError(
        f"verify_export: {str(path)!r} has no MetaGraph tagged 'serve' (TF Serving loads that "
        f"one). Received: path={str(path)!r}"
    )


def _check_examples(examples, signature):
    names = sorted(signature.inputs)
    if not isinstance(examples, dict):
        if len(names) != 1:
            raise ValueError(
                f"verify_export: `examples` must be a dict naming the inputs {names}. "
                f"Received: examples of type {type(examples).__name__}"
            )
        examples = {names[0]: examples}
    if sorted(examples) != names:
        raise ValueError(
            f"verify_export: `examples` must name exactly the signature's inputs {names}. "
            f"Received: examples keys={sorted(examples)}"
        )
    arrays = {}
    for key in names:
        dtype = tf.as_dtype(signature.inputs[key].dtype)
        value = examples[key]
        value = keras.ops.convert_to_numpy(value) if tf.is_tensor(value) else np.asarray(value)
        arrays[key] = value.astype(object if dtype == tf.string else dtype.as_numpy_dtype)
    return arrays


def _eager_outputs(path, examples, model, signature_name, signature):
    if model is None:
        loaded = tf.saved_model.load(str(path))
        outputs = loaded.signatures[signature_name](
            **{k: tf.constant(v) for k, v in examples.items()}
        )
    elif isinstance(model, keras.Model) and model.inputs:
        outputs = _named_outputs(_call_model(model, examples), _output_names(model), "model")
    else:
        outputs = model(examples)
    if not isinstance(outputs, dict):
        names = sorted(signature.outputs)
        outputs = _named_outputs(outputs, names if len(names) == 1 else (), "model")
    return {k: np.asarray(keras.ops.convert_to_numpy(v)) for k, v in outputs.items()}


def _run_child(path, signature_name, bodies):
    with tempfile.TemporaryDirectory(prefix="keras_attention_verify_") as tmp:
        tmp = pathlib.Path(tmp)
        job = {
            "path": str(path.resolve()),
            "model_name": path.resolve().parent.name,
            "signature_name": signature_name,
            "bodies": bodies,
            "outputs_path": str(tmp / "outputs.npz"),
            "report_path": str(tmp / "report.json"),
        }
        (tmp / "job.json").write_text(json.dumps(job))
        package_root = str(pathlib.Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = subprocess.run(
            [sys.executable, "-m", "keras_attention.export._verify_child", str(tmp / "job.json")],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"verify_export: loading {str(path)!r} in a fresh process failed "
                f"(exit code {result.returncode}):\n{result.stderr[-4000:]}"
            )
        report = json.loads((tmp / "report.json").read_text())
        with np.load(tmp / "outputs.npz", allow_pickle=False) as data:
            report["outputs"] = {key: data[key] for key in data.files}
        for key, value in report.pop("string_outputs", {}).items():
            items = [base64.b64decode(item) for item in value["b64"]]
            array = np.empty(len(items), dtype=object)
            array[:] = items
            report["outputs"][key] = array.reshape(value["shape"])
    return report


def _compare(format, served, expected, atol):
    diffs, problems = {}, []
    if sorted(served) != sorted(expected):
        problems.append(
            f"{format}: the served outputs {sorted(served)} are not the eager outputs "
            f"{sorted(expected)}"
        )
    for key in sorted(set(served) & set(expected)):
        actual, wanted = served[key], expected[key]
        if actual.shape != wanted.shape:
            problems.append(
                f"{format}: output {key!r} has shape {actual.shape}, the eager one {wanted.shape}"
            )
            continue
        if actual.dtype.kind in "biuf" and wanted.dtype.kind in "biuf":
            both = np.float64
            diff = np.abs(actual.astype(both) - wanted.astype(both))
            diffs[key] = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
        else:
            diffs[key] = 0.0 if np.array_equal(actual, wanted) else float("inf")
        if diffs[key] > atol:
            problems.append(
                f"{format}: output {key!r} differs from the eager output by {diffs[key]:.3g} "
                f"> atol={atol:g}"
            )
    return diffs, problems


def _human_bytes(size):
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
