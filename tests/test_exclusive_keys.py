"""The command line's choice of one of two exclusive keys clears the other an experiment set."""

from __future__ import annotations

import pytest

from helpers.configs import compose_config
from vilt_lab.config.exclusive import let_the_command_line_choose

# finetune_demo_vqa trains for epochs (schedule=epochs10) and evaluates per epoch.
EXPERIMENT = ["experiment=finetune_demo_vqa", "model.init_from=x"]


def choose(*overrides: str):
    cfg = compose_config([*EXPERIMENT, *overrides])
    return cfg, let_the_command_line_choose(cfg, overrides)


def test_max_steps_on_the_command_line_replaces_the_experiments_epochs() -> None:
    assert compose_config(EXPERIMENT).schedule.max_epochs is not None
    cfg, cleared = choose("schedule.max_steps=20")
    assert (cfg.schedule.max_steps, cfg.schedule.max_epochs) == (20, None)
    assert cleared == ["schedule.max_epochs"]


def test_eval_every_on_the_command_line_replaces_evaluations_per_epoch() -> None:
    overrides = ("trainer.eval_every=5",)
    cfg = compose_config(["experiment=finetune_demo_nlvr2", "model.init_from=x", *overrides])
    assert compose_config(["experiment=finetune_demo_nlvr2", "model.init_from=x"]).trainer.evals_per_epoch
    cleared = let_the_command_line_choose(cfg, overrides)
    assert (cfg.trainer.eval_every, cfg.trainer.evals_per_epoch, cleared) == (
        5,
        None,
        ["trainer.evals_per_epoch"],
    )


@pytest.mark.parametrize(
    "overrides",
    [
        (),  # nothing chosen: the experiment's settings stand
        ("schedule.max_steps=null",),  # clearing a key chooses nothing
        ("schedule.max_steps=20", "schedule.max_epochs=2"),  # both typed: validation names the clash
        ("schedule.max_epochs=3",),  # the partner is already null: nothing to clear
    ],
)
def test_nothing_else_is_cleared(overrides) -> None:
    cfg, cleared = choose(*overrides)
    assert cleared == []
    assert cfg.schedule.max_epochs == compose_config([*EXPERIMENT, *overrides]).schedule.max_epochs
