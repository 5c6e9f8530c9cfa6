"""The paper's future work as switches that compose: MixGen and masked image modelling in one
pre-training run, every objective's loss finite, MIM's decoder trained, MixGen's texts in it;
the future-work table plans each row with its switch."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.configs import fast_config
from vilt_lab.report.definitions import load_catalog, load_table
from vilt_lab.report.plan import table_runs
from vilt_lab.train import run

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_mixgen_and_mim_train_together(shapes_world, tmp_path) -> None:
    summary = run(
        fast_config(
            shapes_world,
            tmp_path,
            "augment.mixgen.share=0.5",
            "objective=[itm,mlm_light,wpa,mim]",
            "objective.mim.decoder_width=64",
            "objective.mim.decoder_depth=1",
            "evaluate=false",
        )
    )
    assert summary["steps"] == 4
    lines = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    for objective in ("itm", "mlm", "wpa", "mim"):
        losses = [line[f"train/{objective}/loss"] for line in lines if f"train/{objective}/loss" in line]
        assert len(losses) == 4 and all(abs(loss) < 1e6 for loss in losses), objective
    recorded = (tmp_path / "demo" / "config.yaml").read_text()
    assert "share: 0.5" in recorded and "mim:" in recorded


def test_the_future_table_plans_each_switch_on_the_final_recipe() -> None:
    folder = EXPERIMENTS / "future"
    runs = {spec.id: spec for spec in table_runs(load_table(folder), load_catalog(folder.parent))}
    pretrain = {run_id: spec.overrides for run_id, spec in runs.items() if spec.kind == "pretrain"}
    assert set(pretrain) == {
        "pt200k",
        "pt200k_mixgen",
        "pt200k_mim",
        "pt200k_mixgen_mim",
        "pt200k_large32",
        "pt200k_14m",
    }
    for run_id, overrides in pretrain.items():
        assert "schedule=step200k" in overrides, run_id
    assert "augment.mixgen.share=0.25" in pretrain["pt200k_mixgen_mim"]
    assert "objective=[itm,mlm,wpa,mim]" in pretrain["pt200k_mixgen_mim"]
    assert "data=14m" in pretrain["pt200k_14m"]
    # ViLT-L/32's fine-tuning builds ViLT-L/32 too; the others keep their recipe's size.
    large = [
        spec for spec in runs.values() if spec.kind == "finetune" and spec.depends_on == "pt200k_large32"
    ]
    assert large and all("model=large32" in spec.overrides for spec in large)
    base = [spec for spec in runs.values() if spec.kind == "finetune" and spec.depends_on == "pt200k_14m"]
    assert base and not any("model=large32" in spec.overrides for spec in base)
