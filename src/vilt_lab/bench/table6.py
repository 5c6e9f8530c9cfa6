"""Table 6 on the machine at hand: ViLT-B/32's parameters, FLOPs and latency beside the paper's row.

* Parameters: `model.param_count`, the paper's accounting (visual embedder + transformer).
* FLOPs: `model.flops` (FlopCounterMode) on one forward over 200 image tokens, sampled from a
  384x640 image's 240 as pre-training samples them, plus 40 text tokens; FLOPs and multiply-adds.
* Latency: `bench.latency` at B=1 on a 384x640 image (all 240 patches) + 40 text tokens, visual
  embedding + transformer, on the GPU when there is one, else the CPU.

Writes paper | ours | difference to experiments/table6/result.md. experiments/table6/README.md
says how each figure is obtained and why the FLOPs differ from the paper's 55.9 G.

    python -m vilt_lab.bench table6                    # what `make table6` runs
    python -m vilt_lab.bench table6 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vilt_lab.bench.hardware import hardware_line
from vilt_lab.bench.latency import LatencyResult, add_timing_arguments, latency_from_args
from vilt_lab.measure.flops import FlopCount, count_flops
from vilt_lab.measure.param_count import TABLE6_GROUP, count_parameters
from vilt_lab.model.backbone import ViltBackbone
from vilt_lab.model.config import get_config

TABLE6_DIR = Path("experiments/table6")


@dataclass(frozen=True)
class Table6Measurement:
    """Our side of the row: Table 6 parameters, the FLOP count, the latency."""

    params: int
    flops: FlopCount
    latency: LatencyResult

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "flops": self.flops.to_dict(), "latency": self.latency.to_dict()}


def load_paper_row(path: Path) -> dict[str, Any]:
    """The paper's ViLT-B/32 row of Table 6 (paper.json: params_m, gflops, latency_ms, ...)."""
    return json.loads(path.read_text())


def measure_table6(args: argparse.Namespace) -> Table6Measurement:
    """Count and time one randomly initialised ViLT-B/32 (the paper's row), built once for all three."""
    backbone = ViltBackbone(get_config("base32"))
    params = count_parameters(backbone)[TABLE6_GROUP]
    flops = count_flops(backbone)  # before timing moves the backbone to the GPU or another dtype
    return Table6Measurement(params=params, flops=flops, latency=latency_from_args(args, backbone))


def difference(ours: float, paper: float) -> str:
    """'+0.13 (+0.1%)': ours minus the paper's, absolute and relative."""
    return f"{ours - paper:+.2f} ({(ours / paper - 1) * 100:+.1f}%)"


def render_result(paper: dict[str, Any], ours: Table6Measurement, measured_on: datetime.date) -> str:
    """result.md: one row per Table 6 column, paper | ours | difference, then the hardware."""
    flops, latency = ours.flops, ours.latency
    params_m, gflops, gmacs = ours.params / 1e6, flops.flops / 1e9, flops.macs / 1e9
    height, width = latency.image_hw
    paper_ms = f"{'~' if paper['latency_approximate'] else ''}{paper['latency_ms']:g}"
    rows = [
        (
            "#Params (M): visual embedder + transformer",
            f"{paper['params_m']:g}",
            f"{params_m:.2f}",
            difference(params_m, paper["params_m"]),
        ),
        (
            f"#FLOPs (G): {flops.image_patches} image + {flops.text_tokens} text tokens, "
            "2 FLOPs per multiply-add (PyTorch FlopCounterMode)",
            f"{paper['gflops']:g}",
            f"{gflops:.2f}",
            difference(gflops, paper["gflops"]),
        ),
        (
            "the same count in multiply-adds (GMACs)",
            f"{paper['gflops']:g}, if its G are multiply-adds",
            f"{gmacs:.2f}",
            difference(gmacs, paper["gflops"]),
        ),
        (
            f"Time (ms): B=1, {height}x{width} image ({latency.image_patches} patches) + "
            f"{latency.text_tokens} text tokens, visual embedding + transformer",
            f"{paper_ms} on {paper['latency_hardware']}",
            f"{latency.median_ms:.1f} (median of {latency.repeats}; mean {latency.mean_ms:.1f}) "
            f"on {latency.hardware['device']}, {latency.dtype}",
            f"{latency.median_ms / paper['latency_ms']:.1f}x the paper's, on other hardware",
        ),
    ]
    lines = [
        "# Table 6, ViLT-B/32: the paper beside this machine",
        "",
        f"Written by `make table6` on {measured_on.isoformat()}, from a randomly initialised ViLT-B/32",
        "(counts and times depend on shapes, not on weights). How each figure is obtained, and why",
        "the FLOPs differ from the paper's: [README.md](README.md).",
        "",
        "| ViLT-B/32 | paper | ours | difference |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        f"Timed on: {hardware_line(latency.hardware)}.",
        "",
    ]
    return "\n".join(lines)


def write_result(
    out: Path, paper: dict[str, Any], ours: Table6Measurement, measured_on: datetime.date
) -> str:
    """Render result.md to `out` (its folder made if needed) and return the text."""
    text = render_result(paper, ours, measured_on)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Timing options (see `bench.latency`), where the paper's row is read and the result written."""
    add_timing_arguments(parser)
    parser.add_argument("--paper", type=Path, default=TABLE6_DIR / "paper.json", help="the paper's row")
    parser.add_argument("--out", type=Path, default=TABLE6_DIR / "result.md", help="result.md to write")
    parser.add_argument("--json", action="store_true", help="print paper and ours as JSON, not the table")


def run(args: argparse.Namespace) -> Table6Measurement:
    """Measure, write result.md, print it (or the JSON)."""
    paper = load_paper_row(args.paper)
    ours = measure_table6(args)
    text = write_result(args.out, paper, ours, datetime.date.today())
    print(json.dumps({"paper": paper, "ours": ours.to_dict()}, indent=2) if args.json else text, flush=True)
    return ours
