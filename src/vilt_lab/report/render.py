"""result.md: paper | ours | difference per cell, and the command of every run still missing."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from .definitions import Catalog, Column, Row, Table
from .plan import cell_runs, table_runs
from .results import run_metrics

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Cell:
    """What one cell shows: ours as text, the numbers compared with the paper's, missing runs."""

    ours: str
    numbers: list[float]
    missing: list[str]


def paper_numbers(text: str) -> list[float]:
    """The numbers a paper cell compares on: 70.33 -> [70.33]; "68.96 ± 0.07" -> [68.96] (the
    std is not compared); "75.39 (45.12)" -> [75.39, 45.12]; "69.7/91.0/96.0" -> all three."""
    numbers = [float(n) for n in _NUMBER.findall(text)]
    return numbers[:1] if "±" in text else numbers


def _reading(
    column: Column, row: Row, table: Table, catalog: Catalog, root: Path
) -> tuple[list[list[float]], list[str]]:
    """Per finished seed, the column's metric values (scaled); and the ids of missing runs."""
    seeds, missing = [], []
    for chain in cell_runs(column, row, table, catalog):
        missing += [spec.id for spec in chain if not spec.is_done(root)]
        values = run_metrics(chain[-1].run_dir(root))
        if values is None:
            continue
        if not all(metric in values for metric in column.metrics):
            missing.append(f"{chain[-1].id} (no {', '.join(m for m in column.metrics if m not in values)})")
            continue
        seeds.append([float(values[m]) * column.scale for m in column.metrics])
    return seeds, missing


def read_cell(column: Column, row: Row, table: Table, catalog: Catalog, root: Path) -> Cell:
    seeds, missing = _reading(column, row, table, catalog, root)
    if not seeds:
        return Cell("not run", [], missing)
    means = [statistics.fmean(values) for values in zip(*seeds, strict=True)]
    text = "/".join(f"{m:.2f}" for m in means)
    if column.seeds > 1:
        spread = statistics.stdev(s[0] for s in seeds) if len(seeds) > 1 else math.nan
        text += f" ± {spread:.2f}" + (
            f" ({len(seeds)} of {column.seeds} seeds)" if len(seeds) < column.seeds else ""
        )
    numbers = list(means)
    if column.zero_shot is not None:
        zero_shot = read_cell(column.zero_shot, row, table, catalog, root)
        missing += zero_shot.missing
        text += f" ({zero_shot.ours})"
        numbers += zero_shot.numbers
    return Cell(text, numbers, missing)


def difference(paper: str, ours: Cell) -> str:
    expected = paper_numbers(paper)
    if not ours.numbers or len(ours.numbers) != len(expected):
        return "–"
    return "/".join(f"{o - p:+.2f}" for o, p in zip(ours.numbers, expected, strict=True))


def render(table: Table, catalog: Catalog, root: Path) -> str:
    """The markdown of result.md (never fails on missing runs: they are listed with commands)."""
    compared = "Δ = ours − paper." if table.difference else "Different worlds: compare trends, not values."
    lines = [f"# {table.title}", "", f"Runs read from `{root}`. Paper numbers in percent; {compared}", ""]
    lines += [
        "| Row | Column | Paper | Ours | Δ |" if table.difference else "| Row | Column | Paper | Ours |"
    ]
    lines += ["|---|---|---|---|---|" if table.difference else "|---|---|---|---|"]
    missing: list[str] = []
    for row in table.rows:
        for column in table.columns:
            cell = read_cell(column, row, table, catalog, root)
            missing += [m for m in cell.missing if m not in missing]
            paper = row.paper.get(column.key, "–")
            delta = f" {difference(paper, cell)} |" if table.difference else ""
            lines.append(f"| {row.label} | {column.label} | {paper} | {cell.ours} |{delta}")
    runs = {spec.id: spec for spec in table_runs(table, catalog)}
    todo = [spec for spec in runs.values() if not spec.is_done(root)]
    lines += ["", f"{len(runs) - len(todo)} of {len(runs)} runs done."]
    if todo:
        lines += [
            "",
            "## Not run yet",
            "",
            f"`make {table.name}-run` runs them in this order (each resumes):",
            "",
        ]
        lines += [f"- `{spec.id}`: `{spec.shell(root)}`" for spec in todo]
    incomplete = [m for m in missing if " (no " in m]
    if incomplete:
        lines += ["", "## Finished runs without the metric", ""] + [f"- {m}" for m in incomplete]
    return "\n".join(lines) + "\n"
