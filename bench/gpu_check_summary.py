"""bench/gpu_check.sh's summary: every step's status, seconds and key figures, and the goals.

Reads what the steps left in OUT (``steps.tsv``: name, exit status, milliseconds, limit; each
step's own files) and writes ``OUT/summary.json``. A step whose files are missing or unreadable
still gets its row, with the reason among its figures, so the summary always lists every step.

    python3 bench/gpu_check_summary.py OUT [--size full|tiny]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TIMED_OUT = (124, 137)  # timeout's own status, and SIGKILL after --kill-after
F30K = "F30K 1K test (1K x 5K)"
LOADER_SAMPLES_PER_S = 1500  # the loader goal: this many samples/s ...
LOADER_CORES = 2  # ... from this many cores


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def run_figures(run: Path) -> dict[str, Any]:
    """A training step's figures from the run files keep_run copied: the rate and memory of its
    last logged interval (the first one carries start-up and compilation), its evaluation. A run
    cut short by its limit has logged intervals but no summary.json: its rates still count."""
    summary = read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [row for row in logged if "train/samples_per_s" in row]
    last = train[-1] if train else {}
    return {
        "steps": summary.get("steps", last.get("step")),
        "train_seconds": summary.get("train_seconds"),
        "samples_per_s_last_log": last.get("train/samples_per_s"),
        "samples_per_s_first_log": train[0].get("train/samples_per_s") if train else None,
        "data_wait_fraction_last_log": last.get("train/data_wait_fraction"),
        "peak_memory_gib": last.get("train/peak_memory_gib"),
        "compiled_graphs": max((row.get("train/compiles", 0) for row in train), default=0),
        "train_loss_last_log": last.get("train/loss"),
        "eval": summary.get("eval") or {},
    }


def bench_figures(out: Path) -> dict[str, Any]:
    """The model benchmark's rows, ours against HF (its JSON has every figure)."""
    bench = read_json(out / "bench_model.json")
    work = bench["workloads"]
    retrieval = work.get("retrieval", {})
    return {
        "device": bench["hardware"].get("device"),
        "model": bench["sizes"]["model"],
        "lines": bench.get("lines", []),
        "pretrain_samples_per_s": work.get("pretrain", {}).get("samples_per_s"),
        "pretrain_mfu": work.get("pretrain", {}).get("mfu"),
        "latency_ms": work.get("latency", {}).get("median_ms"),
        "throughput_pairs_per_s": work.get("throughput", {}).get("pairs_per_s"),
        "retrieval_scores_agree": retrieval.get("scores_agree"),
        "retrieval_f30k_minutes": {
            side: seconds[F30K] / 60 for side, seconds in retrieval.get("projected_seconds", {}).items()
        },
        "loader_images_per_s_per_core": bench.get("loader", {}).get("images_per_s_per_core"),
    }


def latency_figures(out: Path) -> dict[str, Any]:
    """`python -m vilt_lab.bench latency --compile`'s JSON: the times and what was timed."""
    latency = read_json(out / "latency_compile.json")
    return {
        "device": latency["hardware"].get("device"),
        **{
            key: latency[key]
            for key in ("median_ms", "mean_ms", "min_ms", "dtype", "compiled", "compile_mode")
        },
    }


def sync_figures(out: Path) -> dict[str, Any]:
    syncs = read_json(out / "sync_debug.json")
    per_step = syncs.get("syncs_per_step", [])
    return {
        "counted": syncs.get("counted"),
        "steps": syncs.get("steps"),
        "syncs_per_step": per_step,
        "syncs_total": sum(per_step),
        "sites": syncs.get("sites", {}),
        **({"error": syncs["error"]} if "error" in syncs else {}),
    }


def decode_figures(out: Path) -> dict[str, Any]:
    """bench/decode_rate.py's JSON holds only key figures: all of it."""
    return read_json(out / "decode.json")


