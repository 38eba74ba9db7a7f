"""Atomic file writes: write to a temporary file beside the target, then rename over it, so a
reader (or a crash) sees either the old file or the new one, never a half-written one."""
from __future__ import annotations

import contextlib
import os
import secrets


def _create_temp(directory: str) -> tuple:
    # Not tempfile.mkstemp: it creates files readable by the owner only (0600), and the result
    # would keep that mode. os.open with 0o666 lets the umask decide, as for any new file.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".lstmfast-{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", overwrite: bool = True, encoding=None):
    """``with atomic_file(path, "w") as f: ...`` writes ``path`` atomically (fsynced). A new file
    gets the permissions the umask gives any new file."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    fd, tmp = _create_temp(directory)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path, what: str, not_same_as=None) -> None:
    """Fail before any work when ``path`` could not be written later: it must not be a directory,
    its directory must exist and be writable, and it must not be the file ``not_same_as`` (an
    input that writing would destroy). ``path`` None: nothing to check."""
    if path is None:
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory, expected a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{what} {path!r}: the directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{what} {path!r}: the directory {directory!r} is not writable")
    if not_same_as is not None and os.path.exists(path) and os.path.exists(not_same_as) \
            and os.path.samefile(path, not_same_as):
        raise ValueError(f"{what} {path!r} is the input file {os.fspath(not_same_as)!r} itself; choose another name")


def write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)
