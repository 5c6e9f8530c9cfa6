"""metrics.jsonl and the loop's logging: when a step logs, and where its values go.

`MetricsFile` is the file: one JSON object per logged step. On resume it is cut back to the
checkpoint's step, so steps logged after the last checkpoint by the killed run are not duplicated
when the resumed run logs them again. `MetricsLog` is the training loop's component: it decides
which steps log and writes their values to the file (main process) and to Accelerate's trackers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .settings import TrainerSettings
from .storage import append_line, write_text_atomically


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than dropping the line
    return value


class MetricsFile:
    """A metrics.jsonl file (a training run's, or an evaluation's)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop lines with `step` greater than `step` (lines of other phases keep their order)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line and json.loads(line).get("step", 0) <= step
        ]
        # Renamed over the old file: a kill or a full disk mid-write must not lose the log.
        write_text_atomically(self.path, "".join(line + "\n" for line in kept))

    def append(self, step: int, values: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, json.dumps({"step": step, **{k: _plain(v) for k, v in values.items()}}))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All lines of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


class MetricsLog:
    """The loop's log: training values every `trainer.log_every` steps and at the last step,
    evaluations when they run, each to `file` (None: no file, as a loop driven without a run dir;
    written by the main process only) and to Accelerate's trackers (W&B when initialised)."""

    def __init__(self, accelerator: Accelerator, settings: TrainerSettings, file: MetricsFile | None) -> None:
        self.acc = accelerator
        self.settings = settings
        self.file = file if accelerator.is_main_process else None

    def due(self, step: int) -> bool:
        """Whether optimizer step `step` logs its training values."""
        return step % self.settings.trainer.log_every == 0 or step == self.settings.max_steps

    def write(self, step: int, values: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.append(step, values)
        self.acc.log(values, step=step)

    def truncate_after(self, step: int) -> None:
        """Resuming at `step`: forget what the file holds of later steps."""
        if self.file is not None:
            self.file.truncate_after(step)
