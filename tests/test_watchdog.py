"""The progress watchdog: a process whose optimizer steps stop writes every thread's stack to the
run dir and ends with a status and a message naming its rank and last step; steps, and
evaluations, keep it quiet.

`os._exit` is replaced by a recorder: the watchdog thread calls it while the main thread sleeps
in a step that hangs, and the test then lets the step go on.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.configs import FAST, fast_config
from helpers.ports import torchrun
from vilt_lab.train import run
from vilt_lab.training.run_dir import RunDir
from vilt_lab.training.trainer import Trainer
from vilt_lab.training.watchdog import HANG_STATUS, ProgressWatchdog

TICK_MINUTES = 0.2 / 60  # 0.2 s


@pytest.fixture
def ended(monkeypatch) -> tuple[list[int], threading.Event]:
    """The statuses os._exit was called with, and an event set at the first call."""
    statuses, first = [], threading.Event()

    def record(status: int) -> None:
        statuses.append(status)
        first.set()

    monkeypatch.setattr(os, "_exit", record)
    return statuses, first


def test_no_step_for_the_limit_dumps_the_stacks_and_ends_the_process(ended, tmp_path, capsys):
    statuses, first = ended
    report = tmp_path / "hang-rank3.txt"
    watchdog = ProgressWatchdog(TICK_MINUTES, rank=3, report=report)
    with watchdog.watching(step=6):
        watchdog.beat(7)
        deadline = time.monotonic() + 10
        while not first.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)  # the main thread "hangs" here, in this test function
    assert statuses == [HANG_STATUS] and HANG_STATUS != 0
    text = report.read_text()
    assert text.startswith(
        "rank 3: no optimizer step for 0.00333333 minutes after step 7 (trainer.watchdog_minutes)"
    )
    assert "test_no_step_for_the_limit_dumps_the_stacks_and_ends_the_process" in text, (
        "the main thread's stack"
    )
    assert "_hung" in text, "every thread's stack, the watchdog's too"
    err = capsys.readouterr().err
    assert "rank 3: no optimizer step" in err and str(report) in err


def test_steps_and_evaluations_keep_it_quiet(ended):
    statuses, _ = ended
    watchdog = ProgressWatchdog(TICK_MINUTES, rank=0, report=None)
    with watchdog.watching(step=0):
        for step in range(1, 11):
            time.sleep(0.05)
            watchdog.beat(step)
        with watchdog.paused():  # an evaluation longer than the limit
            time.sleep(0.6)
        time.sleep(0.05)
    time.sleep(0.3)  # after the loop: stopped
    assert statuses == []


def test_null_watches_nothing(ended):
    watchdog = ProgressWatchdog(None, rank=0, report=None)
    with watchdog.watching(step=0):
        time.sleep(0.1)
    assert watchdog._thread is None and ended[0] == []


@pytest.mark.slow
def test_a_run_whose_step_hangs_leaves_its_stacks_in_the_run_dir(ended, shapes_world, tmp_path, monkeypatch):
    statuses, first = ended
    train_step = Trainer.train_step

    def hangs_at_step_3(self, batches):
        if self.step == 2:
            first.wait(60)  # hangs until the watchdog ends the "process"
        return train_step(self, batches)

    monkeypatch.setattr(Trainer, "train_step", hangs_at_step_3)
    # 3 s: a step of the tiny model takes a fraction of it, even on a busy machine.
    run(fast_config(shapes_world, tmp_path, "evaluate=false", "trainer.watchdog_minutes=0.05"))
    assert statuses == [HANG_STATUS]
    run_dir = RunDir(tmp_path / "demo")
    report = run_dir.hang_report(0).read_text()
    assert report.startswith("rank 0: no optimizer step for 0.05 minutes after step 2")
    assert "hangs_at_step_3" in report and "in fit" in report
    assert "rank 0: no optimizer step for 0.05 minutes after step 2" in run_dir.train_log.read_text()


@pytest.mark.slow
def test_a_stalled_rank_makes_the_other_end_within_the_limit(shapes_world, tmp_path):
    """Two CPU processes (gloo): rank 1 stops before step 3; rank 0, waiting for it in the
    gradient all-reduce, ends with the watchdog's status and report, and torchrun ends the job."""
    runs = tmp_path / "runs"
    overrides = [
        *FAST,
        f"data.root={shapes_world}",
        f"paths.runs_dir={runs}",
        "evaluate=false",
        "trainer.micro_batch_size=2",
        "trainer.watchdog_minutes=0.25",
    ]
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    cmd = torchrun(Path(__file__).parent / "helpers" / "stalled_rank_job.py", *overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    run_dir = RunDir(runs / "demo")
    report = run_dir.hang_report(0).read_text()
    assert report.startswith("rank 0: no optimizer step for 0.25 minutes after step 2"), report[:500]
    assert "in train_step" in report, "the stack shows where rank 0 waited"
    assert f"exitcode  : {HANG_STATUS}" in proc.stderr, proc.stderr[-3000:]
    assert "rank 0: no optimizer step" in run_dir.train_log.read_text()
