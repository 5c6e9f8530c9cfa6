"""A user's mistake on the command line ends `vilt-train` / `vilt-eval` with one message on
stderr naming the key or file and the fix, exit status 2, no traceback and no run dir left.

The entry points run as the user runs them (subprocesses); `run()` and `evaluate()` keep raising
for Python callers (test_bad_settings and others check those errors).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf

import vilt_lab
from helpers.configs import FAST, compose_config, fast_config
from vilt_lab.config.errors import (
    BUG_STATUS,
    TRACEBACK_VARIABLE,
    USER_ERROR_STATUS,
    ConfigError,
    user_errors_reported,
)
from vilt_lab.config.hydra_errors import config_dirs, explain_hydra_error
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.schema import TrainSchema
from vilt_lab.eval import PROGRAM as EVAL_PROGRAM
from vilt_lab.train import PROGRAM as TRAIN_PROGRAM
from vilt_lab.training.checkpoint import MANIFEST, checkpoint_name
from vilt_lab.training.run_dir import RunDir

TRAIN, EVAL = "vilt_lab.train", "vilt_lab.eval"
# The package the tests import: the subprocess runs the same copy.
SOURCE = str(Path(vilt_lab.__file__).resolve().parents[1])

# What a user typed -> what the one message must say (regexes); {missing} is a path that does not
# exist.
MISTAKES = {
    "key typo": (
        TRAIN,
        ["trainer.keep_lst=3"],
        [r"trainer\.keep_lst: unknown key; did you mean trainer\.keep_last\?"],
    ),
    "objective typo": (
        TRAIN,
        ["objective=[itm,mlx]"],
        [
            r"objective=mlx: no such option; did you mean mlm\?",
            r"objective has itm, mim, mlm, mlm_light, mpp, wpa",
        ],
    ),
    "bad value type": (
        TRAIN,
        ["trainer.micro_batch_size=abc"],
        [r"trainer\.micro_batch_size='abc': expected an integer >= 1"],
    ),
    "missing init_from path": (
        TRAIN,
        ["model.init_from={missing}"],
        [
            r"model\.init_from='[^']*no_such': does not exist; expected timm:<name>, original:<name>, a vilt_lab checkpoint"
        ],
    ),
    "bad resume path": (
        TRAIN,
        ["resume={missing}"],
        [r"resume='[^']*no_such': does not exist; expected null, latest, auto or a checkpoint directory"],
    ),
    "vilt-eval split typo": (
        EVAL,
        ["split=tset", "checkpoint={missing}"],
        [r"split='tset': expected one of \['test', 'val'\]"],
    ),
    "experiment typo": (
        TRAIN,
        ["experiment=dmeo"],
        [r"experiment=dmeo: no such option; did you mean demo\? \(experiment has demo, finetune_demo_irtr"],
    ),
    "batch that does not split": (
        TRAIN,
        ["trainer.global_batch_size=6"],
        [r"trainer\.global_batch_size=6 is not a multiple of trainer\.micro_batch_size=4 x 1 processes"],
    ),
    "a number for a name": (
        TRAIN,
        ["name=123"],
        [r"name=123: expected a string .*quote it, e\.g\. 'name=\"123\"'"],
    ),
    "vilt-eval without checkpoint": (
        EVAL,
        [],
        [r"checkpoint: not set; pass checkpoint=<a vilt_lab checkpoint dir"],
    ),
}


def entry_point(module: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_clear_message(proc: subprocess.CompletedProcess, program: str, expected: list[str]) -> None:
    assert proc.returncode == USER_ERROR_STATUS, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"{program}: "), proc.stderr
    for pattern in expected:
        assert any(re.search(pattern, line) for line in proc.stderr.splitlines()), (
            f"{pattern!r} not in:\n{proc.stderr}"
        )
    assert f"{TRACEBACK_VARIABLE}=1" in proc.stderr.splitlines()[-1]


def fast_args(world: Path, runs: Path, *extra: str, module: str = TRAIN) -> list[str]:
    """A FAST run's settings (vilt-eval: its data and runs dir) on the shapes world."""
    fast = FAST if module == TRAIN else []
    return [*fast, f"data.root={world}", f"paths.runs_dir={runs}", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_gets_one_message_and_leaves_no_run_dir(mistake, shapes_world, tmp_path):
    module, overrides, expected = MISTAKES[mistake]
    runs = tmp_path / "runs"
    missing = tmp_path / "no_such"
    args = [o.format(missing=missing) for o in overrides]
    proc = entry_point(module, tmp_path, *fast_args(shapes_world, runs, *args, module=module))
    program = TRAIN_PROGRAM if module == TRAIN else EVAL_PROGRAM
    assert_one_clear_message(proc, program, expected)
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


def fake_finished_run(run_dir: Path, world: Path) -> Path:
    """A run dir that recorded other settings (optim.lr) and holds a complete, empty checkpoint."""
    layout = RunDir(run_dir)
    checkpoint = layout.checkpoints / checkpoint_name(1)
    checkpoint.mkdir(parents=True)
    (checkpoint / MANIFEST).write_text(json.dumps({"step": 1, "files": {}}))
    layout.config.write_text(OmegaConf.to_yaml(fast_config(world, run_dir.parent, "optim.lr=1e-9")))
    return checkpoint


@pytest.mark.slow
def test_a_refused_resume_gets_one_message_and_leaves_no_run_dir(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    checkpoint = fake_finished_run(tmp_path / "other" / "demo", shapes_world)
    proc = entry_point(TRAIN, tmp_path, *fast_args(shapes_world, runs, f"resume={checkpoint}"))
    assert_one_clear_message(proc, TRAIN_PROGRAM, [r"optim\.lr: 1e-09 \(recorded\) -> "])
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


@pytest.mark.slow
def test_the_traceback_variable_shows_the_traceback(shapes_world, tmp_path):
    proc = entry_point(
        TRAIN,
        tmp_path,
        *fast_args(shapes_world, tmp_path / "runs", "trainer.micro_batch_size=abc"),
        **{TRACEBACK_VARIABLE: "1"},
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "trainer.micro_batch_size='abc': expected an integer >= 1" in proc.stderr


# ---------------------------------------------------------------------------- in-process, fast
def test_a_user_error_exits_with_its_message(capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as stop, user_errors_reported(TRAIN_PROGRAM):
        raise ConfigError(["trainer.keep_last=0: expected an integer >= 1"])
    assert stop.value.code == USER_ERROR_STATUS
    assert capsys.readouterr().err.startswith(
        f"{TRAIN_PROGRAM}: bad settings, nothing was run:\n  trainer.keep_last=0: expected an integer >= 1\n"
    )


def test_a_required_value_exits_with_its_message(capsys, monkeypatch):
    """`${required:...}` raises while OmegaConf resolves the config, which wraps the error."""
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as stop, user_errors_reported(TRAIN_PROGRAM):
        compose_config(["experiment=finetune_vqa"])
    assert stop.value.code == USER_ERROR_STATUS
    assert "model.init_from is required: set model.init_from=<value>" in capsys.readouterr().err


# A job's launcher environment -> whether this process prints the message (each machine's first).
LAUNCHED = {
    "started alone": ({}, True),
    "rank 0": ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    "rank 3 on the first node": ({"RANK": "3", "LOCAL_RANK": "3"}, False),
    "the second node's first": ({"RANK": "8", "LOCAL_RANK": "0"}, True),
    "rank 2 without LOCAL_RANK": ({"RANK": "2"}, False),
}


@pytest.mark.parametrize("launched", list(LAUNCHED))
def test_a_job_of_several_processes_prints_a_user_error_once_per_machine(launched, capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    variables, prints = LAUNCHED[launched]
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stop, user_errors_reported(TRAIN_PROGRAM):
        raise ConfigError(["trainer.keep_last=0: expected an integer >= 1"])
    assert stop.value.code == USER_ERROR_STATUS
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.startswith(f"{TRAIN_PROGRAM}: bad settings") if prints else printed.err == ""


def test_an_unexpected_error_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(ZeroDivisionError), user_errors_reported(TRAIN_PROGRAM):
        raise ZeroDivisionError("a bug")


def test_a_bug_in_a_job_of_its_own_ends_the_process_with_its_traceback(capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as stop, user_errors_reported(TRAIN_PROGRAM, ends_the_process=True):
        raise ZeroDivisionError("a bug")
    assert stop.value.code == BUG_STATUS != 0
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err


def hydra_error(overrides: list[str]) -> HydraException:
    with pytest.raises(HydraException) as err, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        compose("train", overrides=overrides)
    return err.value


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["trainer.micro_bach_size=4"],
            "trainer.micro_bach_size: unknown key; did you mean trainer.micro_batch_size?",
        ),
        (
            ["model.num_heads=4"],
            "model.num_heads: not in the composed config; set it with ++model.num_heads=<value>",
        ),
        (["optim=adamw_tiny"], "optim=adamw_tiny: no such option; did you mean adamw? (optim has adamw)"),
    ],
)
def test_hydra_errors_are_explained(overrides, message):
    assert explain_hydra_error(hydra_error(overrides), TrainSchema, []) == message


def test_a_group_lists_the_options_of_every_config_dir(tmp_path):
    (tmp_path / "objective").mkdir()
    (tmp_path / "objective" / "captioning.yaml").write_text("{}\n")
    err = hydra_error(["objective=captionin"])
    message = explain_hydra_error(err, TrainSchema, ["--config-dir", str(tmp_path)])
    assert message.startswith("objective=captionin: no such option; did you mean captioning?")
    assert "captioning, itm, mim, mlm" in message


def test_config_dirs_reads_every_spelling():
    argv = ["--config-dir", "a", "--config-dir=b", "-cd", "c", "x=1"]
    assert config_dirs(argv) == [Path("a"), Path("b"), Path("c")]


# ----------------------------------------------------------------------- a failed job of a sweep
# optim.lr=1e12 makes the first step non-finite: a NonFiniteError, an exception that is no user
# error (its traceback is kept), raised after the run dir exists.
DIVERGES = "optim.lr=1e12"
DIVERGED = re.compile(r"NonFiniteError: step \d+: non-finite")


@pytest.mark.slow
def test_a_user_error_in_a_sweep_job_ends_the_sweep_with_its_message(shapes_world, tmp_path):
    args = fast_args(shapes_world, tmp_path / "runs", "trainer.micro_batch_size=abc,4")
    proc = entry_point(TRAIN, tmp_path, "-m", *args)
    assert proc.returncode == USER_ERROR_STATUS, proc.stderr
    assert "trainer.micro_batch_size='abc': expected an integer >= 1" in proc.stderr


@pytest.mark.slow
def test_a_failed_job_of_a_local_sweep_fails_the_sweep_after_the_others(shapes_world, tmp_path):
    runs = tmp_path / "runs"
    args = fast_args(shapes_world, runs, "evaluate=false", f"{DIVERGES},1e-4")
    proc = entry_point(TRAIN, tmp_path, "-m", *args)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert DIVERGED.search(proc.stderr), proc.stderr[-3000:]
    (failed,) = runs.rglob("*optim.lr:1000000000000.0/train.log")
    assert DIVERGED.search(failed.read_text())
    (finished,) = runs.rglob("*optim.lr:0.0001/summary.json")
    assert json.loads(finished.read_text())["steps"] == 4, "the job after the failed one ran"


@pytest.mark.slow
def test_a_failed_job_in_a_process_of_its_own_ends_that_process_failed(shapes_world, tmp_path):
    """submitit_local runs the job as a SLURM job runs it (submitit's job process): a job that
    ended its process with status 0 would leave a result ("success" with the failure inside),
    which SLURM reports COMPLETED."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs vilt_lab[slurm]")
    runs = tmp_path / "runs"
    args = fast_args(shapes_world, runs, "evaluate=false", DIVERGES, "hydra/launcher=submitit_local")
    proc = entry_point(TRAIN, tmp_path, "-m", *args)
    assert proc.returncode != 0
    assert "has not produced any output" in proc.stderr, proc.stderr[-3000:]
    assert not list(runs.rglob("*_result.pkl")), "the failed job reported success"
    (job_log,) = runs.rglob(".submitit/*/*_log.err")
    assert DIVERGED.search(job_log.read_text()), "the failure in the job's log"
    (train_log,) = runs.rglob("train.log")
    assert DIVERGED.search(train_log.read_text()), "and in the run dir's log"
