"""Configs composed as the entry points compose them, and the override sets the tests run with."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.schema import EvalSchema, TrainSchema
from vilt_lab.config.typed import typed

# A few-steps run on a given shapes world, data read in the main process, no W&B.
FAST = [
    "experiment=demo",
    "debug=fast",
    "data.generate_n=0",
    "resume=null",
]

# The demo recipe's short pre-training run (the `pretrained` fixture of test_learning and
# test_predict).
SHORT_RUN = [
    "experiment=demo",
    "resume=null",
    "data.generate_n=0",
    "logger.mode=disabled",
    "trainer.progress=false",
    "schedule.max_steps=450",
    # One process here (the demo runs two of 32): the same 64 a step without accumulating.
    "trainer.micro_batch_size=64",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """The config `python -m vilt_lab.train <overrides>` would run with, resolved."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def fast_config(world: Path, runs: Path, *extra: str) -> DictConfig:
    """A FAST run on the shapes world at `world`, its run directory under `runs`."""
    return compose_config([*FAST, f"data.root={world}", f"paths.runs_dir={runs}", *extra])


def train_settings(cfg: DictConfig) -> TrainSchema:
    """A composed training config as the typed objects the builders take (as validation returns
    them, without its checks of the data on disk)."""
    return typed(cfg, TrainSchema)


def eval_settings(cfg: DictConfig) -> EvalSchema:
    """A composed vilt-eval config as typed objects."""
    return typed(cfg, EvalSchema)


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
