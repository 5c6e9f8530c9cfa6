"""A SLURM job renames itself to its run's name (what `squeue` shows), from its first task only."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from vilt_lab.report.slurm import JobShape, routed
from vilt_lab.training.slurm_job import export_slurm_environment, name_slurm_job


@pytest.fixture
def scontrol(tmp_path, monkeypatch) -> Path:
    """A stand-in `scontrol` on PATH that writes down its arguments."""
    calls = tmp_path / "calls.txt"
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    return calls


def test_the_first_task_renames_its_job_to_the_run_name(scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "0")
    name_slurm_job("demo/objective/objective:itm-mlm")
    assert scontrol.read_text().split() == [
        "update",
        "JobId=4242",
        "JobName=demo/objective/objective:itm-mlm",
    ]


def test_a_task_of_an_array_renames_itself_alone(scontrol, monkeypatch):
    """The array's first task has the array's own job id: renaming that would rename every task."""
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    name_slurm_job("demo/model/model:tiny")
    assert scontrol.read_text().split() == ["update", "JobId=4242_0", "JobName=demo/model/model:tiny"]


def test_other_tasks_and_non_slurm_processes_leave_the_name(scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    name_slurm_job("demo")
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("SLURM_PROCID", "0")
    name_slurm_job("demo")
    assert not scontrol.exists()


def test_a_failed_rename_is_a_warning(tmp_path, monkeypatch, caplog):
    failing = tmp_path / "scontrol"
    failing.write_text("#!/bin/sh\necho 'Invalid job id' >&2\nexit 1\n")
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    with caplog.at_level(logging.WARNING):
        name_slurm_job("demo")
    assert "keeps its name" in caplog.text and "Invalid job id" in caplog.text


def test_slurm_task_variables_become_the_ranks(monkeypatch):
    # A copy of the environment: what the export sets must not reach the tests after this one.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(key, None)
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is taken as one host
    for key, value in {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_ID": "1234",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node7")
    export_slurm_environment()
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node7",
        "MASTER_PORT": "21234",
    }


def test_a_job_shape_becomes_sbatch_options_and_overrides_go_where_they_are_declared():
    shape = JobShape.parse(["gpus_per_node=0", "cpus_per_task=4", "partition=cpu", "account=lab"])
    options = shape.sbatch_options()
    assert "--ntasks-per-node=1" in options and "--partition=cpu" in options and "--account=lab" in options
    assert not any(o.startswith("--gpus-per-node") for o in options) and "--requeue" in options
    assert "--gpus-per-node=1" in JobShape.parse([]).for_evaluation().sbatch_options()
    given = ["schedule.warmup=0", "data.root=/d", "split=test"]
    assert routed(given, "eval") == ["data.root=/d", "split=test"]
    assert routed(given, "pretrain") == ["schedule.warmup=0", "data.root=/d"]
