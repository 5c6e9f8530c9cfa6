"""train.log: every run's log lines in its run dir (`RunDir.train_log`), beside what the console shows.

The main process writes everything the logging config lets through; the other processes add
only their warnings and errors, prefixed with their rank, so one file tells what went wrong on
which rank. Processes that do not see the run dir (a node without the shared disk) keep their
warnings on their own console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def run_log(path: Path, rank: int) -> Iterator[None]:
    """Copy the root logger's records into the file `path` while the block runs.

    The handler is removed at the end: Hydra's sequential sweeps run every job in one process,
    and each job's lines belong in its own run dir only.
    """
    path = Path(path)
    if rank != 0 and not path.parent.is_dir():
        yield
        return
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    if rank == 0:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
