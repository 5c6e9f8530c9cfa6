"""The shard writer: round trip, caps, sizes.json and manifest, atomicity, input checks."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from helpers.images import encode_image
from vilt_lab.data.shards import (
    ShardWriter,
    count_samples,
    count_texts,
    expand_shards,
    image_extension,
    iter_samples,
    read_sizes,
)

JPEG = encode_image((40, 30))
PNG = encode_image((30, 40), fmt="PNG")


def _write(out: Path, n: int, **kw) -> None:
    with ShardWriter(out, source="unit", split="train", **kw) as writer:
        for i in range(n):
            images = [JPEG] if i % 3 else [PNG, JPEG]  # every third sample is an NLVR2-style pair
            captions = [f"caption {i}"] * (1 + i % 2)  # 1 or 2 captions: texts.json counts them
            writer.write(f"item{i:03d}", images, {"id": str(i), "captions": captions})
        writer.skip("broken-1", "image is truncated")
        writer.skip("broken-2", "image is truncated")
        writer.skip("gone", "file missing")


def test_round_trip_counts_sizes_and_manifest(tmp_path: Path) -> None:
    _write(tmp_path, 25, maxcount=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
        "sizes.json",
        "texts.json",
    ]
    assert read_sizes(tmp_path) == {"shard-000000.tar": 10, "shard-000001.tar": 10, "shard-000002.tar": 5}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["source"] == "unit" and manifest["split"] == "train"
    assert manifest["num_samples"] == 25 and manifest["num_shards"] == 3
    assert manifest["num_skipped"] == 3
    assert manifest["skipped_by_reason"] == {"image is truncated": 2, "file missing": 1}
    assert {"id": "gone", "reason": "file missing"} in manifest["skipped"]

    shards = expand_shards(tmp_path)
    assert count_samples(shards) == 25
    assert count_texts(shards) == 25 + 12 == manifest["num_texts"]
    assert count_texts(shards[1:2]) == 15
    samples = list(iter_samples(tmp_path))
    assert [key for key, _, _ in samples] == [f"item{i:03d}" for i in range(25)]
    for i, (_, images, meta) in enumerate(samples):
        assert images == ([JPEG] if i % 3 else [PNG, JPEG])
        assert meta == {"id": str(i), "captions": [f"caption {i}"] * (1 + i % 2)}


def test_members_are_plain_ustar_with_fixed_metadata(tmp_path: Path) -> None:
    # No pax header per member (a float mtime would add one), so readers parse one header per file.
    _write(tmp_path, 5, maxcount=10)
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        members = tar.getmembers()
    assert members and all(m.pax_headers == {} for m in members)
    assert {(m.mtime, m.uname, m.gname) for m in members} == {(0, "vilt", "vilt")}


def test_images_are_named_by_their_actual_format(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, source="unit", split="x") as writer:
        writer.write("single", [PNG], {"id": "s"})
        writer.write("pair", [JPEG, PNG], {"id": "p"})
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        names = sorted(tar.getnames())
    assert names == ["pair.0.jpg", "pair.1.png", "pair.json", "single.json", "single.png"]


def test_caps_by_bytes(tmp_path: Path) -> None:
    # The cap is checked before each write (a shard may pass it by one sample), so a cap just
    # above one pair of images holds two single-image samples but closes after a pair.
    _write(tmp_path, 7, maxsize=len(PNG) + len(JPEG) + 1)
    assert list(read_sizes(tmp_path).values()) == [1, 2, 1, 2, 1]


def test_open_shard_is_partial_until_closed(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, source="unit", split="train", maxcount=2) as writer:
        for i in range(3):
            writer.write(f"k{i}", [JPEG], {"id": str(i)})
        # The first shard is complete and renamed; the open one is only a .partial file.
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["shard-000000.tar", "shard-000001.tar.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-000000.tar",
        "shard-000001.tar",
        "sizes.json",
        "texts.json",
    ]


def test_killed_conversion_leaves_no_complete_looking_output(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="conversion died"):
        with ShardWriter(tmp_path, source="unit", split="train", maxcount=2) as writer:
            for i in range(3):
                writer.write(f"k{i}", [JPEG], {"id": str(i)})
            raise RuntimeError("conversion died")
    # No partial shard, no sizes.json (so readers find nothing), no manifest.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]
    with pytest.raises(FileNotFoundError):
        expand_shards(tmp_path)


def test_refuses_to_mix_with_an_earlier_conversion(tmp_path: Path) -> None:
    _write(tmp_path, 3)
    with pytest.raises(FileExistsError):
        ShardWriter(tmp_path, source="unit", split="train")
    _write(tmp_path, 2, overwrite=True)
    assert count_samples(expand_shards(tmp_path)) == 2


@pytest.mark.parametrize(
    ("key", "images", "meta", "message"),
    [
        ("a.b", [JPEG], {}, "without '.'"),
        ("a/b", [JPEG], {}, "without '.'"),
        ("k", [], {}, "no image"),
        ("k", [b"<html>not found</html>"], {}, "not a JPEG"),
        ("k", [JPEG], ["not", "a", "dict"], "meta must be a dict"),
    ],
)
def test_rejects_bad_samples(tmp_path: Path, key: str, images: list[bytes], meta, message: str) -> None:
    with ShardWriter(tmp_path, source="unit", split="train") as writer:
        with pytest.raises(ValueError, match=message):
            writer.write(key, images, meta)


def test_rejects_duplicate_keys(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, source="unit", split="train") as writer:
        writer.write("k", [JPEG], {})
        with pytest.raises(ValueError, match="duplicate"):
            writer.write("k", [JPEG], {})


def test_image_extension_sniffs_magic_bytes() -> None:
    assert image_extension(JPEG) == "jpg"
    assert image_extension(PNG) == "png"
    assert image_extension(encode_image((8, 8), fmt="WEBP")) == "webp"
    with pytest.raises(ValueError):
        image_extension(b"GIF89a...")


def test_expand_shards_patterns_and_lists(tmp_path: Path) -> None:
    _write(tmp_path, 25, maxcount=10)
    pattern = str(tmp_path / "shard-{000000..000002}.tar")
    assert expand_shards(pattern) == expand_shards(tmp_path)
    assert expand_shards([str(tmp_path / "shard-000000.tar"), pattern]) == expand_shards(tmp_path)[
        :1
    ] + expand_shards(tmp_path)
    assert count_samples(expand_shards(pattern)[1:]) == 15
