"""Raw WebDataset shards written without validation, so that corrupt samples can be written too."""

from __future__ import annotations

import json
from pathlib import Path

import webdataset as wds

RawSamples = list[dict[str, bytes | str]]


def _num_captions(sample: dict) -> int:
    try:
        return len(json.loads(sample["json"]).get("captions", ()))
    except (KeyError, ValueError, AttributeError):
        return 0


def write_raw_shard(directory: Path, samples: RawSamples) -> Path:
    """Write `samples` (like ``{"__key__": "k", "jpg": b"...", "json": b"..."}``) as the one shard
    of a new `directory`, with the ``sizes.json`` and ``texts.json`` (captions counted where the
    json member parses) beside it; returns the directory."""
    directory.mkdir()
    with wds.TarWriter(str(directory / "shard-000000.tar"), encoder=False) as tar:
        for sample in samples:
            tar.write(
                {k: v.encode() if isinstance(v, str) and k != "__key__" else v for k, v in sample.items()}
            )
    (directory / "sizes.json").write_text(json.dumps({"shard-000000.tar": len(samples)}))
    (directory / "texts.json").write_text(json.dumps({"shard-000000.tar": sum(map(_num_captions, samples))}))
    return directory
