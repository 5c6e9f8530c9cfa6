"""`python -m vilt_lab.bench model --tiny`: every row and workload line printed, the JSON written,
our retrieval engine and the official algorithm on HF giving the same scores. No timing asserted."""

from __future__ import annotations

import json
import re

import pytest

from vilt_lab.bench.__main__ import main
from vilt_lab.bench.model import FP32_SCORE_TOLERANCE, WORKLOAD_ORDER
from vilt_lab.bench.model_timing import interleaved_rounds

LINE = re.compile(r"^(\w+): ours ([\d.,]+) (samples/s|ms|pairs/s), HF ([\d.,]+), ratio (\d+\.\d\d)x$")
TABLE_ROWS = (
    "| pretrain ITM+MLM step |",
    "|   FLOPs per sample (counted, fwd+bwd) |",
    "|   MFU |",
    "|   memory: params + optimizer + step peak",
    "| pretrain ITM+MLM+WPA step |",
    "| latency B=1, ",
    "| throughput B=",
    "| retrieval ",
    "|   same scores: max |ours - HF| (fp32) |",
    "|   projected exact F30K 1K test (1K x 5K) |",
    "|   projected exact COCO 5K test (5K x 25K) |",
)


@pytest.mark.slow
def test_model_benchmark_tiny_prints_every_row(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    out = tmp_path / "bench.json"
    # --set reaches our side's training config (a lever switched on is what gets timed).
    main(["model", "--tiny", "--json", str(out), "--set", "optim.grad_clip=1.0"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("hardware: ") and "torch " in lines[1]
    assert lines[2].startswith("versions: torch ") and "transformers " in lines[2]
    for row in TABLE_ROWS:
        assert any(line.startswith(row) for line in lines), row
    assert any(line.startswith("loader: ") and "data.num_workers >= " in line for line in lines)
    # One line per workload, in order, the pre-training line last.
    matches = [LINE.match(line) for line in lines[-len(WORKLOAD_ORDER) :]]
    assert all(matches), lines[-len(WORKLOAD_ORDER) :]
    assert [m[1] for m in matches] == list(WORKLOAD_ORDER)
    for m in matches:
        ours, hf, ratio = (float(m[i].replace(",", "")) for i in (2, 4, 5))
        assert ours > 0 and hf > 0 and ratio > 0

    result = json.loads(out.read_text())
    assert result["tiny"] and result["versions"]["transformers"] and result["hardware"]["cpu"]
    assert result["lines"] == lines[-len(WORKLOAD_ORDER) :]
    assert result["ours_overrides"] == ["optim.grad_clip=1.0"]
    workloads = result["workloads"]
    assert set(workloads) == {"pretrain", "latency", "throughput", "retrieval"}
    pretrain = workloads["pretrain"]
    # FLOPs are counted, not assumed: two passes forward and backward, attention included.
    assert all(pretrain["flops_per_sample"][name] > 0 for name in ("ours", "hf", "ours_wpa"))
    assert set(pretrain["samples_per_s"]) == {"ours", "hf", "ours_wpa"}
    # Same weights, same function: the two retrieval algorithms agree on every score.
    retrieval = workloads["retrieval"]
    assert retrieval["scores_agree"]
    assert retrieval["fp32_max_abs_score_difference"] <= FP32_SCORE_TOLERANCE
    assert 12 <= retrieval["mean_text_tokens"] <= 16  # COCO-like caption lengths
    assert set(retrieval["projected_seconds"]["ours"]) == {
        "F30K 1K test (1K x 5K)",
        "COCO 5K test (5K x 25K)",
    }


def test_interleaved_rounds_alternate_and_time_every_call() -> None:
    import torch

    calls: list[str] = []
    timings = interleaved_rounds(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        torch.device("cpu"),
        rounds=3,
        calls_per_round=2,
        warmup=1,
    )
    # Warm-up a, b; then rounds a a b b | b b a a | a a b b.
    assert "".join(calls) == "ab" + "aabb" + "bbaa" + "aabb"
    assert timings["a"].calls == timings["b"].calls == 6
