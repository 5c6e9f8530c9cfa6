"""A released checkpoint by name: downloaded (cached), checked, converted into a vilt_lab
checkpoint directory with a record of where it came from. `vilt-convert fetch` and
`vilt_lab.create_model_and_transforms` both fetch through `fetch_released`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .checkpoint_io import ViltCheckpoint, save_checkpoint
from .download import download
from .official import read_official, read_vqa_labels
from .released import RELEASE_URL, ReleasedFile

SOURCE_RECORD = "source.json"  # beside a fetched checkpoint: where it came from, and its hash


def fetch_released(
    entry: ReleasedFile,
    out: Path,
    cache: Path,
    base: str = RELEASE_URL,
    sha256: str | None = None,
    progress: bool = True,
    note: Callable[[str], None] = print,
) -> ViltCheckpoint:
    """Download `entry` (and its companion) from `base` into `cache`, verify it against `sha256`
    or the registry's hash, and convert it into `out`. `note` hears of a hash nobody pinned.

    Raises `download.DownloadError` when a transfer fails or a hash differs.
    """
    base = base.rstrip("/")

    def fetch(file: ReleasedFile, pinned: str | None) -> dict[str, str | bool]:
        url = f"{base}/{file.filename}"
        expected = pinned or file.sha256
        actual = download(url, cache / file.filename, expected, progress=progress)
        if expected is None:
            note(
                f"{file.filename}: SHA-256 {actual} (no published hash to check it against; pin it with --sha256)"
            )
        return {"url": url, "sha256": actual, "verified": expected is not None}

    record = {"name": entry.name, "task": entry.task, "checkpoint": fetch(entry, sha256)}
    labels = None
    if entry.companion is not None:
        record["companion"] = fetch(entry.companion, None)
        labels = read_vqa_labels(cache / entry.companion.filename)
    checkpoint = read_official(cache / entry.filename, vqa_labels=labels)
    save_checkpoint(checkpoint, out)
    (Path(out) / SOURCE_RECORD).write_text(json.dumps(record, indent=1))
    return checkpoint
