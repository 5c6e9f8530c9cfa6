"""`vilt-convert fetch`: download a released checkpoint, check its SHA-256, convert it; offline, from
a file:// mirror holding random-weight files in the official layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers.official import VQA_ANSWERS, random_official_state, write_lightning_ckpt
from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.weights.checkpoint_io import load_checkpoint
from vilt_lab.weights.download import DownloadError, download
from vilt_lab.weights.fetch import SOURCE_RECORD
from vilt_lab.weights.released import RELEASED


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like the release: the pre-trained and the VQA checkpoints, vqa_dict.json."""
    root = tmp_path_factory.mktemp("mirror")
    write_lightning_ckpt(root / RELEASED["vilt_200k_mlm_itm"].filename, random_official_state("mlm_itm"))
    write_lightning_ckpt(root / RELEASED["vilt_vqa"].filename, random_official_state("vqa"))
    (root / "vqa_dict.json").write_text(json.dumps({str(i): f"answer {i}" for i in range(VQA_ANSWERS)}))
    return root


def fetch(name: str, mirror: Path, out: Path, cache: Path, *extra: str) -> int:
    return vilt_convert(
        [
            "fetch",
            name,
            "--out",
            str(out),
            "--mirror",
            mirror.as_uri(),
            "--cache",
            str(cache),
            "--quiet",
            *extra,
        ]
    )


def test_a_pinned_hash_is_verified_and_recorded(mirror: Path, tmp_path: Path) -> None:
    ckpt = mirror / "vilt_200k_mlm_itm.ckpt"
    assert (
        fetch("vilt_200k_mlm_itm", mirror, tmp_path / "out", tmp_path / "cache", "--sha256", sha256(ckpt))
        == 0
    )
    checkpoint = load_checkpoint(tmp_path / "out")
    assert set(checkpoint.heads) == {"itm", "mlm"}
    record = json.loads((tmp_path / "out" / SOURCE_RECORD).read_text())
    assert record["checkpoint"] == {"url": ckpt.as_uri(), "sha256": sha256(ckpt), "verified": True}
    assert (tmp_path / "cache" / ckpt.name).read_bytes() == ckpt.read_bytes()


def test_a_wrong_hash_is_refused_showing_both(mirror: Path, tmp_path: Path, capsys) -> None:
    wrong = "0" * 64
    assert fetch("vilt_200k_mlm_itm", mirror, tmp_path / "out", tmp_path / "cache", "--sha256", wrong) == 2
    error = capsys.readouterr().err
    assert wrong in error and sha256(mirror / "vilt_200k_mlm_itm.ckpt") in error and "refused" in error
    # Nothing that looks finished is left: no checkpoint, no cached download, no partial file.
    assert not (tmp_path / "out").exists()
    assert not any((tmp_path / "cache").iterdir())


def test_the_vqa_checkpoint_brings_its_answer_names(mirror: Path, tmp_path: Path, capsys) -> None:
    assert fetch("vilt_vqa", mirror, tmp_path / "out", tmp_path / "cache") == 0
    checkpoint = load_checkpoint(tmp_path / "out")
    assert checkpoint.heads["vqa"]["labels"] == [f"answer {i}" for i in range(VQA_ANSWERS)]
    # No published hash: it is computed, printed and recorded as unverified.
    printed = capsys.readouterr().out
    assert sha256(mirror / "vilt_vqa.ckpt") in printed
    record = json.loads((tmp_path / "out" / SOURCE_RECORD).read_text())
    assert record["checkpoint"]["verified"] is False and record["companion"]["sha256"] == sha256(
        mirror / "vqa_dict.json"
    )


def test_a_cached_file_is_reused_and_still_checked(mirror: Path, tmp_path: Path) -> None:
    source = mirror / "vqa_dict.json"
    cached = tmp_path / "cache" / "vqa_dict.json"
    assert download(source.as_uri(), cached, progress=False) == sha256(source)
    cached.write_text("{}")  # changed after the download: the cache must not vouch for it
    with pytest.raises(DownloadError, match="mismatch"):
        download(source.as_uri(), cached, sha256(source), progress=False)


def test_unknown_names_and_missing_files_are_named(mirror: Path, tmp_path: Path, capsys) -> None:
    assert fetch("vilt_base", mirror, tmp_path / "out", tmp_path / "cache") == 2
    assert "vilt_200k_mlm_itm" in capsys.readouterr().err  # the names there are
    assert fetch("vilt_nlvr2", mirror, tmp_path / "out", tmp_path / "cache") == 2
    error = capsys.readouterr().err
    assert "vilt_nlvr2.ckpt" in error and "download failed" in error
    assert not any((tmp_path / "cache").iterdir())


def test_list_names_every_release(capsys) -> None:
    assert vilt_convert(["fetch", "--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in RELEASED)
