"""A rank that stalls (SIGSTOP) or dies (SIGKILL) never leaves the others waiting forever: they
stop within `trainer.collective_timeout_min` with a message naming the rank and the cause."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vilt_lab.training.lost_peer import LostPeer, is_lost_peer

TIMEOUT_MIN = 0.25  # 15 s


def test_the_backends_words_for_a_lost_peer_are_recognised():
    assert is_lost_peer(
        RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv")
    )
    assert is_lost_peer(
        RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:8608")
    )
    assert not is_lost_peer(RuntimeError("CUDA out of memory"))
    message = str(LostPeer(1, 0.25, "Timed out waiting 15000ms for recv operation to complete"))
    assert message.startswith("rank 1: a collective gave up on the other processes")
    assert "trainer.collective_timeout_min=0.25" in message


def workers_of(launcher: subprocess.Popen) -> list[int]:
    """The pids of torchrun's worker processes (its children running vilt_lab.train)."""
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(launcher.pid)], capture_output=True, text=True
    ).stdout
    return [int(pid) for pid in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGSTOP, signal.SIGKILL])
def test_a_stalled_or_dead_rank_stops_the_other_with_a_message(how, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "vilt_lab.train", "experiment=demo", "debug=fast", "data.generate_n=0", "evaluate=false",
        "schedule.max_steps=100000", "trainer.micro_batch_size=2", "trainer.log_every=1",
        f"trainer.collective_timeout_min={TIMEOUT_MIN}", f"data.root={shapes_world}", f"paths.runs_dir={runs}",
        "name=hang",
    ]  # fmt: skip
    launcher = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        metrics = Path(runs / "hang" / "metrics.jsonl")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and (
            not metrics.is_file() or len(metrics.read_text().splitlines()) < 3
        ):
            time.sleep(0.2)
        victim = workers_of(launcher)[-1]
        os.kill(victim, how)
        stopped_at = time.monotonic()
        output, _ = launcher.communicate(timeout=240)
        waited = time.monotonic() - stopped_at
    finally:
        for pid in [launcher.pid, *workers_of(launcher)]:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    assert launcher.returncode != 0
    assert waited < TIMEOUT_MIN * 60 + 120, f"the job waited {waited:.0f} s"
    if how == signal.SIGSTOP:  # the live rank says why it stopped (a dead one: torchrun says it)
        assert "a collective gave up on the other processes" in output, output[-3000:]
        assert "LostPeer" in (runs / "hang" / "train.log").read_text(), "train.log names the cause"
