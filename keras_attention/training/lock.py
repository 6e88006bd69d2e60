"""One process per run directory: an OS lock on `<output_dir>/run.lock` while a run trains."""

import contextlib
import os

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: no flock; runs are not locked there)
    fcntl = None

LOCK_FILE = "run.lock"


class RunLockedError(OSError):
    """Another process holds the lock of a run directory (it is training into it)."""


@contextlib.contextmanager
def run_lock(output_dir):
    """Holds the run lock of `output_dir` (created if needed) for the `with` block.

    The lock is `fcntl.flock` on `<output_dir>/run.lock`, which holds the
    owner's PID for the message of the process that is refused. The operating
    system releases it when its process ends, however it ends: a `SIGKILL`
    leaves the file but no lock, and the next run takes it. On a normal exit
    the file is removed. A second `run_lock` on the same directory, from
    another process or this one, raises at once.

    Raises:
        RunLockedError: another process (named by its PID) holds the lock.
        ValueError: `output_dir` is a file.

    Example:

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with run_lock(directory):
    ...     with run_lock(directory):
    ...         pass
    Traceback (most recent call last):
    ...
    keras_attention.training.lock.RunLockedError: ...
    """
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            f"`output_dir` must be a directory. Received: output_dir={output_dir!r} (a file)"
        )
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    fd = _lock(path, output_dir)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a process waiting for it locks a new file
        os.close(fd)  # releases the flock


def _lock(path, output_dir):
    """An open descriptor of `path`, flock-ed; the file is the one at `path` now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{output_dir!r} is in use: process {holder} is training into it (lock file "
                f"{path}); wait for it to end, or choose another output directory"
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its owner removed it while ending: lock the file there now


def _holder(fd):
    """The PID written in the lock file (`'PID n'`), or `'(unknown PID)'`."""
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return f"PID {text}" if text.isdigit() else "(unknown PID)"
