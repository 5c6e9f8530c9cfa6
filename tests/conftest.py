"""Shared fixtures: one tiny shapes world per test session, its tokenizer, and a shard helper."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from vilt_lab.data.sources.shapes import write_shapes_world
from vilt_lab.data.tokenizer import load_tokenizer

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
