"""What a table is: columns (a recipe and the metric read from its runs, or a metric of the
pre-training run itself), rows (a pre-training run and the paper's numbers), read from
`experiments/tableN/table.yaml`; and the run catalogue (`experiments/runs.yaml`,
`experiments/recipes.yaml`) the tables name their runs from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Column:
    """One column: the runs of `recipe` on a row's pre-training, and the metric(s) read from them;
    without a recipe, the metric(s) of the pre-training run's own final evaluation.

    metrics: one metric, or several shown as a/b/c (R@1/5/10); scale: x100 for fractions shown
    in percent; seeds: fine-tuning seeds averaged (mean +- std); zero_shot: a second reading
    shown in parentheses (Table 5's zero-shot R@1)."""

    key: str
    label: str
    recipe: str | None
    metrics: tuple[str, ...]
    scale: float = 1.0
    seeds: int = 1
    zero_shot: Column | None = None


@dataclass(frozen=True)
class Row:
    label: str
    pretrain: str
    randaug: bool = False
    paper: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    name: str  # table.yaml's `name`, else the folder's: table5 (W&B groups, make targets)
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    # False where ours and the paper's measure different worlds (the shapes edition): the paper's
    # numbers are shown for their trends, and no ours - paper column is computed.
    difference: bool = True
    # The label of the row every other row is compared with, difference of means against the
    # seed spread (report/spread.py); None: no such comparison.
    baseline: str | None = None

    @property
    def with_paper(self) -> bool:
        """Whether any row carries the paper's numbers (a table of our own runs alone has none)."""
        return any(row.paper for row in self.rows)


@dataclass(frozen=True)
class Catalog:
    """Pre-training runs by id, and the recipes run on top of them. A pre-training entry with
    `seeds: N` (N > 1) stands for N runs, `seed=0` ... `seed=N-1`."""

    pretrain: dict[str, dict[str, Any]]
    finetune: dict[str, dict[str, Any]]
    eval: dict[str, dict[str, Any]]

    def pretrain_seeds(self, pretrain: str) -> int:
        return int(self.pretrain[pretrain].get("seeds", 1))

    def recipe_kind(self, recipe: str) -> str:
        if recipe in self.finetune:
            return "finetune"
        if recipe in self.eval:
            return "eval"
        raise KeyError(f"recipe {recipe!r} is in neither finetune nor eval of recipes.yaml")


def _column(key: str, values: dict[str, Any], where: str) -> Column:
    unknown = set(values) - {"label", "recipe", "metric", "scale", "seeds", "zero_shot"}
    if unknown:
        raise KeyError(f"{where}: column {key}: unknown fields {sorted(unknown)}")
    metric = values["metric"]
    zero_shot = values.get("zero_shot")
    return Column(
        key=key,
        label=str(values.get("label", key)),
        recipe=str(values["recipe"]) if "recipe" in values else None,
        metrics=tuple(metric) if isinstance(metric, list) else (str(metric),),
        scale=float(values.get("scale", 1.0)),
        seeds=int(values.get("seeds", 1)),
        zero_shot=_column(f"{key}.zero_shot", {**zero_shot, "scale": values.get("scale", 1.0)}, where)
        if zero_shot
        else None,
    )


# The tables shipped with the package: a symlink to the repo's experiments/ in a checkout, a copy
# of its YAML files in a wheel (pyproject.toml's package-data), so vilt-report runs anywhere.
TABLES_DIR = Path(__file__).resolve().parents[1] / "experiments"


def find_table(name: str | Path) -> tuple[Path, bool]:
    """The table folder ``name`` names and whether it is the package's own: a folder holding
    table.yaml as given, else one of the shipped tables (``table5``, ``experiments/table5``,
    ``shapes/table5``); an error lists the shipped ones."""
    given = Path(name)
    if (given / "table.yaml").is_file():
        return given, False
    relative = Path(*given.parts[1:]) if given.parts[:1] == ("experiments",) else given
    if (TABLES_DIR / relative / "table.yaml").is_file():
        return TABLES_DIR / relative, True
    shipped = sorted(str(p.parent.relative_to(TABLES_DIR)) for p in TABLES_DIR.rglob("table.yaml"))
    raise FileNotFoundError(
        f"{name}: no table.yaml there, and no shipped table of that name; the shipped tables: "
        f"{', '.join(shipped)} (or a folder of your own holding table.yaml)"
    )


def load_table(folder: Path) -> Table:
    """`folder/table.yaml` as a Table; errors name the file and the field."""
    path = Path(folder) / "table.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a table folder holds table.yaml")
    data = yaml.safe_load(path.read_text())
    columns = tuple(_column(key, values, str(path)) for key, values in data["columns"].items())
    rows = []
    for index, row in enumerate(data["rows"]):
        stray = set(row.get("paper", {})) - {c.key for c in columns}
        if stray:
            raise KeyError(f"{path}: rows[{index}].paper has no such columns: {sorted(stray)}")
        rows.append(
            Row(
                label=str(row["label"]),
                pretrain=str(row["pretrain"]),
                randaug=bool(row.get("randaug", False)),
                paper={k: str(v) for k, v in row.get("paper", {}).items()},
            )
        )
    baseline = data.get("baseline")
    if baseline is not None and baseline not in [row.label for row in rows]:
        raise KeyError(f"{path}: baseline {baseline!r} is no row's label")
    return Table(
        name=str(data.get("name", Path(folder).resolve().name)),
        title=str(data["title"]),
        columns=columns,
        rows=tuple(rows),
        difference=bool(data.get("difference", True)),
        baseline=None if baseline is None else str(baseline),
    )


def load_catalog(experiments: Path) -> Catalog:
    """runs.yaml and recipes.yaml of a folder of tables (experiments/, or experiments/shapes/)."""
    runs = yaml.safe_load((Path(experiments) / "runs.yaml").read_text())
    recipes = yaml.safe_load((Path(experiments) / "recipes.yaml").read_text())
    return Catalog(pretrain=runs["pretrain"], finetune=recipes["finetune"], eval=recipes["eval"])
