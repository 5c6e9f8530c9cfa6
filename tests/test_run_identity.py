"""A run's identity: the command line names its run dir, so the same command finds its run again,
a different one never lands in another's, sweeps never meet, and `resume=<run dir>` needs nothing
else."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from helpers.configs import compose_config, fast_config
from helpers.run_dirs import run_dirs
from helpers.wandb_offline import wait_for_offline_run
from vilt_lab.train import run
from vilt_lab.training.resume_run import config_to_resume
from vilt_lab.training.run_dir import RunDir, resolve_run_dir
from vilt_lab.training.run_name import single_run_name, sweep_job_name, with_sweep_named

ENV = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def vilt_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "vilt_lab.train", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def fast(world: Path, runs: Path) -> list[str]:
    return [
        "debug=fast",
        "evaluate=false",
        "data.generate_n=0",
        f"data.root={world}",
        f"paths.runs_dir={runs}",
    ]


# ----------------------------------------------------------------------------- names
def test_a_single_run_is_named_after_the_settings_that_define_it():
    assert single_run_name("demo", ["experiment=demo", "paths.runs_dir=/r", "logger=offline"]) == "demo"
    assert single_run_name("demo", ["experiment=demo", "debug=fast"]) == "demo/debug:fast"
    # Settings a resume may change (how the run runs) leave the name alone, so adding one to the
    # command finds the same run.
    assert single_run_name("demo", ["debug=fast", "trainer.grad_checkpointing=true"]) == "demo/debug:fast"
    assert single_run_name("t", ["seed=1", "objective=[itm,mlm]", "model=tiny"]) == (
        "t/model:tiny+objective:itm-mlm+seed:1"
    )


def test_a_path_value_keeps_its_last_part_and_tells_two_paths_apart():
    a = single_run_name("ft", ["model.init_from=runs/a/checkpoints/step_00001600"])
    b = single_run_name("ft", ["model.init_from=runs/b/checkpoints/step_00001600"])
    assert a.startswith("ft/model.init_from:step_00001600@") and a != b


def test_a_run_name_can_be_passed_back_on_the_command_line():
    """`resume=<run dir>` and `model.init_from=<run dir>` parse: no '=' and no ',' in a name."""
    name = sweep_job_name(
        "demo", "objective", ["objective=[itm,mlm,wpa]", "optim.lr=1e-3", "data.root=/x/y"], 0
    )
    override = OverridesParser.create().parse_overrides([f"resume=/runs/{name}"])[0]
    assert not override.is_sweep_override() and override.value() == f"/runs/{name}"


def test_a_long_name_is_cut_and_kept_unique():
    many = [f"+extra.key_{i}=value_{i}" for i in range(30)]
    name = single_run_name("t", many)
    assert len(name.split("/")[1]) <= 120
    assert name != single_run_name("t", [*many[:-1], "+extra.key_29=other"])


def test_a_sweep_is_named_by_name_else_by_its_swept_keys():
    assert with_sweep_named(["experiment=demo", "model=tiny"]) == ["experiment=demo", "model=tiny"]
    argv = ["-m", "experiment=demo", "model=tiny,small32", "seed=0,1"]
    assert with_sweep_named(argv)[-1] == "sweep='model+seed'"
    assert with_sweep_named(["-m", "name=abl", "model=tiny,small32"])[-1] == "sweep='abl'"
    # -m that sweeps nothing (a launcher's one job) is named as a single run.
    assert with_sweep_named(["-m", "name=r1", "launcher=slurm"])[-1] == "hydra.sweep.dir=${paths.runs_dir}"
    assert sweep_job_name("demo", "model+seed", ["model=tiny", "seed=1", "trainer.compile=true"], 3) == (
        "demo/model+seed/model:tiny+seed:1+trainer.compile:true"
    )


# ----------------------------------------------------------------------------- the loop
@pytest.mark.slow
def test_two_sweeps_back_to_back_land_in_four_run_dirs_and_four_wandb_groups(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    common = [*fast(shapes_world, runs), "logger.mode=offline"]  # debug=fast turns W&B off
    vilt_train("-m", "experiment=demo", "objective=[itm,mlm],[itm,mlm,wpa]", *common, cwd=tmp_path)
    vilt_train("-m", "experiment=demo", "model=tiny,small32", "model.num_layers=1", *common, cwd=tmp_path)

    found = run_dirs(runs)
    assert len(found) == 4
    sweeps = {path.relative_to(runs).parts[:2] for path in found}
    assert sweeps == {("demo", "objective"), ("demo", "model")}
    leaves = sorted(path.name.rsplit("+", 1)[-1] for path in found)
    assert leaves == ["model:small32", "model:tiny", "objective:itm-mlm", "objective:itm-mlm-wpa"]
    for path in found:
        assert json.loads((path / "summary.json").read_text())["steps"] == 4

    # Each sweep is one W&B group holding exactly its jobs; each job's W&B name is its run's name.
    groups: dict[str, set[str]] = {}
    for path in found:
        (offline,) = (path / "wandb").glob("offline-run-*")
        recorded = wait_for_offline_run(offline)["run"]
        assert recorded["name"] == str(path.relative_to(runs))
        assert recorded["job_type"] == "pretrain"
        groups.setdefault(recorded["group"], set()).add(path.name)
    assert groups == {
        "demo/objective": {p.name for p in found if "objective:" in p.name},
        "demo/model": {p.name for p in found if "+model:" in p.name},
    }


@pytest.mark.slow
def test_rerunning_finished_commands_and_a_debug_run_after_the_demo(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    # What `make demo` leaves: runs/demo, a finished run (here a fast one, named as the demo is).
    demo = run(fast_config(shapes_world, runs, "evaluate=false"))
    assert demo["run_dir"] == str(runs / "demo")
    # The README's debug path then trains a run of its own beside it ...
    first = vilt_train("experiment=demo", *fast(shapes_world, runs), cwd=tmp_path)
    assert len(run_dirs(runs)) == 2
    # ... and the same command again finds that run and resumes it, finished: no error, no new dir.
    again = vilt_train("experiment=demo", *fast(shapes_world, runs), cwd=tmp_path)
    assert "resumed from" in again.stdout + again.stderr, again.stdout[-2000:]
    assert len(run_dirs(runs)) == 2
    assert "step" in first.stdout


@pytest.mark.slow
def test_resume_a_killed_run_from_its_run_dir_alone(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    vilt_train("experiment=demo", "model=small32", *fast(shapes_world, runs), cwd=tmp_path)
    (run_dir,) = run_dirs(runs)
    # A run killed after its step-2 checkpoint: no later checkpoint and no summary.
    for late in ("checkpoints/step_00000004", "summary.json"):
        target = run_dir / late
        subprocess.run(["rm", "-r", str(target)], check=True)

    # From another directory, with nothing but the run dir: its recorded config continues.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    vilt_train(f"resume={run_dir}", cwd=elsewhere)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["run_dir"] == str(run_dir)
    (resumed,) = [json.loads(line) for line in (run_dir / "resume_history.jsonl").read_text().splitlines()]
    assert resumed["step"] == 2 and resumed["changes"] == {}
    assert OmegaConf.load(run_dir / "config.yaml").model.size == "small32"
    assert run_dirs(runs) == [run_dir] and not (elsewhere / "runs").exists()


def test_resume_of_a_run_dir_takes_its_config_and_the_command_lines_settings(shapes_world, tmp_path, caplog):
    run_dir = RunDir(tmp_path / "runs" / "demo" / "model:small32")
    run_dir.path.mkdir(parents=True)
    recorded = fast_config(shapes_world, tmp_path / "runs", "model=small32", "name=demo/model:small32")
    run_dir.config.write_text(OmegaConf.to_yaml(recorded))

    typed = ["experiment=demo", "debug=fast", "trainer.micro_batch_size=2", f"resume={run_dir.path}"]
    with caplog.at_level(logging.WARNING):
        resumed = config_to_resume(compose_config(typed), typed)
    assert resumed.model.size == "small32" and resumed.trainer.micro_batch_size == 2
    assert resumed.resume == "auto" and "experiment" not in resumed and "debug" not in resumed
    assert "experiment=, debug= not applied" in caplog.text
    # Found where it is now, under its recorded name.
    assert resolve_run_dir(resumed).path == run_dir.path.resolve()
    moved = tmp_path / "moved"
    run_dir.path.rename(moved)
    assert resolve_run_dir(config_to_resume(compose_config([f"resume={moved}"]), [])).path == moved.resolve()
    # Anything else is the command's own run.
    assert config_to_resume(compose_config(["resume=latest"]), ["resume=latest"]) is None
