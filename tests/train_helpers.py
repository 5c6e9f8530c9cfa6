"""Helpers for the trainer tests: compose configs as the entry point does, run them in-process."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

import vilt_lab.train as train_module
from vilt_lab.config.paths import CONF_DIR

# A few-steps run on a given shapes world, data read in the main process, no W&B.
FAST = [
    "experiment=demo",
    "debug=fast",
    "data.generate_n=0",
    "resume=null",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """The config `python -m vilt_lab.train <overrides>` would run with, resolved."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def fast_config(world: Path, runs: Path, *extra: str) -> DictConfig:
    return compose_config([*FAST, f"data.root={world}", f"paths.runs_dir={runs}", *extra])


def compose_eval_config(overrides: list[str]) -> DictConfig:
    """The config `vilt-eval <overrides>` would run with, resolved."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


# Each task on its shapes-world split (with FAST: a few steps, the tiny demo model). Retrieval
# evaluates its 30-image val split here: the 100-image test split is the demo's.
TASK_OVERRIDES = {
    "pretrain": [],
    "vqa": ["task=vqa", "data=shapes_vqa"],
    "nlvr2": ["task=nlvr2", "data=shapes_nlvr2", "+model.num_modality_types=3"],
    # One image negative: the image side runs too (micro batches of 2 in some tests).
    "irtr": [
        "task=irtr",
        "data=shapes_retrieval",
        "data.val_urls=${data.root}/retrieval/val",
        "task.image_negatives=1",
    ],
}


class Killed(Exception):
    """Stands for the job being killed."""


def kill_after(monkeypatch, batches: int) -> None:
    """Make the run's train stream die after `batches` micro-batches in total."""
    real = train_module.build_streams
    seen = [0]

    def build_streams_then_die(*args, **kwargs):
        train_stream, evaluators = real(*args, **kwargs)

        def dying(start_step):
            for batch in train_stream(start_step):
                if seen[0] == batches:
                    raise Killed
                seen[0] += 1
                yield batch

        return dying, evaluators

    monkeypatch.setattr(train_module, "build_streams", build_streams_then_die)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return load_file(last / "model.safetensors")
