"""result.md: paper | ours | difference per cell, and the command of every run still missing."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .definitions import Catalog, Column, Row, Table
from .plan import RunSpec, cell_runs, table_runs
from .results import run_metrics
from .spread import RULE, SPREAD_FACTOR, Spread, compare

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Cell:
    """What one cell shows: ours as text, the numbers compared with the paper's, missing runs, and
    the first metric's samples its mean and spread are over (one per seed)."""

    ours: str
    numbers: list[float]
    missing: list[str]
    samples: list[float] = field(default_factory=list)


def paper_numbers(text: str) -> list[float]:
    """The numbers a paper cell compares on: 70.33 -> [70.33]; "68.96 ± 0.07" -> [68.96] (the
    std is not compared); "75.39 (45.12)" -> [75.39, 45.12]; "69.7/91.0/96.0" -> all three."""
    numbers = [float(n) for n in _NUMBER.findall(text)]
    return numbers[:1] if "±" in text else numbers


def _reading(column: Column, chains: list[list[RunSpec]], root: Path) -> tuple[list[list[float]], list[str]]:
    """Per finished chain, the column's metric values (scaled); and the ids of missing runs."""
    seeds, missing = [], []
    for chain in chains:
        missing += [spec.id for spec in chain if not spec.is_done(root)]
        values = run_metrics(chain[-1].run_dir(root))
        if values is None:
            continue
        if not all(metric in values for metric in column.metrics):
            missing.append(f"{chain[-1].id} (no {', '.join(m for m in column.metrics if m not in values)})")
            continue
        seeds.append([float(values[m]) * column.scale for m in column.metrics])
    return seeds, missing


def _samples(
    column: Column, row: Row, table: Table, catalog: Catalog, root: Path
) -> tuple[list[list[float]], int, list[str]]:
    """What a cell's mean and spread are over, how many of them the table asks for, and the missing
    runs: the fine-tuning seeds of a row pre-trained once; else one sample per pre-training seed,
    the mean over its fine-tuning seeds (the pre-training seed is the larger source of spread)."""
    per_pretrain = cell_runs(column, row, table, catalog)
    readings = [_reading(column, chains, root) for chains in per_pretrain]
    missing = [run for _, runs in readings for run in runs]
    if len(per_pretrain) == 1:
        return readings[0][0], column.seeds, missing
    samples = [[statistics.fmean(v) for v in zip(*seeds, strict=True)] for seeds, _ in readings if seeds]
    return samples, len(per_pretrain), missing


def read_cell(column: Column, row: Row, table: Table, catalog: Catalog, root: Path) -> Cell:
    seeds, expected, missing = _samples(column, row, table, catalog, root)
    if not seeds:
        return Cell("not run", [], missing)
    means = [statistics.fmean(values) for values in zip(*seeds, strict=True)]
    text = "/".join(f"{m:.2f}" for m in means)
    if expected > 1:
        spread = statistics.stdev(s[0] for s in seeds) if len(seeds) > 1 else math.nan
        text += f" ± {spread:.2f}" + (f" ({len(seeds)} of {expected} seeds)" if len(seeds) < expected else "")
    numbers = list(means)
    if column.zero_shot is not None:
        zero_shot = read_cell(column.zero_shot, row, table, catalog, root)
        missing += zero_shot.missing
        text += f" ({zero_shot.ours})"
        numbers += zero_shot.numbers
    return Cell(text, numbers, missing, [s[0] for s in seeds])


def difference(paper: str, ours: Cell) -> str:
    expected = paper_numbers(paper)
    if not ours.numbers or len(ours.numbers) != len(expected):
        return "–"
    return "/".join(f"{o - p:+.2f}" for o, p in zip(ours.numbers, expected, strict=True))


def _against_baseline(table: Table, cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Every other row against the baseline row, column by column: Δ of means, twice its standard
    error, and whether Δ is beyond the seeds' spread (report/spread.py's rule)."""
    lines = [
        "",
        f"## Against {table.baseline}",
        "",
        f"Δ = row mean − {table.baseline} mean; {RULE}.",
        "",
        f"| Row | Column | Δ | {SPREAD_FACTOR:g} × SE | Beyond the seed spread |",
        "|---|---|---|---|---|",
    ]
    for row in table.rows:
        if row.label == table.baseline:
            continue
        for column in table.columns:
            ours, base = cells[row.label, column.key], cells[table.baseline, column.key]
            compared = (
                compare(Spread.of(ours.samples), Spread.of(base.samples))
                if ours.samples and base.samples
                else None
            )
            if compared is None:
                lines.append(f"| {row.label} | {column.label} | – | – | fewer than 2 seeds read |")
                continue
            verdict = "**yes**" if compared.beyond_spread else "no"
            lines.append(
                f"| {row.label} | {column.label} | {compared.delta:+.2f} | "
                f"{SPREAD_FACTOR * compared.standard_error:.2f} | {verdict} |"
            )
    return lines


def render(table: Table, catalog: Catalog, root: Path) -> str:
    """The markdown of result.md (never fails on missing runs: they are listed with commands). A
    table without paper numbers has no Paper column; one with a baseline row ends in the rows'
    differences from it against their seed spread."""
    if table.with_paper:
        compared = (
            "Δ = ours − paper." if table.difference else "Different worlds: compare trends, not values."
        )
        lines = [f"# {table.title}", "", f"Runs read from `{root}`. Paper numbers in percent; {compared}", ""]
        lines += [
            "| Row | Column | Paper | Ours | Δ |" if table.difference else "| Row | Column | Paper | Ours |"
        ]
        lines += ["|---|---|---|---|---|" if table.difference else "|---|---|---|---|"]
    else:
        lines = [
            f"# {table.title}",
            "",
            f"Runs read from `{root}`. Mean ± sample standard deviation (n − 1).",
            "",
        ]
        lines += ["| Row | Column | Ours |", "|---|---|---|"]
    missing: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for row in table.rows:
        for column in table.columns:
            cell = cells[row.label, column.key] = read_cell(column, row, table, catalog, root)
            missing += [m for m in cell.missing if m not in missing]
            if not table.with_paper:
                lines.append(f"| {row.label} | {column.label} | {cell.ours} |")
                continue
            paper = row.paper.get(column.key, "–")
            delta = f" {difference(paper, cell)} |" if table.difference else ""
            lines.append(f"| {row.label} | {column.label} | {paper} | {cell.ours} |{delta}")
    if table.baseline is not None:
        lines += _against_baseline(table, cells)
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