def test_figures(out: Path) -> dict[str, Any]:
    """pytest's junit counts (the suite element holds the totals)."""
    root = ET.parse(out / "gpu_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {name: int(suite.get(name, 0)) for name in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


# step name -> what its figures are read from (OUT -> figures)
FIGURES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "demo_bf16": lambda out: run_figures(out / "demo_bf16"),
    "base32_bf16": lambda out: run_figures(out / "base32_bf16"),
    "bench_model": bench_figures,
    "demo_compile": lambda out: run_figures(out / "demo_compile"),
    "latency_compile": latency_figures,
    "sync_debug": sync_figures,
    "decode": decode_figures,
    "gpu_tests": test_figures,
}


def status(exit_code: int) -> str:
    return "ok" if exit_code == 0 else "timeout" if exit_code in TIMED_OUT else "failed"


def step_rows(out: Path) -> list[dict[str, Any]]:
    """One row per step that ran, in order; figures read where the step left them."""
    rows = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, code, millis, limit = line.split("\t")
        row: dict[str, Any] = {
            "step": name,
            "status": status(int(code)),
            "exit_code": int(code),
            "seconds": int(millis) / 1000,
            "limit_s": int(limit),
            "log": f"{name}.log",
        }
        try:
            row["figures"] = FIGURES[name](out)
        except Exception as err:  # noqa: BLE001 - a step that left nothing still gets its row
            row["figures"] = {"unreadable": f"{type(err).__name__}: {err}"}
        rows.append(row)
    return rows


def goal(value: float | None, target: float, at_least: bool) -> dict[str, Any]:
    met = None if value is None else value >= target if at_least else value <= target
    return {"value": value, "goal": f"{'>=' if at_least else '<='} {target}", "met": met}


def goals(rows: list[dict[str, Any]], size: str) -> dict[str, Any]:
    """The performance goals against the benchmark's figures (ours); null at tiny sizes or
    where the figure is missing, since those figures mean nothing against the goals."""
    figures = {row["step"]: row.get("figures", {}) for row in rows}
    bench, decode = figures.get("bench_model", {}), figures.get("decode", {})
    latency = figures.get("latency_compile", {})
    if size != "full" or bench.get("device") != "cuda":
        bench = {}
    if size != "full" or latency.get("device") != "cuda":
        latency = {}
    if size != "full" or not decode.get("gpu", {}).get("on_device"):
        decode = {}
    syncs = figures.get("sync_debug", {}) if size == "full" else {}
    loader = bench.get("loader_images_per_s_per_core")
    gpu_decode_cores = decode.get("gpu", {}).get("cores_for_target")
    return {
        "pretrain_samples_per_s_per_gpu (base32, 200 patches + 40 text)": goal(
            (bench.get("pretrain_samples_per_s") or {}).get("ours"), 1500, at_least=True
        ),
        "latency_ms_batch_1": goal((bench.get("latency_ms") or {}).get("ours"), 1.5, at_least=False),
        "latency_ms_batch_1_compiled (CUDA graphs, bf16)": goal(
            latency.get("median_ms"), 1.5, at_least=False
        ),
        "exact_retrieval_f30k_1kx5k_minutes": goal(
            (bench.get("retrieval_f30k_minutes") or {}).get("ours"), 8, at_least=False
        ),
        f"loader_cores_for_{LOADER_SAMPLES_PER_S}_samples_per_s (data.decode=cpu)": goal(
            LOADER_SAMPLES_PER_S / loader if loader else None, LOADER_CORES, at_least=False
        ),
        f"loader_cores_for_{LOADER_SAMPLES_PER_S}_samples_per_s (data.decode=gpu)": goal(
            gpu_decode_cores, LOADER_CORES, at_least=False
        ),
        "host_syncs_per_training_step": goal(
            max(syncs["syncs_per_step"]) if syncs.get("counted") and syncs.get("syncs_per_step") else None,
            0,
            at_least=False,
        ),
    }


def hardware() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the directory gpu_check.sh wrote")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    args = parser.parse_args()
    try:
        rows = step_rows(args.out)
    except Exception:  # noqa: BLE001 - the summary says why rather than vanishing
        rows = [{"step": "summary", "status": "failed", "error": traceback.format_exc()}]
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": args.size,
        "hardware": hardware(),
        "steps": rows,
        "goals": goals(rows, args.size),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for row in rows:
        print(f"{row['step']:<14} {row['status']:<8} {row.get('seconds', 0):7.1f} s")
    print(f"summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
