"""One rank of the stalled-rank test (started by torchrun from test_watchdog.py): rank 1 stops
itself (SIGSTOP, as a debugger or a frozen node would) before its third optimizer step, so rank 0
waits for it in the step's gradient all-reduce until its progress watchdog ends it.

    torchrun --nproc_per_node 2 tests/helpers/stalled_rank_job.py override ...
"""

from __future__ import annotations

import os
import signal
import sys

import vilt_lab.train as train_module
from helpers.configs import compose_config
from vilt_lab.training.trainer import Trainer

STALLS_AT_STEP = 2
train_step = Trainer.train_step


def stalling_train_step(self, batches):
    if os.environ["RANK"] == "1" and self.step == STALLS_AT_STEP:
        os.kill(os.getpid(), signal.SIGSTOP)
    return train_step(self, batches)


Trainer.train_step = stalling_train_step
train_module.run(compose_config(sys.argv[1:]))
