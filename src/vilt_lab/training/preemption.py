"""Stopping on a scheduler's signal: finish the step, save it, say why, then let the job requeue.

A preemption or `scancel` sends SIGTERM; a time limit sends the signal the job asked for
(`sbatch --signal=USR1@300`, submitit's USR2). While `fit` runs, `StopRequest` records the first
such signal instead of dying mid-step. After each step every process learns whether any of them
was signalled (one all-reduce of a flag over a CPU (gloo) group, so it adds no GPU sync), and then
all stop after the same step: the trainer saves that step through the crash-safe checkpoint path
and raises `Stopped`. The entry point records the stop in the run dir and calls the handler that
was there before (submitit's requeues the job; without one, the process exits 128 + signal), and
the requeued job, which reruns the same command, resumes from exactly that step.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator

from ..utils.stop_signals import STOP_SIGNALS

# The signals a job asks for before its time limit (SIGTERM is a preemption's or scancel's).
TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class Stopped(Exception):
    """Training stopped after `step` on signal `signum`; its checkpoint is saved."""

    def __init__(self, signum: int, step: int, previous_handler: Any = None) -> None:
        super().__init__(signum, step, previous_handler)
        self.signum, self.step, self.previous_handler = signum, step, previous_handler

    def __str__(self) -> str:
        return (
            f"stopped by {signal.Signals(self.signum).name} after step {self.step} (its checkpoint is saved)"
        )

    def forward(self) -> None:
        """Hand the signal on as if the run had never caught it: the previous handler acts (a
        launcher's requeue), else the process exits with the status the signal would give."""
        if callable(self.previous_handler):
            self.previous_handler(self.signum, None)
        sys.exit(128 + self.signum)


class StopRequest:
    """The stop signals, caught while training (`with stop:`) and agreed on by every process."""

    def __init__(self, accelerator: Accelerator, timeout: timedelta) -> None:
        self.acc = accelerator
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        # A flag on the CPU: agreeing on it never waits for the GPU's queue.
        self._group = (
            dist.new_group(backend="gloo", timeout=timeout) if accelerator.num_processes > 1 else None
        )

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self.previous = {signum: signal.signal(signum, self._record) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def agreed(self) -> int | None:
        """The signal any process has received (the same answer on all), or None."""
        if self._group is None:
            return self.signum
        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag) or None

    def stopped(self, signum: int, step: int) -> Stopped:
        return Stopped(signum, step, self.previous.get(signum))
