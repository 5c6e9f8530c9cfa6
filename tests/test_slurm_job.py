"""A SLURM job renames itself to its run's name (what `squeue` shows), from its first task only."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from vilt_lab.training.slurm_job import name_slurm_job


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
