"""Where a demo writes: a new numbered directory beside an earlier run's, never over it."""

import os
import re


def new_output_dir(output_dir, overwrite=False, demo="demo"):
    """The directory a demo writes into, created; an earlier run's files are never replaced.

    `output_dir` itself when it does not exist or is empty (or with
    `overwrite`); otherwise the next free numbered directory beside it,
    `<output_dir>-2`, `-3`, ... (one more than the highest number there, as
    an export takes the next free version). Prints where the demo writes.

    Args:
        output_dir: the directory asked for.
        overwrite: bool, write into `output_dir` even if it holds files (those
            of the same names are replaced). Defaults to `False`.
        demo: the demo's name, for the message.

    Returns:
        The path of the directory to write into.

    Example:

    >>> import tempfile
    >>> base = os.path.join(tempfile.mkdtemp(), "demo")
    >>> new_output_dir(base) == base
    demo: writing to ...
    True
    >>> open(os.path.join(base, "old.txt"), "w").close()
    >>> os.path.basename(new_output_dir(base))
    demo: ... holds an earlier run; writing to .../demo-2 (--overwrite writes into ...)
    'demo-2'
    >>> os.path.basename(new_output_dir(base))
    demo: ... holds an earlier run; writing to .../demo-3 (--overwrite writes into ...)
    'demo-3'
    """
    output_dir = os.path.normpath(os.fspath(output_dir))
    if output_dir in (".", "..") or output_dir.endswith(os.sep):  # "./.-2" would be hidden
        output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"`output_dir` must be a directory. Received: output_dir={output_dir!r} (a file)"
        )
    if overwrite or not os.path.isdir(output_dir) or not os.listdir(output_dir):
        os.makedirs(output_dir, exist_ok=True)
        print(f"{demo}: writing to {output_dir}", flush=True)
        return output_dir
    while True:  # another demo may take the same number first: then the next one
        path = f"{output_dir}-{_last_number(output_dir) + 1}"
        try:
            os.makedirs(path)
        except FileExistsError:
            continue
        print(
            f"{demo}: {output_dir} holds an earlier run; writing to {path} (--overwrite writes "
            f"into {output_dir} instead)",
            flush=True,
        )
        return path


def _last_number(output_dir):
    """The highest `n` of the `<output_dir>-<n>` directories (`1`: only `output_dir` itself)."""
    parent, name = os.path.split(output_dir)
    pattern = re.compile(re.escape(name) + r"-(\d+)")
    numbers = [
        int(match.group(1))
        for entry in os.listdir(parent or ".")
        if (match := pattern.fullmatch(entry))
    ]
    return max([1, *numbers])
