"""`vilt-shards cc12m` on tiny copies of both raw layouts, and the data configs that read it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from helpers.configs import compose_config
from helpers.raw_datasets import (
    BAD_IMAGES,
    manifest,
    read_split,
    run_cli,
    skipped,
    write_cc12m_tsv,
    write_img2dataset,
)
from vilt_lab.data.cli import SOURCES
from vilt_lab.data.sources import runner
from vilt_lab.data.sources.cc12m import MALFORMED_LINE

N_GOOD = 6  # lines 0..5; with bad=True the BAD_IMAGES cases follow, then the bad texts


def _captions(directory: Path) -> dict[str, list[str]]:
    return {item_id: meta["captions"] for item_id, (_, meta) in read_split(directory).items()}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _line(number: int) -> str:
    return f"{number:08d}"


def test_tsv_route_survives_every_bad_input(tmp_path: Path) -> None:
    """Acceptance 2 on the released TSV, through two worker processes."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    expected = write_cc12m_tsv(raw, N_GOOD, bad=True)
    run_cli("cc12m", raw, out, workers=2)
    train = out / "pretrain" / "train"
    assert _captions(train) == expected
    assert sorted(p.name for p in out.iterdir()) == ["pretrain"]
    assert sorted(p.name for p in (out / "pretrain").iterdir()) == ["train"]  # CC12M has no val

    expected_skips = {}
    for number, (_, outcome) in enumerate(BAD_IMAGES.values(), N_GOOD):
        if outcome not in ("kept", "reencoded"):
            expected_skips[_line(number)] = outcome
    after_images = N_GOOD + len(BAD_IMAGES)
    invalid, empty, malformed, crlf = (_line(after_images + i) for i in range(4))
    expected_skips |= {
        f"{invalid}/caption0": "caption not valid UTF-8",
        invalid: "no caption left",
        f"{empty}/caption0": "empty caption",
        empty: "no caption left",
        malformed: MALFORMED_LINE,
    }
    assert skipped(train) == expected_skips
    assert crlf in expected and "\r" not in expected[crlf][0]

    samples = read_split(train)
    assert samples[_line(1)][1]["captions"][0].startswith("<PERSON> looks at")  # kept as released
    png = raw / "images_train" / "0000" / f"{_line(2)}.png"
    assert samples[_line(2)][0] == [png.read_bytes()]  # found under .png, stored byte for byte
    for case in ("cmyk_jpeg", "grey_png", "alpha_png"):
        number = N_GOOD + list(BAD_IMAGES).index(case)
        (data,), _ = samples[_line(number)]
        assert Image.open(io.BytesIO(data)).mode == "RGB", case
    written = manifest(train)
    assert written["layout"] == "tsv" and written["source"] == "cc12m"
    assert written["num_skipped"] == len(expected_skips)


def test_img2dataset_tars_take_precedence_over_the_tsv(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_cc12m_tsv(raw, 2)
    expected = write_img2dataset(raw, 7, bad=True)  # img2dataset writes its tars into ROOT itself
    run_cli("cc12m", raw, out, workers=2, maxcount=2)
    train = out / "pretrain" / "train"
    assert _captions(train) == expected
    assert skipped(train) == {
        "000000000": "no image in the tar",
        "000020006/caption0": "caption not valid UTF-8",
        "000020006": "no caption left",
    }
    assert manifest(train)["layout"] == "img2dataset"


def test_a_missing_tsv_names_itself(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'raw' / 'cc12m.tsv'} is missing"):
        run_cli("cc12m", tmp_path / "raw", tmp_path / "out")


class Killed(Exception):
    """Stands in for the conversion process dying."""


def test_an_interrupted_conversion_resumes_from_complete_shards(tmp_path: Path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    write_cc12m_tsv(raw, 9)  # 3 shards of 3 lines
    reference, out = tmp_path / "reference", tmp_path / "out"
    run_cli("cc12m", raw, reference, maxcount=3)

    real = runner.read_clean_image
    reads: list[str] = []

    def dies_on_the_fifth_image(image, policy):
        reads.append(image.path)
        if len(reads) == 5:
            raise Killed
        return real(image, policy)

    monkeypatch.setattr(runner, "read_clean_image", dies_on_the_fifth_image)
    with pytest.raises(Killed):
        run_cli("cc12m", raw, out, maxcount=3)
    assert not (out / "pretrain" / "train" / "manifest.json").exists()
    reads.clear()
    monkeypatch.setattr(
        runner, "read_clean_image", lambda image, policy: reads.append(image.path) or real(image, policy)
    )
    run_cli("cc12m", raw, out, maxcount=3)
    assert len(reads) == 6  # the first shard was kept, the other two redone
    # Byte-identical to an uninterrupted conversion (manifests differ only in the raw root).
    done, ref = (_files(root / "pretrain" / "train") for root in (out, reference))
    assert done.keys() == ref.keys() and len(done) == 3 + 3
    assert {k: v for k, v in done.items() if k != "manifest.json"} == {
        k: v for k, v in ref.items() if k != "manifest.json"
    }


def test_cc12m_is_a_vilt_shards_source() -> None:
    assert SOURCES["cc12m"] == "vilt_lab.data.sources.cc12m"


def _data(name: str, tmp_path: Path) -> dict:
    cfg = compose_config([f"data={name}", f"paths.runs_dir={tmp_path}", f"paths.data_dir={tmp_path}/data"])
    data = OmegaConf.to_container(cfg.data)
    assert isinstance(data, dict)
    return data


def test_data_cc12m_reads_what_the_converter_writes(tmp_path: Path) -> None:
    data = _data("cc12m", tmp_path)
    assert data["sources"] == {"cc12m": {"urls": f"{tmp_path}/data/cc12m/pretrain/train", "weight": None}}
    assert data["val_urls"] is None and data["resampled"] is False


def test_data_14m_is_the_4m_mix_plus_cc12m(tmp_path: Path) -> None:
    mix_4m, mix_14m = _data("4m", tmp_path), _data("14m", tmp_path)
    cc12m = mix_14m["sources"].pop("cc12m")
    assert cc12m == {"urls": f"{tmp_path}/data/cc12m/pretrain/train", "weight": None}
    assert mix_14m["roots"].pop("cc12m") == f"{tmp_path}/data/cc12m"
    assert list(mix_14m["sources"]) == list(mix_4m["sources"])  # the 4M sources first, in order
    assert (mix_14m.pop("name"), mix_4m.pop("name")) == ("14m", "4m")
    assert mix_14m == mix_4m  # everything else as the 4M mix: weights, held-out splits, transform
