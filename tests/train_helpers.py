"""Helpers for the trainer tests: compose configs as the entry point does, run them in-process."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from vilt_lab.train import CONF_DIR

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
    "irtr": ["task=irtr", "data=shapes_retrieval", "data.val_urls=${data.root}/retrieval/val"],
}
