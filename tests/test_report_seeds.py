"""Pre-training seeds in the report: a `seeds: N` entry is N runs with their own evaluations,
cells are mean ± sample std over them, rows are compared with the baseline against that spread,
and the future-work table of the shapes world (`make future-shapes`) plans its runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from helpers.configs import compose_config
from vilt_lab.report.cli import main as report_main
from vilt_lab.report.definitions import Column, Row, Table, load_catalog, load_table
from vilt_lab.report.plan import table_runs
from vilt_lab.report.render import render
from vilt_lab.training.run_dir import RunDir

SHAPES = Path(__file__).resolve().parents[1] / "experiments" / "shapes"
ROWS = ("fs_baseline", "fs_mixgen", "fs_mim", "fs_mixgen_mim", "fs_mpp")


def future_runs():
    return table_runs(load_table(SHAPES / "future"), load_catalog(SHAPES))


def _finish(run_dir: Path, eval_values: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({"eval": eval_values, "best": None}))


def test_seeds_expand_into_a_run_each_with_its_own_evaluation(tmp_path):
    runs = {spec.id: spec for spec in future_runs()}
    pretrain = [spec for spec in runs.values() if spec.kind == "pretrain"]
    assert sorted(spec.id for spec in pretrain) == sorted(f"{row}-s{k}" for row in ROWS for k in range(3))
    # One zero-shot evaluation per pre-training run (both retrieval columns read it), nothing else.
    evals = [spec for spec in runs.values() if spec.kind == "eval"]
    assert sorted(spec.depends_on for spec in evals) == sorted(spec.id for spec in pretrain)
    assert len(runs) == 30
    mim = runs["fs_mim-s2"].command(tmp_path)
    assert mim[mim.index("seed=2") + 1 :][:1] == ["name=fs_mim-s2"]
    assert "logger.group=future-shapes/mim" in mim
    assert "logger.tags=['world=shapes','steps=" in " ".join(mim) and "'pretrain_seed=2'" in " ".join(mim)
    zero_shot = runs["fs_mim-s2--zs_shapes"].command(tmp_path)
    assert f"checkpoint={tmp_path / 'fs_mim-s2'}" in zero_shot
    assert f"out_dir={tmp_path / 'fs_mim-s2--zs_shapes'}" in zero_shot


def test_fine_tuning_runs_start_from_each_pre_training_seed_and_average_per_seed(tmp_path):
    """A fine-tuning column (two fine-tuning seeds) on a row pre-trained over three seeds: six
    runs, each from its own pre-training run; the cell is over the three pre-training seeds, each
    the mean of its fine-tuning seeds: (10+20)/2, (30+40)/2, (50+60)/2 -> 35 ± 20."""
    column = Column(key="ir", label="IR@1", recipe="irtr", metrics=("eval/irtr/ir_r1",), scale=100, seeds=2)
    table = Table(
        name="t", title="t", columns=(column,), rows=(Row(label="baseline", pretrain="fs_baseline"),)
    )
    runs = {spec.id: spec for spec in table_runs(table, load_catalog(SHAPES))}
    finetune = [spec for spec in runs.values() if spec.kind == "finetune"]
    assert sorted(spec.id for spec in finetune) == [
        f"fs_baseline-s{p}--irtr-s{f}" for p in range(3) for f in range(2)
    ]
    assert f"model.init_from={tmp_path / 'fs_baseline-s2'}" in runs["fs_baseline-s2--irtr-s1"].command(
        tmp_path
    )
    for index, spec in enumerate(finetune):
        _finish(tmp_path / spec.id, {"eval/irtr/ir_r1": (index + 1) / 10})
    assert "| baseline | IR@1 | 35.00 ± 20.00 |" in render(table, load_catalog(SHAPES), tmp_path)


def test_runs_are_ordered_seed_by_seed_and_finished_ones_are_skipped(tmp_path, capsys):
    _finish(tmp_path / "fs_baseline-s0", {"eval/itm/accuracy": 0.6})
    assert report_main(["run", str(SHAPES / "future"), "--runs", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "done: fs_baseline-s0"
    order = ["fs_baseline-s0"] + [line.split(":")[1].strip() for line in out if line.startswith("run: ")]
    # Every row's first seed before any row's second; every pre-training run before evaluations.
    assert order[:5] == [f"{row}-s0" for row in ROWS] and order[5:10] == [f"{row}-s1" for row in ROWS]
    assert all("--" not in run for run in order[:15]) and all("--zs_shapes" in run for run in order[15:])


def test_the_switches_reach_their_rows_and_nothing_else(tmp_path):
    commands = {spec.id: spec.shell(tmp_path) for spec in future_runs() if spec.kind == "pretrain"}
    for run, command in commands.items():
        row = run.rsplit("-s", 1)[0]
        assert ("augment.mixgen.share=0.25" in command) == (row in ("fs_mixgen", "fs_mixgen_mim"))
        assert ("'objective=[itm,mlm_light,wpa,mim]'" in command) == (row in ("fs_mim", "fs_mixgen_mim"))
        assert ("'objective=[itm,mlm_light,wpa,mpp]'" in command) == (row == "fs_mpp")
        # No switch is given a value of its own beyond the share and MIM's decoder width (sized to
        # the tiny model: its default is ViLT-B's): ratio, target, weight and depth stay defaults.
        mim_settings = re.findall(r"objective\.mim\.\S+", command)
        assert "mixgen.lam" not in command
        assert mim_settings == (["objective.mim.decoder_width=64"] if "mim=on" in command else [])


def test_the_rows_that_exist_today_compose_at_their_seed(tmp_path):
    """The baseline and MPP rows: the demo's recipe with the seed set, MPP's exactly as the
    table5-shapes MPP row (its weights), at the future table's own length."""
    runs = {spec.id: spec for spec in future_runs()}
    table5 = table_runs(load_table(SHAPES / "table5"), load_catalog(SHAPES))
    table5_mpp = next(spec for spec in table5 if spec.id == "s400_mpp")

    def composed(spec):
        return compose_config([*spec.command(tmp_path)[3:], "logger.mode=disabled"])

    baseline, mpp, reference = (
        composed(runs["fs_baseline-s1"]),
        composed(runs["fs_mpp-s2"]),
        composed(table5_mpp),
    )
    steps = int(next(t for t in runs["fs_baseline-s1"].tags if t.startswith("steps=")).split("=")[1])
    assert (
        baseline.seed == 1
        and mpp.seed == 2
        and baseline.schedule.max_steps == mpp.schedule.max_steps == steps
    )
    assert set(baseline.objective) == {"itm", "mlm", "wpa"} and baseline.objective.mlm.weight == 0.3
    assert mpp.objective == reference.objective


