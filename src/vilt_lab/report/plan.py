"""The runs a table needs, in dependency order, as the exact commands that make them.

Run ids name run dirs under one root (`runs/paper` by default): a pre-training `pt100k`, its
fine-tuning `pt100k--vqa_ra-s1` (recipe, seed) and an evaluation `pt100k--zs_f30k` or
`pt100k--vqa_ra-s1--vqa_testdev` (an eval recipe on the run before `--`). Runs are shared
between tables: Table 2's first row is Table 5's fourth. A pre-training entry with `seeds: N`
is N runs `<id>-s0` ... (`seed=<k>`), each with its own fine-tuning and evaluations
(`<id>-s1--zs_shapes`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from ..training.run_dir import RunDir
from .definitions import Catalog, Column, Row, Table

TRAIN = ("python", "-m", "vilt_lab.train")
EVAL = ("python", "-m", "vilt_lab.eval")
# The pre-training recipe of a runs.yaml entry that names none (a shapes-world edition names its own).
PRETRAIN_EXPERIMENT = "pretrain_paper"


@dataclass(frozen=True)
class RunSpec:
    """One run: its id, kind (pretrain | finetune | eval), the overrides that make it, and the run
    it starts from (`depends_on`)."""

    id: str
    kind: str
    overrides: tuple[str, ...]
    depends_on: str | None
    group: str
    tags: tuple[str, ...]

    def run_dir(self, root: Path) -> RunDir:
        return RunDir(Path(root) / self.id)

    def is_done(self, root: Path) -> bool:
        """A finished run: its summary.json is written last (a fresh start moves a stale one aside)."""
        return self.run_dir(root).summary.is_file()

    def command(self, root: Path, launch: tuple[str, ...] | None = None) -> list[str]:
        """The command line that makes this run (resumable: `resume=auto`)."""
        if self.kind == "eval":
            target = Path(root) / self.depends_on
            return [*EVAL, *self.overrides, f"checkpoint={target}", f"out_dir={self.run_dir(root).path}"]
        start = (*launch, "vilt_lab.train") if launch else TRAIN
        init = [f"model.init_from={Path(root) / self.depends_on}"] if self.depends_on else []
        logger = [
            f"logger.group={self.group}",
            f"logger.job_type={self.kind}",
            # Quoted: Hydra's grammar does not take '=' in a bare list element.
            "logger.tags=[" + ",".join(f"'{tag}'" for tag in self.tags) + "]",
        ]
        return [
            *start,
            *self.overrides,
            *init,
            f"name={self.id}",
            f"paths.runs_dir={root}",
            "resume=auto",
            *logger,
        ]

    def shell(self, root: Path) -> str:
        return shlex.join(self.command(root))


def _recipe(name: str, row: Row) -> str:
    return f"{name}_ra" if row.randaug and not name.startswith("zs_") else name


def cell_runs(column: Column, row: Row, table: Table, catalog: Catalog) -> list[list[list[RunSpec]]]:
    """Per pre-training seed, per fine-tuning seed, the chain of runs one cell reads: [fine-tuning,
    its after-eval], [eval], or [the pre-training run] for a column without a recipe; the last run
    of each chain holds the metric."""
    group = f"{table.name}/row{table.rows.index(row) + 1}"
    return [_chains(column, row, pretrain, group, catalog) for pretrain in pretrain_runs(row, table, catalog)]


def _chains(column: Column, row: Row, pretrain: RunSpec, group: str, catalog: Catalog) -> list[list[RunSpec]]:
    """The chains of one cell on one pre-training run (`cell_runs`)."""
    if column.recipe is None:
        return [[pretrain]]
    recipe = _recipe(column.recipe, row)
    if catalog.recipe_kind(recipe) == "eval":
        return [[_eval_run(recipe, pretrain.id, group, pretrain.tags, catalog)]]
    chains = []
    for seed in range(column.seeds):
        spec = catalog.finetune[recipe]
        tags = (*pretrain.tags, f"recipe={recipe}", f"seed={seed}", *(["randaug=on"] if row.randaug else []))
        finetune = RunSpec(
            id=f"{pretrain.id}--{recipe}-s{seed}",
            kind="finetune",
            overrides=(
                f"experiment={spec['experiment']}",
                *spec.get("overrides", ()),
                # What every run on this pre-training needs (ViLT-L/32's fine-tuning builds its size).
                *catalog.pretrain[row.pretrain].get("finetune_overrides", ()),
                f"seed={seed}",
            ),
            depends_on=pretrain.id,
            group=group,
            tags=tags,
        )
        chain = [finetune]
        if spec.get("after"):
            chain.append(_eval_run(spec["after"], finetune.id, group, tags, catalog))
        chains.append(chain)
    return chains


def _eval_run(recipe: str, target: str, group: str, tags: tuple[str, ...], catalog: Catalog) -> RunSpec:
    return RunSpec(
        id=f"{target}--{recipe}",
        kind="eval",
        overrides=tuple(catalog.eval[recipe]["overrides"]),
        depends_on=target,
        group=group,
        tags=(*tags, f"recipe={recipe}"),
    )


def pretrain_runs(row: Row, table: Table, catalog: Catalog) -> list[RunSpec]:
    """The row's pre-training: the catalogue's run as it is, or one run per seed (`seed=<k>`, the
    id `<id>-s<k>`, the tag `pretrain_seed=<k>`: fine-tuning runs tag their own `seed=`)."""
    if row.pretrain not in catalog.pretrain:
        raise KeyError(f"{table.name}: row {row.label!r}: pre-training {row.pretrain!r} is not in runs.yaml")
    spec = catalog.pretrain[row.pretrain]
    base = RunSpec(
        id=row.pretrain,
        kind="pretrain",
        overrides=(f"experiment={spec.get('experiment', PRETRAIN_EXPERIMENT)}", *spec.get("overrides", ())),
        depends_on=None,
        group=str(spec.get("group", f"{table.name}/row{table.rows.index(row) + 1}")),
        tags=tuple(spec.get("tags", ())),
    )
    seeds = catalog.pretrain_seeds(row.pretrain)
    if seeds == 1:
        return [base]
    return [
        replace(
            base,
            id=f"{base.id}-s{seed}",
            overrides=(*base.overrides, f"seed={seed}"),
            tags=(*base.tags, f"pretrain_seed={seed}"),
        )
        for seed in range(seeds)
    ]


def table_runs(table: Table, catalog: Catalog) -> list[RunSpec]:
    """Every run of `table` once, pre-training first (seed by seed: every row's first seed before
    any row's second, so a table stopped half way compares its rows), each after the run it
    starts from."""
    ordered: dict[str, RunSpec] = {}
    per_row = [pretrain_runs(row, table, catalog) for row in table.rows]
    for seed in range(max(len(runs) for runs in per_row)):
        for runs in per_row:
            if seed < len(runs):
                ordered.setdefault(runs[seed].id, runs[seed])
    for row in table.rows:
        for column in table.columns:
            for zero_shot in (column, column.zero_shot):
                if zero_shot is None:
                    continue
                for chains in cell_runs(zero_shot, row, table, catalog):
                    for chain in chains:
                        for spec in chain:
                            ordered.setdefault(spec.id, spec)
    return list(ordered.values())
