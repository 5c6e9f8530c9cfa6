"""The paper's tables: every run composes and builds, result.md from finished and missing runs,
and W&B's grouping of a table's runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from helpers.configs import compose_config, compose_eval_config, fast_config, train_settings
from helpers.wandb_offline import wait_for_offline_run
from vilt_lab.build.task import build_task
from vilt_lab.report.cli import main as report_main
from vilt_lab.report.definitions import load_catalog, load_table
from vilt_lab.report.plan import table_runs
from vilt_lab.report.render import paper_numbers, render
from vilt_lab.train import run

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TABLES = ["table2", "table3", "table4", "table5"]
BERT_VOCAB = 30522


def all_runs():
    catalog = load_catalog(EXPERIMENTS)
    runs = {}
    for name in TABLES:
        for spec in table_runs(load_table(EXPERIMENTS / name), catalog):
            runs.setdefault(spec.id, spec)
    return runs


def test_every_table_names_known_runs_and_numbers():
    runs = all_runs()
    assert {spec.kind for spec in runs.values()} == {"pretrain", "finetune", "eval"}
    assert len([s for s in runs.values() if s.kind == "pretrain"]) == 6
    table5 = load_table(EXPERIMENTS / "table5")
    assert len(table5.rows) == 7 and all(len(row.paper) == 7 for row in table5.rows)
    assert paper_numbers("68.96 ± 0.07") == [68.96]
    assert paper_numbers("75.39 (45.12)") == [75.39, 45.12]
    assert paper_numbers("69.7/91.0/96.0") == [69.7, 91.0, 96.0]


def _build_overrides(spec, tmp_path: Path) -> list[str]:
    """The run's overrides, with no weights to fetch (no network here) and no W&B."""
    command = spec.command(tmp_path)
    overrides = [part for part in command[3:] if part not in ("-m",)]
    return [o for o in overrides if not o.startswith(("model.init_from=", "checkpoint=", "out_dir="))]


@pytest.mark.slow
def test_every_run_of_every_table_composes_and_builds(tmp_path):
    """Acceptance 1: each run's Hydra config composes and its module builds (ViLT-B/32, random
    weights: the pre-trained start is a download, the fine-tuning start a run dir)."""
    answers = tmp_path / "answers.json"  # the converter's file: VQAv2's 3,129 answers
    answers.write_text(json.dumps([f"answer {i}" for i in range(3129)]))
    built = set()
    for spec in all_runs().values():
        overrides = _build_overrides(spec, tmp_path)
        if spec.kind == "eval":
            cfg = compose_eval_config([*overrides, "checkpoint=unused"])
            assert cfg.task.name in ("irtr", "vqa") and cfg.split == "test"
            continue
        cfg = compose_config([*overrides, "model.init_from=null", "logger.mode=disabled"])
        if cfg.task.name == "vqa":
            cfg.data.answers = str(answers)
        assert cfg.name == spec.id and cfg.model.size == "base32"
        identity = (
            spec.kind,
            overrides[0],
            tuple(o for o in overrides if o.startswith(("objective", "schedule"))),
        )
        if identity in built:
            continue
        built.add(identity)
        module = build_task(train_settings(cfg), vocab_size=BERT_VOCAB, train=False)
        assert set(module.objectives) >= ({"itm", "mlm", "wpa"} if spec.kind == "pretrain" else set())
    assert len(built) >= 10


def test_pretraining_rows_switch_what_the_paper_says():
    runs = all_runs()
    cfgs = {
        name: compose_config([*_build_overrides(runs[name], Path("/tmp")), "model.init_from=null"])
        for name in ("pt25k_nowwm", "pt100k", "pt100k_mpp", "pt200k")
    }
    assert (
        cfgs["pt25k_nowwm"].schedule.max_steps == 25_000 and not cfgs["pt25k_nowwm"].objective.mlm.whole_word
    )
    assert cfgs["pt100k"].objective.mlm.whole_word and "mpp" not in cfgs["pt100k"].objective
    assert cfgs["pt100k_mpp"].objective.mpp.selected
    assert cfgs["pt200k"].schedule.max_steps == 200_000
    for cfg in cfgs.values():
        assert cfg.schedule.warmup == 2500 and cfg.trainer.global_batch_size == 4096
        assert cfg.trainer.precision == "fp16" and cfg.data.name == "4m"


