"""The run's banner says what is about to run."""

from __future__ import annotations

from torch import nn

from helpers.configs import compose_config, train_settings
from vilt_lab.training.banner import run_banner


def test_the_banner_names_the_run_dir_model_steps_batch_precision_and_logger(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    settings = train_settings(compose_config([]))  # a bare vilt-train: the paper's recipe
    text = run_banner(
        settings,
        "runs/train-1234abcd",
        nn.Linear(1000, 1000),
        ["itm", "mlm", "wpa"],
        100000,
        64,
        1,
        "bf16",
        0,
    )
    lines = dict(line.split("   ", 1) for line in text.splitlines())
    assert lines["run dir"].strip() == "runs/train-1234abcd"
    assert lines["task"].strip() == "pretrain (itm, mlm, wpa)"
    assert lines["model"].strip() == "base32, 1.0M parameters"
    assert lines["steps"].strip() == "100000"
    assert lines["batch"].strip() == "4096 = micro 64 x 1 accumulated x 64 processes"
    assert lines["logger"].strip() == "W&B online, project vilt_lab"
