"""bench/gpu_check.sh, the one call a lent GPU machine gets, runs end to end: its dry run takes
every step on the CPU at tiny sizes and leaves a log per step and a summary listing them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    "demo_bf16",
    "base32_bf16",
    "bench_model",
    "demo_compile",
    "latency_compile",
    "sync_debug",
    "decode",
    "gpu_tests",
]


@pytest.mark.slow
def test_the_dry_run_takes_every_step_and_summarises_them(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    # As on the device: no installed vilt_lab is needed, the script puts src/ on the path itself.
    env = {
        **os.environ,
        "OUT": str(out),
        "WORK": str(work),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["size"] == "tiny"
    rows = {row["step"]: row for row in summary["steps"]}
    assert list(rows) == STEPS
    for name, row in rows.items():
        log = out / row["log"]
        assert log.is_file() and log.stat().st_size > 0, name
        assert row["status"] == "ok", (name, log.read_text()[-3000:])
        assert row["seconds"] > 0 and "unreadable" not in row["figures"], (name, row)
    # The figures come from each step's own output.
    assert rows["demo_bf16"]["figures"]["steps"] == 3 and rows["demo_bf16"]["figures"]["eval"]
    assert rows["demo_compile"]["figures"]["compiled_graphs"] >= 1
    assert rows["bench_model"]["figures"]["model"] == "tiny"
    latency = rows["latency_compile"]["figures"]
    assert latency["compiled"] and latency["compile_mode"] == "reduce-overhead" and latency["median_ms"] > 0
    assert len(rows["sync_debug"]["figures"]["syncs_per_step"]) == 2  # counted only on CUDA
    assert {"cpu", "gpu", "agreement"} <= rows["decode"]["figures"].keys()
    assert rows["gpu_tests"]["figures"]["tests"] >= 1
    # Tiny figures are never held against the goals; run files stay in WORK, out of OUT.
    assert summary["goals"] and all(g["met"] is None for g in summary["goals"].values())
    assert not list(out.rglob("checkpoints"))
    assert (work / "runs" / "demo_bf16" / "checkpoints").is_dir()