def test_cells_are_mean_and_sample_std_and_rows_are_weighed_against_the_spread(tmp_path):
    # Held-out ITM per seed: baseline 60/62/64 (mean 62, s 2); +MixGen 61/63/65: +1 against
    # 2 x sqrt(4/3 + 4/3) = 3.27, within the spread; +MIM 70/71/72 (s 1): +9 against
    # 2 x sqrt(4/3 + 1/3) = 2.58, beyond it. MPP has two seeds of three, 50/52: -11 against
    # 2 x sqrt(4/3 + 2/2) = 3.06.
    itm = {
        "fs_baseline": (0.60, 0.62, 0.64),
        "fs_mixgen": (0.61, 0.63, 0.65),
        "fs_mim": (0.70, 0.71, 0.72),
        "fs_mpp": (0.50, 0.52),
    }
    for row, values in itm.items():
        for seed, value in enumerate(values):
            _finish(tmp_path / f"{row}-s{seed}", {"eval/itm/accuracy": value, "eval/mlm/accuracy": 0.5})
    for seed, tr in enumerate((0.10, 0.20, 0.30)):
        _finish(
            tmp_path / f"fs_baseline-s{seed}--zs_shapes", {"eval/irtr/tr_r10": tr, "eval/irtr/ir_r10": tr}
        )
    text = render(load_table(SHAPES / "future"), load_catalog(SHAPES), tmp_path)
    lines = text.splitlines()
    assert "| baseline | held-out ITM accuracy | 62.00 ± 2.00 |" in lines
    assert "| baseline | zero-shot TR@10 | 20.00 ± 10.00 |" in lines
    assert "| +MIM | held-out ITM accuracy | 71.00 ± 1.00 |" in lines
    assert "| MPP | held-out ITM accuracy | 51.00 ± 1.41 (2 of 3 seeds) |" in lines
    assert "| +MixGen +MIM | held-out ITM accuracy | not run |" in lines
    assert "| +MixGen | held-out ITM accuracy | +1.00 | 3.27 | no |" in lines
    assert "| +MIM | held-out ITM accuracy | +9.00 | 2.58 | **yes** |" in lines
    assert "| MPP | held-out ITM accuracy | -11.00 | 3.06 | **yes** |" in lines
    assert "| +MIM | held-out MLM accuracy | +0.00 | 0.00 | no |" in lines
    assert "| +MIM | zero-shot TR@10 | – | – | fewer than 2 seeds read |" in lines
    assert "|Δ| > 2 × SE, SE = sqrt(s1²/n1 + s2²/n2)" in text and "Paper" not in text
    out = tmp_path / "result.md"
    assert report_main(["render", str(SHAPES / "future"), "--runs", str(tmp_path), "--out", str(out)]) == 0
    assert "![ours per row](result.png)" in out.read_text() and out.with_suffix(".png").stat().st_size > 1000


