"""The conversion runner every raw-dataset converter uses: items -> shards, in parallel, resumable.

A converter reads its annotations into a :class:`SplitPlan` per output split (an ordered list of
:class:`Item`: a sample key, the source id, where its raw images are, the JSON text) and hands it to
:func:`convert_splits`. The runner then:

* cuts the items into shards of ``maxcount`` *items* (shard ``i`` holds items
  ``i*maxcount ... (i+1)*maxcount - 1``, minus the ones skipped), so shard boundaries are a
  function of the item order alone and any shard can be redone on its own;
* converts shards in ``workers`` processes: each reads, decode-checks and cleans its images
  (:mod:`vilt_lab.data.sources.images`), writes ``shard-NNNNNN.tar`` atomically and then a record
  of it (samples, texts, skipped items) in ``.progress/``;
* resumes: a split with a ``manifest.json`` is finished and left alone; in an interrupted split,
  shards with a record are kept and only the others are redone. ``.progress/plan.json`` holds a
  fingerprint of the items and settings, and a rerun that would cut different shards refuses
  to mix with them (pass ``--overwrite``);
* finishes a split by writing ``sizes.json``, ``texts.json`` and ``manifest.json`` (counts, every
  skipped item with its reason, what was done to the images) and deleting ``.progress/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vilt_lab.data.shards import (
    MANIFEST_FILE,
    PROGRESS_DIR,
    SHARD_PATTERN,
    SIZES_FILE,
    TEXTS_FILE,
    ShardFile,
    build_manifest,
    encode_sample,
    num_texts,
    prepare_output_dir,
    read_sizes,
    write_json_atomic,
    write_split_index,
)
from vilt_lab.data.sources.images import BadImage, ImagePolicy, RawImage, read_clean_image
from vilt_lab.data.sources.raw import clean_captions

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
DEFAULT_MAXCOUNT = 1000  # ~100-200 MB shards of COCO-sized JPEGs; COCO's 5K test split -> 5 shards
NO_CAPTION = "no caption left"


@dataclass(frozen=True, slots=True)
class Item:
    """One sample to write: tar ``key``, source ``id`` (for the manifest), raw images, JSON text."""

    key: str
    id: str
    images: tuple[RawImage, ...]
    meta: dict[str, Any]


@dataclass
class SplitPlan:
    """What a converter hands the runner for one output split.

    ``split`` is the split's directory under ``--out`` (e.g. ``retrieval/test``); ``skipped``
    holds what was dropped while reading annotations (texts, items with no text left); ``extra``
    goes into the manifest.
    """

    split: str
    items: list[Item] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def skip(self, item_id: str, reason: str) -> None:
        """Record an item or text dropped before conversion."""
        self.skipped.append({"id": str(item_id), "reason": reason})

    def add(self, key: str, item_id: str, images: Sequence[RawImage], meta: dict[str, Any]) -> None:
        """Add an item; ``.`` and ``/`` in ``key`` become ``_`` (WebDataset splits names at them)."""
        safe_key = key.replace(".", "_").replace("/", "_")
        self.items.append(Item(safe_key, str(item_id), tuple(images), meta))

    def add_captioned(
        self, key: str, item_id: str, images: Sequence[RawImage], raw_captions: Iterable[Any]
    ) -> None:
        """Add an image with its usable, distinct captions, or skip it when none is left."""
        captions, duplicates = clean_captions(item_id, raw_captions, self.skipped)
        self.extra["duplicate_captions_dropped"] = (
            self.extra.get("duplicate_captions_dropped", 0) + duplicates
        )
        if not captions:
            self.skip(item_id, NO_CAPTION)
            return
        self.add(key, item_id, images, {"id": item_id, "captions": captions})


@dataclass(frozen=True)
class RunOptions:
    """Settings shared by every split of one ``vilt-shards`` call."""

    out: Path
    source: str
    raw_root: Path
    workers: int = 1
    maxcount: int = DEFAULT_MAXCOUNT
    overwrite: bool = False
    policy: ImagePolicy = field(default_factory=ImagePolicy)
    progress: bool = True


@dataclass(frozen=True)
class _ShardJob:
    out_dir: str
    index: int
    items: list[Item]
    policy: ImagePolicy


def _record_path(out_dir: Path, index: int) -> Path:
    return out_dir / PROGRESS_DIR / ((SHARD_PATTERN % index) + ".json")


def _convert_shard(job: _ShardJob) -> tuple[int, dict[str, Any]]:
    """Worker: write one shard (no file when every item is skipped), then its progress record."""
    out_dir = Path(job.out_dir)
    path = out_dir / (SHARD_PATTERN % job.index)
    path.unlink(missing_ok=True)  # a shard renamed by a run killed before its record was written
    record: dict[str, Any] = {"samples": 0, "texts": 0, "skipped": [], "images": Counter()}
    shard: ShardFile | None = None
    try:
        for item in job.items:
            try:
                cleaned = [read_clean_image(raw, job.policy) for raw in item.images]
            except BadImage as err:
                record["skipped"].append({"id": item.id, "reason": err.reason, "detail": err.detail})
                continue
            if shard is None:
                shard = ShardFile(path)
            shard.write(encode_sample(item.key, [c.data for c in cleaned], item.meta))
            record["samples"] += 1
            record["texts"] += num_texts(item.meta)
            record["images"].update(c.action for c in cleaned)
        if shard is not None:
            shard.close()
    except BaseException:
        if shard is not None:
            shard.abort()
        raise
    # The record is written last: it is what marks the shard complete for a resumed run.
    write_json_atomic(_record_path(out_dir, job.index), record)
    return job.index, record


def _map_jobs(jobs: list[_ShardJob], workers: int) -> Iterator[tuple[int, dict[str, Any]]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_convert_shard, jobs)
        return
    # forkserver: no fork of a parent that may hold threads (tqdm's monitor), and the preload
    # imports this module once instead of once per worker (it pulls in torch via webdataset).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_convert_shard, jobs)


def _fingerprint(plan: SplitPlan, options: RunOptions) -> dict[str, Any]:
    digest = hashlib.sha256()
    keys: set[str] = set()
    for item in plan.items:
        if item.key in keys:
            raise ValueError(f"{options.source} {plan.split}: two items share the sample key {item.key!r}")
        keys.add(item.key)
        digest.update(
            json.dumps([item.key, [r.path for r in item.images], item.meta], sort_keys=True).encode()
        )
    return {
        "source": options.source,
        "split": plan.split,
        "maxcount": options.maxcount,
        "min_side": options.policy.min_side,
        "resize_shorter": options.policy.resize_shorter,
        "num_items": len(plan.items),
        "items_sha256": digest.hexdigest(),
    }


def _start_or_resume(out_dir: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    plan_file = out_dir / PROGRESS_DIR / PLAN_FILE
    if overwrite:
        prepare_output_dir(out_dir, overwrite=True)
    elif plan_file.exists():
        if json.loads(plan_file.read_text()) != fingerprint:
            raise ValueError(
                f"{out_dir} holds an interrupted conversion of other items or with other settings "
                f"({plan_file}); pass --overwrite to start this split again"
            )
        return
    else:
        prepare_output_dir(out_dir, overwrite=False)
    plan_file.parent.mkdir()
    write_json_atomic(plan_file, fingerprint)


def run_split(plan: SplitPlan, options: RunOptions) -> dict[str, Any]:
    """Convert one planned split into ``options.out / plan.split`` and return its manifest."""
    out_dir = options.out / plan.split
    _start_or_resume(out_dir, _fingerprint(plan, options), options.overwrite)
    chunks = [plan.items[i : i + options.maxcount] for i in range(0, len(plan.items), options.maxcount)]
    records: dict[int, dict[str, Any]] = {}
    for index in range(len(chunks)):
        if (path := _record_path(out_dir, index)).exists():
            records[index] = json.loads(path.read_text())
    jobs = [
        _ShardJob(str(out_dir), i, chunk, options.policy)
        for i, chunk in enumerate(chunks)
        if i not in records
    ]
    logger.info(
        "%s %s: %d items in %d shards, %d already complete",
        options.source,
        plan.split,
        len(plan.items),
        len(chunks),
        len(records),
    )
    done = sum(len(chunks[i]) for i in records)
    with tqdm(
        total=len(plan.items), initial=done, desc=plan.split, unit="item", disable=not options.progress
    ) as bar:
        for index, record in _map_jobs(jobs, options.workers):
            records[index] = record
            bar.update(len(chunks[index]))
    return _finish(plan, options, out_dir, [records[i] for i in range(len(chunks))])


def _finish(
    plan: SplitPlan, options: RunOptions, out_dir: Path, records: list[dict[str, Any]]
) -> dict[str, Any]:
    sizes = {SHARD_PATTERN % i: r["samples"] for i, r in enumerate(records) if r["samples"]}
    texts = {SHARD_PATTERN % i: r["texts"] for i, r in enumerate(records) if r["samples"]}
    images: Counter[str] = Counter()
    for record in records:
        images.update(record["images"])
    manifest = build_manifest(
        source=options.source,
        split=plan.split,
        sizes=sizes,
        texts=texts,
        skipped=plan.skipped + [s for r in records for s in r["skipped"]],
        caps={"maxcount": options.maxcount},
        extra={
            "raw_root": str(options.raw_root),
            "num_items": len(plan.items),
            "images": dict(sorted(images.items())),
            "min_side": options.policy.min_side,
            "resize_shorter": options.policy.resize_shorter,
            **plan.extra,
        },
    )
    write_split_index(out_dir, sizes, texts, manifest)
    shutil.rmtree(out_dir / PROGRESS_DIR)
    return manifest


def _link_split(source_dir: Path, out_dir: Path, split: str, copy_of: str) -> dict[str, Any]:
    """Make ``out_dir`` the same split as the finished ``source_dir`` (hard links, else copies)."""
    prepare_output_dir(out_dir, overwrite=True)  # only an unfinished conversion can be here
    for name in [*read_sizes(source_dir), SIZES_FILE, TEXTS_FILE]:
        try:
            os.link(source_dir / name, out_dir / name)
        except OSError:  # another file system, or links unsupported
            shutil.copy2(source_dir / name, out_dir / name)
    manifest = {**json.loads((source_dir / MANIFEST_FILE).read_text()), "split": split, "copy_of": copy_of}
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


def convert_splits(
    options: RunOptions,
    splits: Sequence[str],
    plan: Callable[[str], SplitPlan],
    copies: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert ``splits`` in order, each planned by ``plan(split)`` only when it is not finished.

    ``copies`` maps a split to an earlier one holding the very same items (COCO's pre-training and
    retrieval train sets): once that one is finished, the copy is hard-linked instead of redone.
    Returns each split's manifest.
    """
    manifests: dict[str, dict[str, Any]] = {}
    for split in splits:
        out_dir = options.out / split
        if not options.overwrite and (out_dir / MANIFEST_FILE).exists():
            logger.info("%s %s: already converted (%s), skipping", options.source, split, out_dir)
            manifests[split] = json.loads((out_dir / MANIFEST_FILE).read_text())
            continue
        original = (copies or {}).get(split)
        if original is not None and (options.out / original / MANIFEST_FILE).exists():
            logger.info("%s %s: the same items as %s, linking its shards", options.source, split, original)
            manifests[split] = _link_split(options.out / original, out_dir, split, original)
            continue
        manifests[split] = run_split(plan(split), options)
    return manifests


