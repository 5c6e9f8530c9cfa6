"""Session fixtures: one tiny shapes world and its tokenizer, a raw-shard writer, and the short
pre-training run on a larger world."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.configs import SHORT_RUN, compose_config
from helpers.raw_shards import RawSamples, write_raw_shard
from helpers.worlds import SHAPES_MAXCOUNT, SHAPES_TRAIN, SHAPES_VAL
from vilt_lab.data.sources.shapes import write_shapes_world
from vilt_lab.data.tokenizer import load_tokenizer
from vilt_lab.train import run


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes world (all tasks, both splits, tokenizer), written once per session."""
    out = tmp_path_factory.mktemp("shapes")
    write_shapes_world(out, SHAPES_TRAIN, SHAPES_VAL, seed=0, maxcount=SHAPES_MAXCOUNT)
    return out


@pytest.fixture(scope="session")
def shapes_tokenizer(shapes_world: Path):
    """The shapes world's WordPiece tokenizer."""
    return load_tokenizer(shapes_world / "tokenizer")


@pytest.fixture(name="write_raw_shard")
def raw_shard_writer(tmp_path: Path) -> Callable[[str, RawSamples], Path]:
    """Write raw samples as one shard in a new directory `name` under the test's tmp_path
    (`helpers.raw_shards.write_raw_shard`); call with a directory name and the samples, returns
    the directory."""
    return lambda name, samples: write_raw_shard(tmp_path / name, samples)


@pytest.fixture(scope="session")
def learning_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2000 scenes (half the demo's world): enough that held-out accuracy means generalisation."""
    out = tmp_path_factory.mktemp("learning_world")
    write_shapes_world(out, 2000, 200, seed=0, maxcount=250)
    return out


@pytest.fixture(scope="session")
def pretrained(learning_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The summary of the short pre-training run (its checkpoints under summary["run_dir"]); trained
    once per session, on first use, for test_learning and test_predict."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = compose_config([*SHORT_RUN, f"data.root={learning_world}", f"paths.runs_dir={runs}"])
    return run(cfg, overrides=SHORT_RUN)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `gpu` is skipped without a CUDA device: the mark alone says both what it
    needs and that bench/gpu_check.sh runs it (`pytest -m gpu`)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
