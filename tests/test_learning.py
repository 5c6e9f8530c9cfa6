"""Acceptance 6 of the trainer issue and 8 of the fine-tuning issue: short runs on the shapes
world visibly learn, pre-training and then VQA fine-tuning from its weights.

The demo's recipe (ITM + whole-word MLM + WPA, tiny model with 3 layers, batch 64), cut to 450
steps in one process (conftest's session fixtures `learning_world` and `pretrained`, which
test_predict reads too): 79 s of training on two CPU cores. Held-out ITM accuracy must reach 0.75,
half way from chance (0.5) to the captions' ceiling (about 0.97); measured 0.82, 0.79 and 0.83
for seeds 0, 1 and 2. MLM stays in on purpose: without it ITM + WPA sat near 0.6 on two of three
seeds at 550 steps. No time is asserted (the house rule against timed unit tests): the step
count is the budget, and the printed train time is what the 90 s refers to.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from helpers.configs import compose_config
from vilt_lab.data.shards import iter_samples
from vilt_lab.train import run

# Minutes of training: `make test` runs them, `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def test_short_run_reaches_held_out_itm_accuracy(pretrained: dict) -> None:
    summary = pretrained
    accuracy = summary["eval"]["eval/itm/accuracy"]
    print(
        f"short run: {summary['steps']} steps in {summary['train_seconds']:.0f} s, held-out ITM {accuracy:.3f}"
    )
    assert accuracy >= 0.75, f"held-out ITM accuracy {accuracy:.3f} after {summary['steps']} steps"


def majority_score(world: Path) -> float:
    """The held-out VQA score of always giving the most common answer."""
    answers = Counter(
        q["answers"][0] for _, _, meta in iter_samples(world / "vqa" / "val") for q in meta["questions"]
    )
    return answers.most_common(1)[0][1] / sum(answers.values())


def test_vqa_fine_tuning_from_the_pre_trained_weights(
    pretrained: dict, learning_world: Path, tmp_path: Path
) -> None:
    """Acceptance 8: 250 steps of 64 questions (2 epochs of the 2000-scene world's 8000) from the
    short pre-training's last checkpoint; measured held-out score 0.46 (seed 0) against 0.17 for
    the majority answer. Asserted: 0.35, more than twice the majority answer."""
    checkpoint = sorted((Path(pretrained["run_dir"]) / "checkpoints").glob("step_*"))[-1]
    overrides = [
        "experiment=finetune_demo_vqa",
        f"model.init_from={checkpoint}",
        f"data.root={learning_world}",
        f"paths.runs_dir={tmp_path}",
        "logger.mode=disabled",
        "trainer.progress=false",
        "trainer.micro_batch_size=64",  # one process: the demo's 64 a step without accumulating
        "schedule.max_epochs=2",
        "resume=null",
    ]
    summary = run(compose_config(overrides), overrides=overrides)
    score, majority = summary["eval"]["eval/vqa/score"], majority_score(learning_world)
    print(f"VQA fine-tuning: {summary['steps']} steps, held-out score {score:.3f}, majority {majority:.3f}")
    assert score >= max(0.35, 2 * majority), (
        f"held-out VQA score {score:.3f} (majority answer {majority:.3f})"
    )
