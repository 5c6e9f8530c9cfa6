"""Reading a run's numbers: the metrics of its selected checkpoint, or of its end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVALAI_FILE = "evalai.json"  # the VQA server's result, saved by hand beside a test-dev submission


def run_metrics(run_dir: Path) -> dict[str, Any] | None:
    """None for a run that has not finished (no summary.json). Otherwise its metrics: for a run
    that selected a best checkpoint, every evaluation metric at that step (test-P and test
    retrieval are read where validation picked, as the paper reports them); else the final
    evaluation. `evalai.json` beside it adds `evalai/<key>`."""
    summary_file = Path(run_dir) / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text())
    values = dict(summary.get("eval", {}))
    best = summary.get("best")
    metrics_file = Path(run_dir) / "metrics.jsonl"
    if best and metrics_file.is_file():
        at_best: dict[str, Any] = {}
        for line in metrics_file.read_text().splitlines():
            record = json.loads(line) if line else {}
            if record.get("step") == best["step"]:
                at_best.update({k: v for k, v in record.items() if k.startswith(("eval/", "test/"))})
        values.update(at_best)
    evalai = Path(run_dir) / EVALAI_FILE
    if evalai.is_file():
        values.update({f"evalai/{k}": v for k, v in json.loads(evalai.read_text()).items()})
    return values
