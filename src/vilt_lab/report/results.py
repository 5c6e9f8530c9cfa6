"""Reading a run's numbers: the metrics of its selected checkpoint, or of its end."""

from __future__ import annotations

import json
from typing import Any

from ..training.metrics_log import read_metrics
from ..training.run_dir import RunDir

EVALAI_FILE = "evalai.json"  # the VQA server's result, saved by hand beside a test-dev submission


def run_metrics(run_dir: RunDir) -> dict[str, Any] | None:
    """None for a run that has not finished (no summary.json). Otherwise its metrics: for a run
    that selected a best checkpoint, every evaluation metric at that step (test-P and test
    retrieval are read where validation picked, as the paper reports them); else the final
    evaluation. `evalai.json` beside it adds `evalai/<key>`."""
    summary = run_dir.read_summary()
    if summary is None:
        return None
    values = dict(summary.get("eval", {}))
    best = summary.get("best")
    if best and run_dir.metrics.is_file():
        at_best: dict[str, Any] = {}
        for record in read_metrics(run_dir.metrics):
            if record.get("step") == best["step"]:
                at_best.update({k: v for k, v in record.items() if k.startswith(("eval/", "test/"))})
        values.update(at_best)
    evalai = run_dir.path / EVALAI_FILE
    if evalai.is_file():
        values.update({f"evalai/{k}": v for k, v in json.loads(evalai.read_text()).items()})
    return values
