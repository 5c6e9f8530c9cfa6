"""A stop signal (preemption, a time limit's warning, scancel) mid-run: every process finishes its
step, that step is saved, the stop is recorded, and running the command again continues to the
same final weights as a run never stopped, each step logged once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.configs import fast_config
from helpers.run_dirs import final_weights
from vilt_lab.train import run
from vilt_lab.training import trainer as trainer_module
from vilt_lab.training.checkpoint import latest_checkpoint
from vilt_lab.training.metrics_log import read_metrics
from vilt_lab.training.preemption import Stopped
from vilt_lab.training.slurm_job import requeued
from vilt_lab.utils.stop_signals import STOP_SIGNALS

STEPS = 7
SETTINGS = [
    "evaluate=false",
    f"schedule.max_steps={STEPS}",
    "trainer.ckpt_every=3",  # the stops below fall between scheduled checkpoints
    "trainer.log_every=1",
    "trainer.deterministic=true",
]


def signal_at_step(monkeypatch, step: int, signum: int) -> None:
    """Send `signum` to this process right after optimizer step `step`."""
    calls = {"step": 0}
    real = trainer_module.fault_point

    def point(name: str) -> None:
        real(name)
        if name == "step":
            calls["step"] += 1
            if calls["step"] == step:
                signal.raise_signal(signum)

    monkeypatch.setattr(trainer_module, "fault_point", point)


def logged_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in m]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_saves_its_step_and_the_rerun_ends_where_a_straight_run_ends(
    signum, shapes_world, tmp_path, monkeypatch
):
    straight = run(fast_config(shapes_world, tmp_path / "straight", *SETTINGS))
    stopped_cfg = fast_config(shapes_world, tmp_path / "stopped", *SETTINGS, "resume=auto")
    run_dir = tmp_path / "stopped" / "demo"

    signal_at_step(monkeypatch, 5, signum)
    with pytest.raises(SystemExit) as exited:
        run(stopped_cfg)
    assert exited.value.code == 128 + signum  # what the signal itself would have given
    assert signal.getsignal(signum) is signal.SIG_DFL, "the handler it found is back"
    assert latest_checkpoint(run_dir / "checkpoints")[0].name == "step_00000005"
    (stop,) = [json.loads(line) for line in (run_dir / "stops.jsonl").read_text().splitlines()]
    assert stop["step"] == 5 and stop["signal"] == signal.Signals(signum).name
    logged = (run_dir / "train.log").read_text()
    assert "stopped by" in logged and "Traceback" not in logged, "a stop is no failure"

    monkeypatch.undo()
    resumed = run(stopped_cfg)
    assert resumed["steps"] == straight["steps"] == STEPS
    assert logged_steps(run_dir) == list(range(1, STEPS + 1)), "each step logged once"
    expected = final_weights(tmp_path / "straight" / "demo")
    got = final_weights(run_dir)
    assert all(torch.equal(got[k], v) for k, v in expected.items()), "the stopped run's weights differ"


def test_without_a_signal_the_trainer_leaves_the_handlers_alone(shapes_world, tmp_path):
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    run(fast_config(shapes_world, tmp_path, "evaluate=false"))
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_a_previous_handler_gets_the_signal_after_the_save(monkeypatch):
    """Under submitit the previous handler requeues the job; it runs, then the process exits."""
    seen = []
    stop = Stopped(signal.SIGUSR2, 12, lambda signum, frame: seen.append(signum))
    with pytest.raises(SystemExit) as exited:
        stop.forward()
    assert seen == [signal.SIGUSR2] and exited.value.code == 128 + signal.SIGUSR2
    assert str(stop) == "stopped by SIGUSR2 after step 12 (its checkpoint is saved)"


def test_loader_workers_ignore_the_stop_signals():
    code = (
        "import os, signal, time\n"
        "from vilt_lab.utils.stop_signals import ignore_stop_signals\n"
        "ignore_stop_signals(0)\n"
        "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGUSR2)\n"
        "print('alive')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "alive", out.stderr


def test_a_requeued_job_is_known_by_its_restart_count(monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert not requeued()
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued()


# ----------------------------------------------------------------------------- two processes
TWO_PROCESS = [
    "experiment=demo",
    "debug=fast",
    "data.generate_n=0",
    "evaluate=false",
    "schedule.max_steps=30",
    "trainer.micro_batch_size=2",  # debug=fast's batch of 4 over two processes
    "trainer.ckpt_every=8",
    "trainer.log_every=1",
    "trainer.deterministic=true",
]


def torchrun(world: Path, runs: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vilt_lab.train",
        *TWO_PROCESS,
        f"data.root={world}",
        f"paths.runs_dir={runs}",
        f"name={name}",
    ]
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_two_processes_stopped_by_sigterm_resume_to_the_straight_result(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    straight = torchrun(shapes_world, runs, "straight")
    assert straight.wait(timeout=600) == 0, straight.stdout.read()
    stopped_dir = runs / "stopped"

    # SIGTERM to the whole job, as a scheduler sends it, once a few steps are logged.
    job = torchrun(shapes_world, runs, "stopped")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_steps(stopped_dir)) < 11:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGTERM)
    output, _ = job.communicate(timeout=300)
    assert job.returncode != 0, output
    stops = [json.loads(line) for line in (stopped_dir / "stops.jsonl").read_text().splitlines()]
    assert len(stops) == 1 and stops[0]["signal"] == "SIGTERM", output

    rerun = torchrun(shapes_world, runs, "stopped")
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    assert _steps(stopped_dir) == list(range(1, 31)), "each step logged once"
    expected, got = final_weights(runs / "straight"), final_weights(stopped_dir)
    assert all(torch.equal(got[k], v) for k, v in expected.items()), "the stopped run's weights differ"


def _steps(run_dir: Path) -> list[int]:
    return logged_steps(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
