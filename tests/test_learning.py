"""Acceptance 6 of the trainer issue: a short run on the shapes world visibly learns.

ITM and WPA (the demo's alignment objectives, without MLM's second pass) train the demo's tiny
model for a fixed number of steps sized to take well under 90 s on two CPU cores (about 40 s
measured, see the closing assertion's message); held-out ITM accuracy must reach 0.75, half-way
from chance (0.5) to the captions' ceiling (about 0.97). Nothing here asserts a time: the step
count is the budget, and the printed train time is what the 90 s refers to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from train_helpers import compose_config
from vilt_lab.data.sources.shapes import write_shapes_world
from vilt_lab.train import run

SHORT_RUN = [
    "experiment=demo",
    "objective=[itm,wpa]",
    "resume=null",
    "data.generate_n=0",
    "logger.mode=disabled",
    "trainer.progress=false",
    "schedule.max_steps=400",
]


@pytest.fixture(scope="module")
def learning_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shapes world large enough that held-out accuracy means generalisation (the demo's size)."""
    out = tmp_path_factory.mktemp("learning_world")
    write_shapes_world(out, 2000, 200, seed=1, maxcount=250)
    return out


def test_short_run_reaches_held_out_itm_accuracy(learning_world: Path, tmp_path: Path) -> None:
    cfg = compose_config([*SHORT_RUN, f"data.root={learning_world}", f"paths.runs_dir={tmp_path}"])
    summary = run(cfg, overrides=SHORT_RUN)
    accuracy = summary["eval"]["eval/itm/accuracy"]
    print(
        f"short run: {summary['steps']} steps in {summary['train_seconds']:.0f} s, held-out ITM {accuracy:.3f}"
    )
    assert accuracy >= 0.75, f"held-out ITM accuracy {accuracy:.3f} after {summary['steps']} steps"
