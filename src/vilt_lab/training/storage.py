"""Writes the run's storage may refuse: a full disk, an I/O error, a read-only or over-quota
filesystem. Each stops the run with one message naming the path and the free space there (the
environment needs fixing, not vilt_lab: a `UserError`, no traceback), and none leaves a file that
looks complete: checkpoints by their manifest (`checkpoint`), whole files by a rename
(`write_text_atomically`), appended lines by cutting a failed append back (`append_line`).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config.errors import UserError


class StorageError(UserError):
    """A write the storage refused; ``path`` is what was written, ``errno`` why (ENOSPC, EIO...)."""

    def __init__(self, action: str, path: str | os.PathLike, err: OSError, consequence: str = "") -> None:
        self.path = str(path)
        self.errno = err.errno
        reason = err.strerror or str(err)
        super().__init__(f"{action} {path} failed: {reason}; {free_space(path)}{consequence}")


def free_space(path: str | os.PathLike) -> str:
    """How much room the filesystem holding ``path`` (or its nearest existing parent) has left."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        usage = shutil.disk_usage(existing)
    except OSError as err:
        return f"the free space of {existing} is unknown ({err.strerror or err})"
    return f"{readable_size(usage.free)} free of {readable_size(usage.total)} on the filesystem of {existing}"


def readable_size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextmanager
def storage_refusals(action: str, path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised in the block becomes a `StorageError` naming ``path``."""
    try:
        yield
    except OSError as err:
        raise StorageError(action, path, err) from err


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, flushed to disk, renamed
    over it. A failed write removes the temporary file and leaves ``path`` as it was."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    with storage_refusals("writing", path):
        try:
            with staging.open("w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(staging, path)
        except OSError:
            staging.unlink(missing_ok=True)
            raise


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one write; when the storage refuses part of it,
    the file is cut back to its length before, so a reader never meets half a line."""
    path = Path(path)
    data = (line + "\n").encode("utf-8")
    with storage_refusals("appending to", path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            length = os.fstat(fd).st_size
            try:
                # One write; a nearly full disk may take part of it, and refuses the rest.
                remaining = memoryview(data)
                while remaining:
                    written = os.write(fd, remaining)
                    if written == 0:
                        raise OSError(errno.EIO, "the storage took none of the line")
                    remaining = remaining[written:]
            except OSError:
                os.ftruncate(fd, length)
                raise
        finally:
            os.close(fd)
