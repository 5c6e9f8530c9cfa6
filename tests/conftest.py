"""Shared fixtures: one tiny shapes world per test session, its tokenizer, and a shard helper."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from train_helpers import compose_config
from vilt_lab.data.sources.shapes import write_shapes_world
from vilt_lab.data.tokenizer import load_tokenizer
from vilt_lab.train import run

SHAPES_TRAIN = 100
SHAPES_VAL = 30
SHAPES_MAXCOUNT = 20  # so train has 5 shards and val 2: enough to split over 2 workers


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


def encode_image(
    size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG"
) -> bytes:
    """A solid ``size`` (width, height) image encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


RawSamples = list[dict[str, bytes | str]]


def _num_captions(sample: dict) -> int:
    try:
        return len(json.loads(sample["json"]).get("captions", ()))
    except (KeyError, ValueError, AttributeError):
        return 0


@pytest.fixture
def write_raw_shard(tmp_path: Path) -> Callable[[str, RawSamples], Path]:
    """Write raw WebDataset samples (no validation, so corrupt ones too) as one shard, with the
    ``sizes.json`` and ``texts.json`` (captions counted where the json member parses) beside it.

    Call with a directory name and samples like ``{"__key__": "k", "jpg": b"...", "json": b"..."}``;
    returns the directory.
    """

    def write(name: str, samples: RawSamples) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        with wds.TarWriter(str(directory / "shard-000000.tar"), encoder=False) as tar:
            for sample in samples:
                tar.write(
                    {k: v.encode() if isinstance(v, str) and k != "__key__" else v for k, v in sample.items()}
                )
        (directory / "sizes.json").write_text(json.dumps({"shard-000000.tar": len(samples)}))
        (directory / "texts.json").write_text(
            json.dumps({"shard-000000.tar": sum(map(_num_captions, samples))})
        )
        return directory

    return write


# The demo recipe's short pre-training run (test_learning, test_predict).
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
