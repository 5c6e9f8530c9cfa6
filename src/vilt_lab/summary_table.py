"""Print the headline metrics of several runs' summary.json side by side (training or vilt-eval).

    python -m vilt_lab.summary_table runs/finetune-demo/*/summary.json

Counts (samples, questions, images...) are left out: one row per run and metric.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COUNT_KEYS = ("samples", "questions", "statements", "images", "texts")


def rows(paths: list[Path]) -> list[tuple[str, str, str, str]]:
    """(run, task, metric, value) for every non-count metric of every summary."""
    out = []
    for path in paths:
        summary = json.loads(Path(path).read_text())
        run = Path(summary.get("run_dir", path.parent)).name
        for key, value in summary.get("eval", {}).items():
            if key.rsplit("/", 1)[-1] in COUNT_KEYS or not isinstance(value, float):
                continue
            out.append((run, summary.get("task", "pretrain"), key, f"{value:.4f}"))
    return out


def format_table(table: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *table]
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        print(f"summary_table: no summary.json at {missing or 'the given paths'}", file=sys.stderr)
        return 2
    print(format_table(rows(paths), ("run", "task", "metric", "value")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