# ----------------------------------------------------------------------------------------------
# Command line: what every raw-dataset converter shares


def add_arguments(parser: argparse.ArgumentParser, splits: Sequence[str]) -> None:
    """``--root``, ``--split``, ``--workers`` and the image policy options of a converter."""
    parser.add_argument("--root", type=Path, required=True, help="the raw dataset (docs/data.md, 'Datasets')")
    parser.add_argument(
        "--split", choices=list(splits), default=None, help="convert this split only (default: all)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="conversion processes (default: min(8, CPUs))",
    )
    parser.add_argument(
        "--min-side",
        type=int,
        default=ImagePolicy.min_side,
        help="skip images whose shorter side is below this many pixels",
    )
    parser.add_argument(
        "--resize-shorter",
        type=int,
        default=None,
        help="pre-resize images whose shorter side is larger to this (aspect kept); ViLT reads 384",
    )
    parser.set_defaults(maxcount=DEFAULT_MAXCOUNT)


def options_from_args(args: argparse.Namespace, source: str) -> RunOptions:
    """The :class:`RunOptions` of parsed ``vilt-shards SOURCE`` arguments."""
    if args.workers < 1 or args.maxcount < 1:
        raise ValueError(f"--workers and --maxcount must be positive, got {args.workers}, {args.maxcount}")
    return RunOptions(
        out=args.out,
        source=source,
        raw_root=args.root,
        workers=args.workers,
        maxcount=args.maxcount,
        overwrite=args.overwrite,
        policy=ImagePolicy(min_side=args.min_side, resize_shorter=args.resize_shorter),
    )


def selected(args: argparse.Namespace, splits: Sequence[str]) -> list[str]:
    """The splits to convert: ``--split``, or all of them in order."""
    return [args.split] if args.split else list(splits)


def report(manifests: dict[str, dict[str, Any]]) -> None:
    """Print one JSON line per converted split: samples, texts, skips by reason."""
    for split, manifest in manifests.items():
        summary = {k: manifest[k] for k in ("num_samples", "num_texts", "num_skipped", "skipped_by_reason")}
        print(json.dumps({"split": split, **summary}))
