"""The converter runner: resuming an interrupted split, skipping finished ones, pre-resize."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from helpers.raw_datasets import manifest, read_split, run_cli, write_annotation_list, write_karpathy
from vilt_lab.data.shards import PROGRESS_DIR, expand_shards
from vilt_lab.data.sources import runner

N_IMAGES = 9  # 3 shards of 3 items


class Killed(Exception):
    """Stands in for the conversion process dying."""


def _write_raw(root: Path) -> None:
    write_annotation_list(root, "train", "annot.json", N_IMAGES)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_interrupted_split_resumes_from_complete_shards(tmp_path: Path, monkeypatch) -> None:
    _write_raw(tmp_path / "raw")
    reference = tmp_path / "reference"
    run_cli("sbu", tmp_path / "raw", reference, maxcount=3)

    real = runner.read_clean_image
    reads: list[str] = []

    def dies_on_the_eighth_image(raw, policy):
        reads.append(raw.path)
        if len(reads) == 8:
            raise Killed
        return real(raw, policy)

    monkeypatch.setattr(runner, "read_clean_image", dies_on_the_eighth_image)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        run_cli("sbu", tmp_path / "raw", out, maxcount=3)
    split = out / "pretrain" / "train"
    names = sorted(p.name for p in split.iterdir())
    # Two shards are complete (with their records); the third left no partial file, no manifest.
    assert names == [PROGRESS_DIR, "shard-000000.tar", "shard-000001.tar"]

    reads.clear()
    monkeypatch.setattr(
        runner, "read_clean_image", lambda raw, policy: reads.append(raw.path) or real(raw, policy)
    )
    run_cli("sbu", tmp_path / "raw", out, maxcount=3)
    assert len(reads) == 3  # only the third shard was redone
    # Byte-identical to an uninterrupted conversion (manifests differ only in the raw root).
    done, ref = _files(split), _files(reference / "pretrain" / "train")
    assert {k: v for k, v in done.items() if k != "manifest.json"} == {
        k: v for k, v in ref.items() if k != "manifest.json"
    }
    assert not (split / PROGRESS_DIR).exists()

    reads.clear()
    run_cli("sbu", tmp_path / "raw", out, maxcount=3)  # finished: nothing is redone
    assert reads == [] and _files(split) == done


def test_resume_refuses_other_settings_unless_overwritten(tmp_path: Path, monkeypatch) -> None:
    _write_raw(tmp_path / "raw")
    monkeypatch.setattr(runner, "read_clean_image", lambda raw, policy: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        run_cli("sbu", tmp_path / "raw", tmp_path / "out", maxcount=3)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--overwrite"):
        run_cli("sbu", tmp_path / "raw", tmp_path / "out", maxcount=4)
    run_cli("sbu", tmp_path / "raw", tmp_path / "out", "--overwrite", maxcount=4)
    assert manifest(tmp_path / "out" / "pretrain" / "train")["num_samples"] == N_IMAGES
    assert len(expand_shards(tmp_path / "out" / "pretrain" / "train")) == 3


def test_pre_resize_shrinks_only_larger_images(tmp_path: Path) -> None:
    write_karpathy(tmp_path / "raw", "coco", {"test": 6})
    run_cli("coco", tmp_path / "raw", tmp_path / "out", "--split", "retrieval/test", "--resize-shorter", "80")
    split = tmp_path / "out" / "retrieval" / "test"
    sizes = [Image.open(io.BytesIO(images[0])).size for images, _ in read_split(split).values()]
    raw_sizes = [Image.open(p).size for p in sorted((tmp_path / "raw").glob("*2014/*.jpg"))]
    assert sorted(min(s) for s in sizes) == sorted(min(min(s), 80) for s in raw_sizes)
    resized = sum(min(s) > 80 for s in raw_sizes)
    assert 0 < resized < 6  # the tiny copy has images on both sides of the limit
    assert manifest(split)["images"] == {"kept": 6 - resized, "resized": resized}
