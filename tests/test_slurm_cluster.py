"""vilt_lab on a real SLURM cluster: a sweep through the submitit launcher, a failing job, and a
job signalled mid-run that requeues and ends with the weights of a run never stopped.

The cluster is the one-node cluster of tests/slurm/one_node_cluster.sh (started here when this
machine runs as root and none answers; CI starts it first). Where no cluster can start, the tests
are skipped saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.run_dirs import final_weights, run_dirs

pytestmark = pytest.mark.slow

CLUSTER_SCRIPT = Path(__file__).parent / "slurm" / "one_node_cluster.sh"
ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# One CPU per job, so that two jobs run side by side on a two-core machine.
LAUNCHER = ["launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=20"]


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return answer.returncode == 0 and any(state in answer.stdout for state in ("idle", "mixed", "allocated"))


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    if _cluster_answers():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no SLURM cluster answers (sinfo), and starting one needs root and apt")
    started = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WITH_DBD": "1"},
    )
    if started.returncode != 0 or not _cluster_answers():
        pytest.skip(f"the one-node SLURM cluster did not start: {(started.stdout + started.stderr)[-600:]}")


def vilt_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vilt_lab.train", "-m", *LAUNCHER, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def accounting(job_id: str) -> dict[str, tuple[str, str]]:
    """{job id: (state, job name)} of a job's array tasks, as sacct reports them."""
    for _ in range(30):  # accounting lags the controller by a moment
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,State,JobName"],
            capture_output=True,
            text=True,
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line]
        if rows and all(state not in ("PENDING", "RUNNING", "REQUEUED") for _, state, _ in rows):
            return {job: (state, name) for job, state, name in rows}
        time.sleep(2)
    raise AssertionError(f"sacct never settled for job {job_id}: {out}")


def submitted_jobs(runs: Path) -> list[str]:
    """The SLURM job ids the launcher submitted (submitit's folders under runs/slurm)."""
    return sorted({path.name.split("_")[0] for path in (runs / "slurm").iterdir() if path.name[0].isdigit()})


def fast(world: Path, runs: Path) -> list[str]:
    return [
        "experiment=demo",
        "debug=fast",
        "evaluate=false",
        "data.generate_n=0",
        f"data.root={world}",
        f"paths.runs_dir={runs}",
    ]


