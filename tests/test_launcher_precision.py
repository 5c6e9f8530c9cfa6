"""trainer.precision=null takes the launcher's mixed precision; an explicit value wins over it."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.configs import fast_config
from vilt_lab.train import run
from vilt_lab.training.checkpoint import TRAINER_STATE
from vilt_lab.training.run_dir import ResumeRefused
from vilt_lab.training.state_io import read_json

# What `accelerate launch --mixed_precision X` (or its config file) hands each process.
LAUNCH_ENV = "ACCELERATE_MIXED_PRECISION"


def trained_precision(run_dir) -> tuple[str, str]:
    """(summary.json's precision, the last checkpoint's)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return summary["precision"], read_json(last / TRAINER_STATE)["precision"]


@pytest.mark.parametrize(
    ("launcher", "configured", "expected"),
    [
        ("bf16", "null", "bf16"),  # null: the launcher's setting
        (None, "null", "no"),  # python -m without a launcher: fp32
        ("bf16", "no", "no"),  # explicit wins over the launcher
    ],
)
def test_precision_null_takes_the_launchers(
    launcher, configured, expected, shapes_world, tmp_path, monkeypatch
):
    if launcher is None:
        monkeypatch.delenv(LAUNCH_ENV, raising=False)
    else:
        monkeypatch.setenv(LAUNCH_ENV, launcher)
    run(fast_config(shapes_world, tmp_path, f"trainer.precision={configured}", "evaluate=false"))
    assert trained_precision(tmp_path / "demo") == (expected, expected)


def test_resume_in_another_launch_precision_is_refused(shapes_world, tmp_path, monkeypatch):
    overrides = ("trainer.precision=null", "evaluate=false", "schedule.max_steps=2")
    monkeypatch.setenv(LAUNCH_ENV, "bf16")
    run(fast_config(shapes_world, tmp_path, *overrides))
    monkeypatch.setenv(LAUNCH_ENV, "no")
    with pytest.raises(ResumeRefused, match="trained in precision 'bf16'"):
        # The finished run's last checkpoint, launched again without bf16.
        run(fast_config(shapes_world, tmp_path, *overrides, "resume=latest"))


def test_float32_matmul_precision_holds_for_the_run_only(shapes_world, tmp_path, monkeypatch):
    """trainer.float32_matmul_precision is in force while the run trains, and put back after."""
    import vilt_lab.train as train_module

    seen = []
    real_run = train_module._run

    def recording_run(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return real_run(*args, **kwargs)

    monkeypatch.setattr(train_module, "_run", recording_run)
    before = torch.get_float32_matmul_precision()
    run(
        fast_config(
            shapes_world,
            tmp_path,
            "trainer.float32_matmul_precision=high",
            "schedule.max_steps=1",
            "evaluate=false",
        )
    )
    assert seen == ["high"] and before == "highest"
    assert torch.get_float32_matmul_precision() == before
