"""train.log: every run's log lines in its run dir (`RunDir.train_log`), beside what the console shows.

The main process writes everything the logging config lets through, what it prints (the init
report, the summary table) but a live bar's redraws (the bar's timed lines reach the file through
`utils.progress.LOG_FILES_ONLY`), and the exception that ends a run, with its traceback; the other
processes add only their warnings and errors, prefixed with their rank, so one file tells what
went wrong on which rank. Processes that do not see the run dir (a node without the shared disk)
keep their warnings on their own console.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TextIO

from ..utils.progress import LOG_FILES_ONLY
from .preemption import Stopped


class _Tee:
    """Writes go to the console stream and to the log file (what `print` shows, in train.log),
    except a live bar's: it redraws its line with carriage returns and ends it with a lone
    newline, which a file would keep as one endless line."""

    def __init__(self, console: TextIO, file: TextIO) -> None:
        self.console, self.file = console, file
        self.redrawing = False

    def write(self, text: str) -> int:
        if text.startswith("\r") or (self.redrawing and text == "\n"):
            self.redrawing = text != "\n"
        else:
            self.redrawing = False
            self.file.write(text)
        return self.console.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.console.flush()

    def __getattr__(self, name: str):  # isatty, encoding, fileno...: the console's
        return getattr(self.console, name)


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
    LOG_FILES_ONLY.addHandler(handler)
    try:
        if rank != 0:
            yield
            return
        with redirect_stdout(_Tee(sys.stdout, handler.stream)):
            yield
    except Stopped:  # a stop on a signal: its own line says so, and nothing went wrong
        raise
    except BaseException as err:
        # The exception that ends the run, with its traceback, into the file only: the console
        # shows it anyway when it propagates.
        record = logging.LogRecord(
            "vilt_lab.train", logging.ERROR, __file__, 0, "run ended by %r", (err,), sys.exc_info()
        )
        handler.handle(record)
        raise
    finally:
        root.removeHandler(handler)
        LOG_FILES_ONLY.removeHandler(handler)
        handler.close()
