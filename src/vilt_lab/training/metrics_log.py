"""metrics.jsonl: one JSON object per logged step, always written by the main process.

On resume the file is cut back to the checkpoint's step, so steps logged after the last
checkpoint by the killed run are not duplicated when the resumed run logs them again.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than dropping the line
    return value


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines with `step` greater than `step` (lines of other phases keep their order)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line and json.loads(line).get("step", 0) <= step
        ]
        # Into a temporary file renamed over the old one: a kill mid-write must not lose the log.
        staging = self.path.with_name(f".{self.path.name}.tmp")
        staging.write_text("".join(line + "\n" for line in kept))
        os.replace(staging, self.path)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: _plain(v) for k, v in values.items()}}) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All lines of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