def test_missing_seeded_runs_are_listed_with_their_commands(tmp_path):
    _finish(tmp_path / "fs_mpp-s0", {"eval/itm/accuracy": 0.5, "eval/mlm/accuracy": 0.5})
    text = render(load_table(SHAPES / "future"), load_catalog(SHAPES), tmp_path)
    assert "1 of 30 runs done." in text and "`make future-shapes-run`" in text
    todo = [line for line in text.splitlines() if line.startswith("- `")]
    assert len(todo) == 29 and not any(line.startswith("- `fs_mpp-s0`") for line in todo)
    assert (
        "- `fs_mpp-s2`: `python -m vilt_lab.train experiment=demo " in text
        and f"seed=2 name=fs_mpp-s2 paths.runs_dir={tmp_path} resume=auto" in text
    )
    assert "- `fs_mpp-s0--zs_shapes`: `python -m vilt_lab.eval task=irtr data=shapes_retrieval " in text


@pytest.mark.slow
def test_a_seeded_row_runs_resumes_and_renders(shapes_world, tmp_path, capsys):
    """The baseline row at 4 steps and two seeds through `vilt-report run`: two pre-training runs
    at their own seed, the columns read from them over both; a second run reruns nothing. (The
    zero-shot columns are left out: their evaluations are what table5-shapes' test runs, and
    each costs a minute.)"""
    folder = tmp_path / "shapes"
    (folder / "future").mkdir(parents=True)
    entry = yaml.safe_load((SHAPES / "runs.yaml").read_text())["pretrain"]["fs_baseline"]
    entry = {**entry, "seeds": 2, "overrides": ["schedule.max_steps=4", "logger.mode=disabled"]}
    table = yaml.safe_load((SHAPES / "future" / "table.yaml").read_text())
    table["rows"] = table["rows"][:1]
    table["columns"] = {key: column for key, column in table["columns"].items() if "recipe" not in column}
    (folder / "runs.yaml").write_text(yaml.safe_dump({"pretrain": {"fs_baseline": entry}}))
    (folder / "recipes.yaml").write_text((SHAPES / "recipes.yaml").read_text())
    (folder / "future" / "table.yaml").write_text(yaml.safe_dump(table))
    root, data = tmp_path / "runs", f"data.root={shapes_world}"
    command = ["run", str(folder / "future"), "--runs", str(root), "--set", data]
    assert report_main(command) == 0
    for seed in (0, 1):
        assert yaml.safe_load(RunDir(root / f"fs_baseline-s{seed}").config.read_text())["seed"] == seed
    capsys.readouterr()
    assert report_main(command) == 0
    assert capsys.readouterr().out.count("done: ") == 2
    text = render(load_table(folder / "future"), load_catalog(folder), root)
    assert "2 of 2 runs done." in text and "not run" not in text
    cells = [line for line in text.splitlines() if line.startswith("| baseline | ")]
    assert len(cells) == 2 and all(" ± " in line for line in cells)
