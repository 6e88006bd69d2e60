"""JSON files of the package (task, run, tokenizer options): written atomically, read with a check."""

import json
import os
import secrets


def write_json(path, value):
    """Writes `value` as indented UTF-8 JSON through a temporary file renamed into place."""
    path = os.fspath(path)
    # A staging name of its own (two processes writing one file never share one), created as
    # `open` creates files (the umask's mode).
    staged = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(staged, "x", encoding="utf-8") as f:
            json.dump(value, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(staged, path)
    except BaseException:
        if os.path.exists(staged):
            os.remove(staged)
        raise


def read_json(path, expected_format, what):
    """The JSON object in `path`, checked to have `"format": expected_format`.

    Raises a `ValueError` naming the file when it is not JSON or not `what`
    (e.g. "a keras-attention task file").
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"'{path}' is not valid JSON: {error}") from None
    found = value.get("format") if isinstance(value, dict) else None
    if found != expected_format:
        raise ValueError(f"'{path}' is not {what}. Received: format={found!r}")
    return value


def saved_model_versions(model_dir, loadable=True):
    """The versions of a TF Serving model folder, sorted: folders named by ASCII digits only, as
    TF Serving reads them (an int64; `"²"` or `"١"` are not versions), holding a
    `saved_model.pb` (`loadable=False`: any such folder, e.g. to pick the next free version)."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(model_dir)
        if name.isascii()
        and name.isdigit()
        and os.path.isdir(os.path.join(model_dir, name))
        and (not loadable or os.path.isfile(os.path.join(model_dir, name, "saved_model.pb")))
    )


def latest_version(path):
    """`path` if it holds `saved_model.pb`, else its highest loadable version folder (TF
    Serving's pick), else `path` unchanged."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = saved_model_versions(path)
    return version_folder(path, versions[-1], loadable=True) if versions else path


def version_folder(model_dir, version, loadable=False):
    """The folder of `version` in `model_dir`: an existing folder that TF Serving reads as that
    version (`0001` is version 1; with `loadable`, one holding `saved_model.pb`), else
    `<model_dir>/<version>`."""
    model_dir = os.fspath(model_dir)
    if os.path.isdir(model_dir):
        for name in sorted(os.listdir(model_dir)):
            folder = os.path.join(model_dir, name)
            if (
                name.isascii()
                and name.isdigit()
                and int(name) == int(version)
                and os.path.isdir(folder)
                and (not loadable or os.path.isfile(os.path.join(folder, "saved_model.pb")))
            ):
                return folder
    return os.path.join(model_dir, str(int(version)))
