"""What is made on first use (the shapes world) is written once, by one process, the others waiting.

Every process that needs the directory calls `write_once`. A complete one is used as it is, with
no lock (a read-only copy works). Otherwise, under a file lock beside it, the first process to get
the lock writes it into a temporary directory and renames that into place; the others wait for
the lock and then find it complete. The lock orders the processes of one machine and, on a shared
filesystem, those of every node; nodes with disks of their own each write their own copy. Thanks
to the rename nobody ever reads a half-written directory, and a writer killed midway leaves only
the temporary one, which the next writer clears.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout


def write_once(target: Path, is_complete: Callable[[Path], bool], write: Callable[[Path], None]) -> bool:
    """Make the directory `target` with `write(a temporary directory)` unless `is_complete(target)`.

    Returns True in the process that wrote it. `target` may exist only as an empty directory:
    one holding anything else is never replaced (it may be someone's data).
    """
    target = Path(target)
    if is_complete(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(target.parent / f".{target.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process to finish writing {target}", flush=True)
        lock.acquire()
    try:
        if is_complete(target):
            return False
        if target.is_dir() and any(target.iterdir()):
            raise FileExistsError(
                f"{target} holds files but is incomplete: move it away to have it written afresh"
            )
        staging = target.parent / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)  # a killed writer's leftovers
        write(staging)
        os.replace(staging, target)  # rename(2) also replaces an empty directory
        return True
    finally:
        lock.release()
