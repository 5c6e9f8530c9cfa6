"""PNGs beside result.md: paper vs ours per cell (bars), and the training curves of a table's runs."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..training.metrics_log import read_metrics
from .definitions import Catalog, Table
from .plan import table_runs
from .render import paper_numbers, read_cell


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a compute node
    import matplotlib.pyplot as plt

    return plt


def draw_cells(table: Table, catalog: Catalog, root: Path, out: Path) -> Path:
    """One panel per column: the paper's first number and ours per row (ours missing: no bar); a
    table without paper numbers draws ours alone, with its seeds' standard deviation as error bars."""
    plt = pyplot()
    columns = table.columns
    figure, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.6), squeeze=False)
    for axis, column in zip(axes[0], columns, strict=True):
        positions = range(len(table.rows))
        cells = [read_cell(column, row, table, catalog, root) for row in table.rows]
        ours = [(cell.numbers or [float("nan")])[0] for cell in cells]
        if not table.with_paper:
            spread = [statistics.stdev(c.samples) if len(c.samples) > 1 else 0.0 for c in cells]
            axis.bar(list(positions), ours, width=0.6, yerr=spread, capsize=3, label="ours")
        else:
            paper = [
                (paper_numbers(row.paper.get(column.key, "")) or [float("nan")])[0] for row in table.rows
            ]
            axis.bar([p - 0.2 for p in positions], paper, width=0.4, label="paper")
            axis.bar([p + 0.2 for p in positions], ours, width=0.4, label="ours")
        axis.set_xticks(list(positions), [str(i + 1) for i in positions])
        axis.set_title(column.label, fontsize=9)
        axis.set_xlabel("row")
    axes[0][0].legend(fontsize=8)
    figure.suptitle(table.title)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def draw_curves(
    table: Table, catalog: Catalog, root: Path, out: Path, metric: str = "train/loss"
) -> Path | None:
    """`metric` over steps for every run of the table that logged it; None when none did."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = 0
    for spec in table_runs(table, catalog):
        metrics_file = spec.run_dir(root).metrics
        if not metrics_file.is_file():
            continue
        points = read_metrics(metrics_file)
        points = [(p["step"], p[metric]) for p in points if isinstance(p.get(metric), int | float)]
        if points:
            axis.plot(*zip(*points, strict=True), label=spec.id, linewidth=1)
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    axis.set_xlabel("step")
    axis.set_ylabel(metric)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
