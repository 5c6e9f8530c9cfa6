"""NLVR2 converter on a tiny real-format copy: pairs grouped by identifier, both images, labels."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from helpers.raw_datasets import read_split, run_cli, skipped, write_nlvr2
from vilt_lab.data.shards import expand_shards


def test_pairs_statements_and_images(tmp_path: Path) -> None:
    expected = write_nlvr2(tmp_path / "raw", {"train": 5, "dev": 3, "test1": 2})
    missing = tmp_path / "raw" / "dev" / "dev-13-1-img1.png"
    missing.unlink()
    broken = [
        {"identifier": "dev-3-0-7", "sentence": "", "label": "True"},  # joins an existing pair
        {"identifier": "dev-33-1-0", "sentence": "two images", "label": "maybe"},  # its pair's only one
    ]
    with (tmp_path / "raw" / "nlvr2" / "data" / "dev.json").open("a") as f:
        f.writelines(json.dumps(line) + "\n" for line in broken)
    out = tmp_path / "out" / "nlvr2"
    run_cli("nlvr2", tmp_path / "raw", tmp_path / "out", maxcount=2)

    for split, pairs in expected.items():
        samples = read_split(out / split)
        if split == "dev":
            assert skipped(out / split) == {
                "dev-3-0-7": "empty statement",
                "dev-33-1-0": "label not True/False",
                "dev-33-1": "no statement left",
                "dev-13-1": "image file missing",
            }
            pairs = {k: v for k, v in pairs.items() if k != "dev-13-1"}
        assert {pair: meta["statements"] for pair, (_, meta) in samples.items()} == pairs
        for pair, (images, _) in samples.items():
            folder = (
                tmp_path
                / "raw"
                / ("images/train/" + str(int(pair.split("-")[1]) // 10 % 3) if split == "train" else split)
            )
            assert images == [(folder / f"{pair}-img{side}.png").read_bytes() for side in (0, 1)]

    # The first train pair's left image is a JPEG named .png: stored under its real format.
    with tarfile.open(expand_shards(out / "train")[0]) as tar:
        names = tar.getnames()
    assert {"train-3-0.0.jpg", "train-3-0.1.png", "train-3-0.json"} <= set(names)
