"""Table 5's shapes-world edition (`make table5-shapes`, experiments/shapes/): every run composes,
and a two-row version of it runs end to end and renders a full table and its PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.configs import compose_config, compose_eval_config
from vilt_lab.report.cli import main as report_main
from vilt_lab.report.definitions import load_catalog, load_table
from vilt_lab.report.plan import table_runs

SHAPES = Path(__file__).resolve().parents[1] / "experiments" / "shapes"


def shapes_runs():
    return table_runs(load_table(SHAPES / "table5"), load_catalog(SHAPES))


def test_the_edition_has_the_ablation_axes():
    runs = shapes_runs()
    kinds = [spec.kind for spec in runs]
    # 5 pre-training runs (three lengths without whole-word masking, with it, with MPP), 6 rows x
    # 3 fine-tuning recipes, a zero-shot evaluation per pre-training run.
    assert (kinds.count("pretrain"), kinds.count("finetune"), kinds.count("eval")) == (5, 18, 5)
    assert {spec.group.split("/")[0] for spec in runs} == {"table5-shapes"}
    assert all("world=shapes" in spec.tags for spec in runs)
    randaug = [spec for spec in runs if spec.kind == "finetune" and "augment=randaugment" in spec.overrides]
    assert len(randaug) == 3 and all(spec.depends_on == "s400" for spec in randaug)


def test_every_run_composes_at_its_ablation_setting(tmp_path):
    for spec in shapes_runs():
        overrides = [o for o in spec.command(tmp_path)[3:] if not o.startswith(("checkpoint=", "out_dir="))]
        if spec.kind == "eval":
            assert compose_eval_config([*overrides, "checkpoint=unused"]).task.name == "irtr"
            continue
        cfg = compose_config([*overrides, "logger.mode=disabled"])
        assert cfg.name == spec.id and cfg.model.size == "tiny" and cfg.model.num_layers == 3
        if spec.kind == "pretrain":
            steps = int(spec.id.split("_")[0].removeprefix("s"))
            assert cfg.schedule.max_steps == steps
            assert cfg.objective.mlm.whole_word == ("nowwm" not in spec.id)
            assert ("mpp" in cfg.objective) == ("mpp" in spec.id)
        else:
            assert cfg.schedule.max_epochs == 0.5
            assert (cfg.augment.name == "randaugment") == spec.id.split("--")[1].startswith(
                ("vqa_ra", "nlvr2_ra", "irtr_ra")
            )


def _short(overrides: list[str]) -> list[str]:
    """A pre-training run's overrides at 4 steps (its own length would outlast a test)."""
    return [o for o in overrides if not o.startswith("schedule.")] + [
        "schedule.max_steps=4",
        "logger.mode=disabled",
    ]


@pytest.mark.slow
def test_a_two_row_edition_runs_and_renders(shapes_world, tmp_path):
    folder = tmp_path / "shapes"
    (folder / "table5").mkdir(parents=True)
    runs = yaml.safe_load((SHAPES / "runs.yaml").read_text())
    recipes = yaml.safe_load((SHAPES / "recipes.yaml").read_text())
    table = yaml.safe_load((SHAPES / "table5" / "table.yaml").read_text())
    # Rows 4 and 6: one pre-training run, fine-tuned without and with RandAugment.
    table["rows"] = [table["rows"][3], table["rows"][5]]
    runs["pretrain"] = {
        "s400": {**runs["pretrain"]["s400"], "overrides": _short(runs["pretrain"]["s400"]["overrides"])}
    }
    # The fine-tuning recipes as they are: half an epoch of the test's small world is a few steps.
    for recipe in recipes["finetune"].values():
        recipe["overrides"] = [*recipe["overrides"], "logger.mode=disabled"]
    for name, content in (("runs.yaml", runs), ("recipes.yaml", recipes), ("table5/table.yaml", table)):
        (folder / name).write_text(yaml.safe_dump(content))

    root, data = tmp_path / "runs", f"data.root={shapes_world}"
    assert (
        report_main(
            [
                "run",
                str(folder / "table5"),
                "--runs",
                str(root),
                "--set",
                data,
            ]
        )
        == 0
    )
    out = tmp_path / "result-shapes.md"
    assert report_main(["render", str(folder / "table5"), "--runs", str(root), "--out", str(out)]) == 0
    result = out.read_text()
    assert "8 of 8 runs done." in result and "not run" not in result and "Δ" not in result
    cells = [line for line in result.splitlines() if line.startswith("| 400 ")]
    assert len(cells) == 2 * 4  # two rows x (VQA, NLVR2, TR, IR), each with a number of ours
    assert all(any(ch.isdigit() for ch in line.split("|")[4]) for line in cells)
    assert out.with_suffix(".png").stat().st_size > 1000
