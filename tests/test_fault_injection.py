"""A run SIGKILLed again and again, inside checkpoint writes, re-saves and prunes and at random
instants, resumed each time with `resume=auto`: every resume succeeds, metrics.jsonl holds each
step once, and the final weights equal an uninterrupted run's bit for bit
(deterministic mode, same thread count)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from vilt_lab.training.checkpoint import verify
from vilt_lab.training.faults import FAULT_ENV

# Enough steps that every planned kill below is reached before the run ends, whatever it cost
# in progress (a kill before a manifest loses the save; one after it keeps it).
STEPS = 24
OVERRIDES = [
    "experiment=demo",
    "debug=fast",
    "data.generate_n=0",
    "evaluate=false",
    f"schedule.max_steps={STEPS}",
    "trainer.ckpt_every=2",
    "trainer.keep_last=2",
    "trainer.log_every=1",
    "trainer.deterministic=true",
]
# Kills at named instants (see vilt_lab.training.faults), in the order the run meets them; each
# launch counts its points afresh. These ten always kill. The random ones come after them: a
# random kill placed between two planned ones lets its launch run on for seconds, and on a fast
# machine that finished the run before the planned kills after it (9 kills of 11). Their delays
# are fractions of the uninterrupted run's own duration, so they land inside a run on any machine
# (or, resumed late, after its end: then they are harmless runs more).
PLANNED = [
    "save:written:1",  # the first save, before its manifest: resume=auto must start fresh
    "save:manifest:1",  # complete but not renamed into place: recovered
    "step:1",
    "prune:1",
    "remove:renamed:1",  # a deletion half done
    "save:written:2",
    "step:2",
    "save:manifest:2",
    "prune:2",
    "step:3",
]
RANDOM_KILLS = 3
RANDOM_KILL_SPAN = (0.3, 0.9)  # a random kill's delay, as a fraction of the straight run's duration


def launch(world: Path, runs: Path, *extra: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "WANDB_MODE": "disabled"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    command = [
        sys.executable,
        "-m",
        "vilt_lab.train",
        *OVERRIDES,
        f"data.root={world}",
        f"paths.runs_dir={runs}",
        *extra,
    ]
    # Its own session: the kill takes the whole process group, as a scheduler's would.
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen, kill_after: float | None = None) -> tuple[int, str]:
    """Wait for the run (SIGKILL its process group after `kill_after` seconds); (code, output)."""
    try:
        output, _ = process.communicate(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    with contextlib.suppress(ProcessLookupError):  # a process that killed itself leaves its group
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, output


def train_steps(run_dir: Path) -> list[int]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [line["step"] for line in lines if "train/loss" in line]


def last_weights(run_dir: Path):
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    assert verify(last) is None
    return last.name, load_file(last / "model.safetensors")


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    started = time.monotonic()
    code, output = finish(launch(shapes_world, runs, "name=straight"))
    assert code == 0, output
    straight_seconds = time.monotonic() - started

    rng = random.Random(0)
    plan = [(fault, None) for fault in PLANNED]
    plan += [(None, straight_seconds * rng.uniform(*RANDOM_KILL_SPAN)) for _ in range(RANDOM_KILLS)]
    kills = 0
    for fault, delay in plan:
        code, output = finish(launch(shapes_world, runs, "name=killed", "resume=auto", fault=fault), delay)
        assert code in (0, -signal.SIGKILL), (
            f"resume failed after {kills} kills ({fault or delay}):\n{output}"
        )
        kills += code == -signal.SIGKILL

    # A finished run resumed from an earlier checkpoint re-saves its last step: killed while the
    # old copy of that step is moved aside.
    run_dir = runs / "killed"
    code, output = finish(launch(shapes_world, runs, "name=killed", "resume=auto"))
    assert code == 0, output
    earlier = sorted((run_dir / "checkpoints").glob("step_*"))[-2]
    code, output = finish(
        launch(shapes_world, runs, "name=killed", f"resume={earlier}", fault="save:aside:1")
    )
    assert code == -signal.SIGKILL, output
    kills += 1
    code, output = finish(launch(shapes_world, runs, "name=killed", "resume=latest"))
    assert code == 0, output

    assert kills >= len(PLANNED) + 1
    assert train_steps(run_dir) == list(range(1, STEPS + 1)), "each step logged once"
    (straight_name, straight), (killed_name, killed) = last_weights(runs / "straight"), last_weights(run_dir)
    assert killed_name == straight_name == f"step_{STEPS:08d}"
    assert straight.keys() == killed.keys()
    different = [key for key in straight if not (straight[key] == killed[key]).all()]
    assert not different, f"not bit-identical: {different[:5]}"
    assert not list((run_dir / "checkpoints").glob(".*")), "no leftover of a killed save or prune"