def test_a_sweep_runs_as_jobs_named_after_their_runs(slurm_cluster, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    done = vilt_train(*fast(shapes_world, runs), "seed=0,1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    found = run_dirs(runs)
    assert [p.relative_to(runs).parts[:2] for p in found] == [("demo", "seed")] * 2
    for path in found:
        assert json.loads((path / "summary.json").read_text())["steps"] == 4
    (job,) = submitted_jobs(runs)
    jobs = accounting(job)
    assert {state for state, _ in jobs.values()} == {"COMPLETED"}
    assert {name for _, name in jobs.values()} == {str(p.relative_to(runs)) for p in found}


def test_a_failing_job_is_failed_in_sacct_and_says_why(slurm_cluster, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    failed = vilt_train(*fast(shapes_world, runs), "trainer.micro_batch_size=3", cwd=tmp_path)
    assert failed.returncode == 2, failed.stdout[-2000:] + failed.stderr[-3000:]
    assert "a job of the sweep failed on SLURM" in failed.stderr
    assert "trainer.global_batch_size=4 is not a multiple of trainer.micro_batch_size=3" in failed.stderr
    assert "Traceback" not in failed.stderr
    (job,) = submitted_jobs(runs)
    assert [state for state, _ in accounting(job).values()] == ["FAILED"]
    assert not run_dirs(runs), "a run that fails validation leaves no run dir"


def test_a_job_signalled_mid_run_requeues_and_ends_as_a_straight_run(slurm_cluster, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    settings = [
        *fast(shapes_world, runs),
        "schedule.max_steps=40",
        "trainer.ckpt_every=16",
        "trainer.log_every=1",
        "trainer.deterministic=true",
    ]
    straight = subprocess.run(
        [sys.executable, "-m", "vilt_lab.train", *settings, "name=straight"],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    sweep = subprocess.Popen(
        [sys.executable, "-m", "vilt_lab.train", "-m", *LAUNCHER, *settings, "name=onslurm"],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = runs / "onslurm" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and (
        not metrics.is_file() or len(metrics.read_text().splitlines()) < 6
    ):
        time.sleep(0.2)
    (job,) = submitted_jobs(runs)
    # The time limit's warning signal, as `--signal` sends it: the job saves and requeues.
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    output, _ = sweep.communicate(timeout=1200)
    assert sweep.returncode == 0, output[-4000:]

    run_dir = runs / "onslurm"
    stops = [json.loads(line) for line in (run_dir / "stops.jsonl").read_text().splitlines()]
    assert [stop["signal"] for stop in stops] == ["SIGUSR2"]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if "train/loss" in line]
    assert steps == list(range(1, 41)), "each step logged once"
    expected, got = final_weights(runs / "straight"), final_weights(run_dir)
    assert all(torch.equal(got[k], v) for k, v in expected.items()), "the requeued run's weights differ"


TINY_TABLE = {
    "runs.yaml": """
pretrain:
  p4: {experiment: demo, group: tiny/row1, overrides: [debug=fast, evaluate=false], tags: [tiny]}
""",
    "recipes.yaml": """
finetune:
  vqa: {experiment: finetune_demo_vqa, overrides: [debug=fast]}
eval:
  zs: {overrides: [task=irtr, data=shapes_retrieval, task.text_batch_size=8]}
""",
    "tiny/table.yaml": """
name: tiny
title: one row through SLURM
difference: false
columns:
  vqa: {label: VQA score, recipe: vqa, metric: eval/vqa/score, scale: 100,
        zero_shot: {recipe: zs, metric: eval/irtr/ir_r1}}
rows:
  - {label: four steps, pretrain: p4}
""",
}


def vilt_report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vilt_lab.report.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_table_is_submitted_at_once_and_never_twice(slurm_cluster, shapes_world, tmp_path):
    for name, text in TINY_TABLE.items():
        (tmp_path / "exp" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "exp" / name).write_text(text)
    runs = tmp_path / "runs"
    args = ["run", str(tmp_path / "exp" / "tiny"), "--runs", str(runs), "--slurm"]
    args += ["--slurm-set", "gpus_per_node=0", "--slurm-set", "cpus_per_task=1", "--slurm-set", "time=20"]
    args += [
        "--set",
        f"data.root={shapes_world}",
        "--set",
        "data.generate_n=0",
        "--set",
        "schedule.warmup=0",
    ]

    first = vilt_report(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    submitted = [
        line.split(":")[1].strip() for line in first.stdout.splitlines() if line.startswith("submit:")
    ]
    assert submitted == ["p4", "p4--vqa-s0", "p4--zs"]
    # schedule.* reaches the training runs only: an evaluation would refuse it.
    assert "schedule.warmup=0" not in first.stdout.split("submit: p4--zs")[1]
    again = vilt_report(*args, cwd=tmp_path)  # while they wait or run: nothing is submitted twice
    assert again.returncode == 0 and "submit:" not in again.stdout, again.stdout

    deadline = time.monotonic() + 900
    specs = ["p4", "p4--vqa-s0", "p4--zs"]
    while time.monotonic() < deadline and not all((runs / s / "summary.json").is_file() for s in specs):
        time.sleep(2)
    assert all((runs / s / "summary.json").is_file() for s in specs), sorted(runs.rglob("*.out"))
    done = vilt_report(*args, cwd=tmp_path)
    assert [line for line in done.stdout.splitlines() if line.startswith("done:")] == [
        f"done: {s}" for s in specs
    ]


def test_slurm_and_a_launcher_are_refused_together(tmp_path):
    out = vilt_report(
        "run", "table5", "--runs", str(tmp_path), "--slurm", "--launch", "accelerate launch -m", cwd=tmp_path
    )
    assert out.returncode != 0 and "--slurm and --launch" in out.stderr
