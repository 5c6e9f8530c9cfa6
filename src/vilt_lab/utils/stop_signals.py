"""The signals that ask a run to stop: a scheduler's preemption or time limit.

SIGTERM is what `scancel`, a preemption and `kill` send; SIGUSR1/SIGUSR2 are what a job asks
for minutes before its time limit (`sbatch --signal`, submitit's `USR2@90`). Only a training
process acts on them (`training.preemption`); its data-loading workers, which inherit the
handlers of the process that forked them, ignore them, so the main process alone decides when
to stop and nothing races it to save or requeue.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def ignore_stop_signals(_worker_id: int | None = None) -> None:
    """Ignore the stop signals in this process (a DataLoader `worker_init_fn`)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
