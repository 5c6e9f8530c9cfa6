"""The progress watchdog: a run whose optimizer steps stop (a rank hung in a collective after
another died or stalled, a dead data worker, a filesystem that blocks) ends itself instead of
holding its GPUs until the job's time limit.

A thread waits for the training loop's beats (one per optimizer step, `beat`). When none comes for
`trainer.watchdog_minutes`, it writes every thread's stack (faulthandler) to the run dir's hang
report of its rank, logs one line naming the rank and the last step, and ends the process with
`HANG_STATUS`: the main thread is stuck, so only the process can be ended, not unwound. The other
ranks, blocked in the next collective, time out in turn, each leaving its own report.
Evaluation pauses the clock (`paused`): a long evaluation is progress too.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

HANG_STATUS = 124  # what `timeout` exits with: the process ran out of its time
LOG_GRACE_S = 5.0


class ProgressWatchdog:
    """Ends the process when no `beat` comes for ``minutes`` (None: never; see the module
    docstring). ``report``: the file the stacks go to (None: stderr)."""

    def __init__(self, minutes: float | None, rank: int, report: Path | None) -> None:
        self.seconds = None if minutes is None else minutes * 60
        self.rank, self.report = rank, report
        self.last_step: int | None = None
        self._last_beat = time.monotonic()
        self._paused = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, step: int) -> None:
        """The loop finished optimizer step ``step``."""
        self.last_step = step
        self._last_beat = time.monotonic()

    @contextmanager
    def watching(self, step: int) -> Iterator[ProgressWatchdog]:
        """Watch while the block runs (the training loop, from step ``step`` on)."""
        if self.seconds is None:
            yield self
            return
        self.beat(step)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._watch, name="vilt-progress-watchdog", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stopped.set()
            self._thread.join()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The block's time does not count (an evaluation); the clock restarts after it."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
            self._last_beat = time.monotonic()

    def _watch(self) -> None:
        assert self.seconds is not None
        while True:
            left = self.seconds - (time.monotonic() - self._last_beat)
            if self._paused:
                left = self.seconds
            if left <= 0:
                self._hung()
                return
            if self._stopped.wait(min(left, 60.0)):
                return

    def _hung(self) -> None:
        after = "before its first step" if self.last_step is None else f"after step {self.last_step}"
        message = (
            f"rank {self.rank}: no optimizer step for {self.seconds / 60:g} minutes {after} "
            f"(trainer.watchdog_minutes); every thread's stack is in {self.report or 'stderr'}; ending "
            f"with status {HANG_STATUS}"
        )
        self._dump_stacks(message)
        print(f"vilt-train: {message}", file=sys.stderr, flush=True)
        # Logging takes locks that the hung thread may hold: a few seconds for it, then end anyway.
        logged = threading.Thread(target=_log_and_flush, args=(message,), daemon=True)
        logged.start()
        logged.join(timeout=LOG_GRACE_S)
        os._exit(HANG_STATUS)

    def _dump_stacks(self, message: str) -> None:
        if self.report is None:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            return
        try:
            with self.report.open("w") as f:
                f.write(message + "\n\n")
                f.flush()
                faulthandler.dump_traceback(file=f, all_threads=True)
        except OSError as err:  # a full or hung disk may be why the run stopped
            print(f"cannot write {self.report} ({err}); the stacks:", file=sys.stderr, flush=True)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def _log_and_flush(message: str) -> None:
    log.error("%s", message)
    for handler in logging.getLogger().handlers:  # train.log: os._exit skips the flush at exit
        handler.flush()