def _finish(
    run_dir: Path, eval_values: dict, best_step: int | None = None, at_best: dict | None = None
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"eval": eval_values, "best": {"step": best_step} if best_step else None}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    if at_best:
        lines = [{"step": best_step, **at_best}, {"step": best_step + 10, **eval_values}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_result_lists_missing_runs_with_their_commands(tmp_path):
    table, catalog = load_table(EXPERIMENTS / "table2"), load_catalog(EXPERIMENTS)
    text = render(table, catalog, tmp_path)
    assert text.count("not run") == 9
    assert "0 of" in text and "python -m vilt_lab.train experiment=pretrain_paper name=pt100k" in text


def test_result_reads_the_selected_checkpoint_and_averages_seeds(tmp_path):
    table, catalog = load_table(EXPERIMENTS / "table5"), load_catalog(EXPERIMENTS)
    for seed, accuracy in enumerate((0.74, 0.75, 0.76)):
        # Dev and test-P are read at the best step, not at the run's end.
        _finish(
            tmp_path / f"pt100k--nlvr2-s{seed}",
            {"eval/nlvr2/accuracy": 0.5, "test/nlvr2/accuracy": 0.5},
            best_step=100,
            at_best={"eval/nlvr2/accuracy": accuracy, "test/nlvr2/accuracy": accuracy + 0.01},
        )
    _finish(
        tmp_path / "pt100k--irtr_f30k-s0",
        {},
        best_step=5,
        at_best={"test/irtr/tr_r1": 0.8, "test/irtr/ir_r1": 0.6},
    )
    _finish(tmp_path / "pt100k--zs_f30k", {"eval/irtr/tr_r1": 0.7, "eval/irtr/ir_r1": 0.5})
    text = render(table, catalog, tmp_path)
    row4 = [line for line in text.splitlines() if line.startswith("| 100K W=O M=X A=X |")]
    cells = {line.split(" | ")[1]: line.rstrip(" |").split(" | ")[3:5] for line in row4}
    assert cells["NLVR2 dev"] == ["75.00 ± 1.00", "+0.59"]
    assert cells["NLVR2 test-P"][0] == "76.00 ± 1.00"
    assert cells["F30K TR (ZS)"] == ["80.00 (70.00)", "-1.35/+0.27"]
    assert cells["VQAv2 test-dev"][0] == "not run"


def test_vilt_report_render_writes_result_and_plot(tmp_path):
    folder = tmp_path / "experiments" / "table3"
    folder.mkdir(parents=True)
    for name in ("runs.yaml", "recipes.yaml"):
        (folder.parent / name).write_text((EXPERIMENTS / name).read_text())
    (folder / "table.yaml").write_text((EXPERIMENTS / "table3" / "table.yaml").read_text())
    _finish(
        tmp_path / "runs" / "pt100k--zs_f30k",
        {f"eval/irtr/{k}": 0.5 for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10")},
    )
    assert report_main(["render", str(folder), "--runs", str(tmp_path / "runs")]) == 0
    result = (folder / "result.md").read_text()
    assert "50.00/50.00/50.00" in result and "-19.70/-41.00/-46.00" in result
    assert (folder / "result.png").stat().st_size > 1000


def test_run_dry_run_orders_pretraining_first(tmp_path, capsys):
    assert (
        report_main(
            [
                "run",
                str(EXPERIMENTS / "table2"),
                "--runs",
                str(tmp_path),
                "--dry-run",
                "--set",
                "paths.data_dir=/shards",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("run: ")]
    assert lines[0].startswith("run: pt100k: ") and "paths.data_dir=/shards" in lines[0]
    order = [line.split(":")[1].strip() for line in lines]
    assert (
        order.index("pt200k")
        < order.index("pt200k--vqa_ra-s0")
        < order.index("pt200k--vqa_ra-s0--vqa_testdev")
    )


def test_offline_wandb_run_of_a_table_row_carries_group_job_type_and_tags(shapes_world, tmp_path):
    cfg = fast_config(
        shapes_world,
        tmp_path,
        "logger.mode=offline",
        "logger.group=table5/row4",
        "logger.job_type=pretrain",
        "logger.tags=['steps=100k','wwm=on']",
        "evaluate=false",
    )
    run(cfg)
    offline = sorted((tmp_path / "demo" / "wandb").glob("offline-run-*"))
    recorded = wait_for_offline_run(offline[0])
    assert recorded["run"]["group"] == "table5/row4" and recorded["run"]["job_type"] == "pretrain"
    assert {"steps=100k", "wwm=on", "task=pretrain", "objective=itm", "objective=wpa"} <= set(
        recorded["run"]["tags"]
    )


def test_shipped_tables_plan_and_render_from_any_directory(tmp_path, monkeypatch, capsys) -> None:
    """The tables come with the package: by name, from a directory that is not the checkout."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    assert report_main(["plan", "table5", "--runs", str(runs)]) == 0
    assert "todo  pt25k_nowwm" in capsys.readouterr().out
    # A shipped table's result goes beside the runs, not into the package.
    assert report_main(["render", "shapes/table5", "--runs", str(runs)]) == 0
    assert (runs / "table5-shapes" / "result.md").is_file()
    assert report_main(["plan", "table9", "--runs", str(runs)]) == 2
    assert (
        "the shipped tables: future, shapes/future, shapes/table5, table2, table3, table4, table5"
        in capsys.readouterr().err
    )


def makefile_targets() -> set[str]:
    lines = (EXPERIMENTS.parent / "Makefile").read_text().splitlines()
    return {
        name
        for line in lines
        if re.match(r"^[\w%-]+( [\w%-]+)*:", line)
        for name in line.split(":")[0].split()
    }


def test_every_make_hint_names_a_target_that_make_help_lists(tmp_path) -> None:
    targets = makefile_targets()
    listed = subprocess.run(
        ["make", "-s", "help"], cwd=EXPERIMENTS.parent, capture_output=True, text=True
    ).stdout
    for folder in sorted(p.parent for p in EXPERIMENTS.rglob("table.yaml")):
        table = load_table(folder)
        text = render(table, load_catalog(folder.parent), tmp_path)
        hinted = re.findall(r"`make ([\w-]+)`", text)
        assert hinted, f"{folder}: render names no make target for its missing runs"
        for target in hinted:
            assert target in targets, f"{folder}: render suggests `make {target}`, which the Makefile lacks"
            assert target in listed, f"`make help` does not list {target}"
