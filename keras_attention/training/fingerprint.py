"""What a run directory records of its data and options, and what differs when a run is resumed.

A run is resumed only with the data and the options it was started with:

- options: every field of the task's config and of `FitConfig`, except those
  that decide how long or how loudly it trains (`RESUMABLE_FIT_OPTIONS`:
  `epochs` unless the cosine schedule spans them, `budget_minutes`,
  `verbose`, and the devices it runs on: `strategy`, `cpu_replicas`);
- data: a SHA-256 of the data as read (every example), of each file the data
  was given as (so a message names the file that changed), and of the
  contents of the files the data names (a captioner's images).
"""

import hashlib
import json
import os

# Fit options a resumed run may change: how long, how loudly and on how many devices it trains
# (the global batch, hence a step, is the same under every strategy), not what a step does.
RESUMABLE_FIT_OPTIONS = ("epochs", "budget_minutes", "verbose", "strategy", "cpu_replicas")


def data_hash(data):
    """A SHA-256 of the data as read (lists of strings), or `None` for no data."""
    if data is None:
        return None
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode("utf-8")).hexdigest()


def data_record(given, read):
    """`{"files", "named_files", "examples"}` of one split: what a message on resume names.

    `files` maps each file the data was given as (`given`: a path or a tuple
    of paths) to the SHA-256 of its bytes; `named_files` is one SHA-256 of
    the contents of the files the read data names (a list of paths, e.g. a
    captioner's images), or `None`; `examples` the number of examples.
    """
    if read is None:
        return None
    return {
        "files": {os.path.abspath(path): file_hash(path) for path in _given_files(given)},
        "named_files": _named_files_hash(read),
        "examples": _count(read),
    }


def file_hash(path):
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_differences(saved, current):
    """`[(split, what differs)]` between the data records of a run and of this call."""
    differences = []
    for split, now in current["data"].items():
        was = saved.get("data", {}).get(split)
        if was == now and _same_named_files(saved, current, split):
            continue
        differences.append((split, _explain(split, saved, current)))
    return differences


def option_differences(saved, current, defaults):
    """`[(name, saved value, current value)]` of the options a resumed run must keep.

    `saved` and `current` are run descriptions (`"config"`, `"fit"`);
    `defaults` maps `"config"`/`"fit"` to the defaults of their fields (for
    run files written before a field existed).
    """
    cosine = current["fit"].get("schedule") == "cosine"
    differences = []
    for section in ("config", "fit"):
        for name, now in current[section].items():
            free = section == "fit" and name in RESUMABLE_FIT_OPTIONS
            if free and not (name == "epochs" and cosine):
                continue
            was = saved.get(section, {}).get(name, defaults[section].get(name))
            if _normalized(was) != _normalized(now):
                differences.append((name, was, now))
    return differences


def _explain(split, saved, current):
    was, now = saved.get("data", {}).get(split), current["data"][split]
    if was is None:
        return f"it was started without {split} data"
    if now is None:
        return f"it was started with {split} data, none is given now"
    old = (saved.get("data_files") or {}).get(split) or {}
    new = current["data_files"][split]
    old_files, new_files = old.get("files", {}), new["files"]
    if old_files and list(old_files) != list(new_files):
        return (
            f"its {split} data was read from {_names(old_files)}, not {_names(new_files)}, and "
            "holds other examples"
        )
    changed = [path for path, digest in new_files.items() if old_files.get(path) != digest]
    if old_files and changed:
        return f"the {split} data file {', '.join(map(repr, changed))} changed since it started"
    if was == now:
        return f"the files its {split} data names (e.g. images) changed since it started"
    if "examples" in old:
        return f"its {split} data differs ({old['examples']} examples then, {new['examples']} now)"
    return f"its {split} data differs (fingerprint {was[:12]}..., now {now[:12]}...)"


def _same_named_files(saved, current, split):
    old = ((saved.get("data_files") or {}).get(split) or {}).get("named_files")
    new = (current["data_files"].get(split) or {}).get("named_files")
    return old is None or old == new


def _given_files(given):
    items = given if isinstance(given, tuple) else (given,)
    return [
        os.fspath(item)
        for item in items
        if isinstance(item, str | os.PathLike) and os.path.isfile(item)
    ]


def _named_files_hash(read):
    """One SHA-256 of the files named by a list of paths in the read data, or `None`."""
    lists = [part for part in (read if isinstance(read, tuple) else ()) if isinstance(part, list)]
    for paths in lists:
        if paths and all(isinstance(p, str) for p in paths) and all(map(os.path.isfile, paths)):
            digest = hashlib.sha256()
            for path in paths:
                digest.update(file_hash(path).encode("ascii"))
            return digest.hexdigest()
    return None


def _count(read):
    if isinstance(read, tuple) and read and isinstance(read[0], list):
        return len(read[0])
    return len(read) if isinstance(read, list) else None


def _names(files):
    return ", ".join(repr(path) for path in files) or "examples given in memory"


def _normalized(value):
    return json.loads(json.dumps(value))
