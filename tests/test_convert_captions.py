"""Caption converters on tiny real-format copies: COCO and Flickr30K (Karpathy), VG, GCC, SBU."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from helpers.raw_datasets import (
    BAD_IMAGES,
    manifest,
    read_split,
    run_cli,
    skipped,
    write_annotation_list,
    write_img2dataset,
    write_karpathy,
    write_vg,
)
from vilt_lab.data.pipeline import LoaderConfig, build_eval_loader
from vilt_lab.data.shards import read_sizes

COCO_COUNTS = {"train": 5, "restval": 2, "val": 3, "test": 3}


def _captions(directory: Path) -> dict[str, list[str]]:
    return {item_id: meta["captions"] for item_id, (_, meta) in read_split(directory).items()}


def test_coco_karpathy_splits(tmp_path: Path) -> None:
    expected = write_karpathy(tmp_path / "raw", "coco", COCO_COUNTS)
    out = tmp_path / "out"
    run_cli("coco", tmp_path / "raw", out)
    train = expected["train"] | expected["restval"]
    assert _captions(out / "pretrain" / "train") == train
    assert _captions(out / "retrieval" / "train") == train
    assert _captions(out / "retrieval" / "val") == expected["val"]
    assert _captions(out / "retrieval" / "test") == expected["test"]
    # 7 items at 4 per shard; the retrieval copy shares the pre-training files.
    assert read_sizes(out / "pretrain" / "train") == {"shard-000000.tar": 4, "shard-000001.tar": 3}
    first = "shard-000000.tar"
    assert os.path.samefile(out / "pretrain" / "train" / first, out / "retrieval" / "train" / first)
    copied = manifest(out / "retrieval" / "train")
    assert copied["copy_of"] == "pretrain/train" and copied["split"] == "retrieval/train"
    test = manifest(out / "retrieval" / "test")
    assert test["num_texts"] == sum(map(len, expected["test"].values())) and test["num_skipped"] == 0
    assert test["karpathy_splits"] == ["test"]
    images, _ = read_split(out / "retrieval" / "test")["COCO_train2014_000000000110.jpg"]
    raw = tmp_path / "raw" / "train2014" / "COCO_train2014_000000000110.jpg"
    assert images == [raw.read_bytes()]  # clean RGB JPEGs are stored byte for byte


def test_f30k_train_holds_karpathy_train_and_val(tmp_path: Path) -> None:
    expected = write_karpathy(tmp_path / "raw", "flickr30k", {"train": 3, "val": 2, "test": 2})
    out = tmp_path / "out"
    run_cli("f30k", tmp_path / "raw", out, "--split", "retrieval/train")
    assert _captions(out / "retrieval" / "train") == expected["train"] | expected["val"]
    assert not (out / "retrieval" / "test").exists()  # --split converts that split only


def test_vg_phrases_deduplicated_per_image(tmp_path: Path) -> None:
    expected = write_vg(tmp_path / "raw", 5)
    out = tmp_path / "out"
    run_cli("vg", tmp_path / "raw", out)
    assert _captions(out / "pretrain" / "train") == expected
    assert manifest(out / "pretrain" / "train")["duplicate_captions_dropped"] == 2 * 5


def test_gcc_survives_every_bad_input(tmp_path: Path) -> None:
    """Acceptance 2, through a whole conversion in two worker processes."""
    raw = tmp_path / "raw"
    train = write_annotation_list(raw, "train", "train_annot.json", 6, bad=True)
    val = write_annotation_list(raw, "val", "val_annot.json", 2)
    out = tmp_path / "out"
    run_cli("gcc", raw, out, workers=2)
    assert _captions(out / "pretrain" / "train") == train
    assert _captions(out / "pretrain" / "val") == val

    reasons = skipped(out / "pretrain" / "train")
    for case, (_, outcome) in BAD_IMAGES.items():
        if outcome not in ("kept", "reencoded"):
            assert reasons.pop(f"{case}.img") == outcome, case
    assert reasons == {
        "bad_utf8.jpg/caption0": "caption not valid UTF-8",
        "bad_utf8.jpg": "no caption left",
        "empty_caption.jpg/caption0": "empty caption",
        "empty_caption.jpg": "no caption left",
        "one_good_caption.jpg/caption0": "empty caption",
        "one_good_caption.jpg/caption2": "caption not valid UTF-8",
    }
    samples = read_split(out / "pretrain" / "train")
    for case in ("cmyk_jpeg", "grey_png", "alpha_png"):
        (data,), _ = samples[f"{case}.img"]
        assert Image.open(io.BytesIO(data)).mode == "RGB", case
    assert manifest(out / "pretrain" / "train")["images"] == {"kept": 6 + 2, "reencoded": 3}


def test_sbu_from_img2dataset_tars(tmp_path: Path) -> None:
    expected = write_img2dataset(tmp_path / "raw" / "train", 7, bad=True)
    out = tmp_path / "out"
    run_cli("sbu", tmp_path / "raw", out, workers=2, maxcount=2)
    assert _captions(out / "pretrain" / "train") == expected
    assert skipped(out / "pretrain" / "train") == {
        "000000000": "no image in the tar",
        "000020006/caption0": "caption not valid UTF-8",
        "000020006": "no caption left",
    }


def test_converted_bad_inputs_stream_cleanly_through_the_loader(tmp_path: Path, shapes_tokenizer) -> None:
    """What the converter keeps of bad raw data decodes in the training pipeline without a skip."""
    raw = tmp_path / "raw"
    write_annotation_list(raw, "train", "train_annot.json", 3, bad=True)
    out = tmp_path / "out"
    run_cli("gcc", raw, out, "--split", "pretrain/train")
    config = LoaderConfig(batch_size=4, image_shorter=96, image_longer=160, patch_size=16)
    batches = list(build_eval_loader(out / "pretrain" / "train", shapes_tokenizer, config))
    assert sum(len(b["input_ids"]) for b in batches) == manifest(out / "pretrain" / "train")["num_samples"]
    assert sum(b["skipped"] for b in batches) == 0
