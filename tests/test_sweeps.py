"""Sweeps that sweep: the `objective` group alone selects, and multirun jobs never share a run dir."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers.configs import compose_config, train_settings
from helpers.run_dirs import run_dirs
from vilt_lab.build.task import read_run_checkpoint
from vilt_lab.tasks.pretrain import PretrainTask
from vilt_lab.train import run
from vilt_lab.training.metrics_log import read_metrics
from vilt_lab.training.run_name import override_dirname

# A sweep where demo.yaml tunes objective.wpa.weight, which must not select WPA in job 0.
SWEEP = ["experiment=demo", "objective=[itm,mlm],[itm,mlm,wpa]"]
# Each job's run dir: runs/<tag>/<sweep: the swept key>/<the job's settings>.
JOB_OBJECTIVES = {"objective:itm-mlm": {"itm", "mlm"}, "objective:itm-mlm-wpa": {"itm", "mlm", "wpa"}}


def trained_objectives(run_dir) -> set[str]:
    """The objectives whose training loss metrics.jsonl logged (`train/<name>/loss`)."""
    keys = {key for line in read_metrics(run_dir / "metrics.jsonl") for key in line}
    return {m.group(1) for key in keys if (m := re.fullmatch(r"train/(\w+)/loss", key))}


def test_settings_of_an_unselected_objective_are_ignored_with_a_warning(caplog):
    cfg = compose_config(["experiment=demo", "objective=[itm,mlm]"])
    assert cfg.objective.wpa.weight == 0.5  # demo.yaml's setting is there ...
    with caplog.at_level(logging.WARNING):
        selected = PretrainTask().objectives(train_settings(cfg), None, train=True)
    assert set(selected) == {"itm", "mlm"}  # ... but selects nothing
    assert "objective.wpa" in caplog.text and "ignored" in caplog.text
    assert selected["mlm"][0] == 0.3  # and the selected ones keep the experiment's settings


def test_no_selection_is_refused_even_with_settings():
    cfg = compose_config(["experiment=demo", "objective=[]"])
    with pytest.raises(ValueError, match="no objective selected"):
        PretrainTask().objectives(train_settings(cfg), None, train=True)


def test_a_run_dir_config_without_marks_selects_every_entry(shapes_world, tmp_path):
    """Run dirs written before the group marked its selection still load."""
    cfg = compose_config(
        [
            "experiment=demo",
            "debug=fast",
            "data.generate_n=0",
            "resume=null",
            "evaluate=false",
            f"data.root={shapes_world}",
            f"paths.runs_dir={tmp_path}",
        ]
    )
    run(cfg)
    config_path = tmp_path / "demo" / "config.yaml"
    recorded = OmegaConf.load(config_path)
    for values in recorded.objective.values():
        del values["selected"]
    config_path.write_text(OmegaConf.to_yaml(recorded))
    # The task module is rebuilt from config.yaml and loaded strictly: every head is there.
    checkpoint = read_run_checkpoint(tmp_path / "demo" / "checkpoints" / "step_00000004")
    assert {"itm", "mlm"} <= set(checkpoint.heads)


@pytest.mark.slow
def test_objective_sweep_gives_each_job_its_run_dir_and_objectives(shapes_world, tmp_path):
    common = ["debug=fast", "data.generate_n=0", f"data.root={shapes_world}"]
    cmd = [sys.executable, "-m", "vilt_lab.train", "-m", *SWEEP, *common, f"paths.runs_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    sweep_dir = tmp_path / "demo" / "objective"
    # The settings every job typed are in each job's name too, sorted by key.
    settings = override_dirname(common, keep_may_change=True)
    assert settings.startswith("data.generate_n:0+data.root:") and settings.endswith("+debug:fast")
    assert run_dirs(tmp_path) == sorted(sweep_dir / f"{settings}+{leaf}" for leaf in JOB_OBJECTIVES)
    assert (sweep_dir / "multirun.yaml").is_file(), "the sweep's record is in its own directory"
    for leaf, objectives in JOB_OBJECTIVES.items():
        run_dir = sweep_dir / f"{settings}+{leaf}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["run_dir"] == str(run_dir) and summary["steps"] == 4
        assert trained_objectives(run_dir) == objectives, leaf
        assert {f"eval/{o}/loss" for o in objectives} <= set(summary["eval"])
