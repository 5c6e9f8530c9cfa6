"""GCC, SBU and CC12M: web image-caption pairs, read from img2dataset's tars or a listing.

Each source has its listing layout (a converter hands its planner to :func:`convert_web_captions`;
img2dataset's tars, when there are, take precedence):

* The official ViLT layout (GCC, SBU): ``ROOT/images_<split>/<first 4 chars of name>/<name>`` and an
  annotation file, a JSON list of ``[image_path, caption]`` pairs. Pairs are grouped by image file
  name (an image listed twice gets both captions); the image is looked up in the layout first,
  then at ``ROOT/<image_path>``.
* img2dataset's output: uncompressed tars of ``KEY.jpg`` (or ``.png`` / ``.webp``), ``KEY.txt``
  (the caption) and ``KEY.json``, found in ``ROOT/<split>/*.tar`` or, for train, ``ROOT/*.tar``.
  Images are read straight out of the tars (by byte offset) in the workers.
* CC12M's released TSV: :mod:`vilt_lab.data.sources.cc12m`.
"""

from __future__ import annotations

import argparse
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from vilt_lab.data.shards import IMAGE_EXTENSIONS
from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import decode_text, find_file, read_json
from vilt_lab.data.sources.runner import SplitPlan

NO_IMAGE_IN_TAR = "no image in the tar"

# A source's listing layout: (root, output split, its short name, the listing file) -> plan.
ListingPlanner = Callable[[Path, str, str, Path], SplitPlan]


def img2dataset_tars(root: Path, split: str) -> list[Path]:
    """img2dataset tars of ``split`` (``train``, ``val``) under ``root``, sorted; [] if none."""
    candidates = [root / split] + ([root] if split == "train" else [])
    for directory in candidates:
        tars = sorted(directory.glob("*.tar"))
        if tars:
            return tars
    return []


def plan_annotation_list(root: Path, split: str, short_split: str, annotation: Path) -> SplitPlan:
    """The official layout: ``annotation`` lists ``[image_path, caption]`` pairs."""
    pairs = read_json(annotation)
    if not isinstance(pairs, list):
        raise ValueError(f"{annotation}: expected a JSON list of [image_path, caption] pairs")
    by_name: dict[str, tuple[str, list[object]]] = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"{annotation}: expected [image_path, caption] pairs, found {pair!r:.200}")
        name = PurePosixPath(pair[0]).name
        by_name.setdefault(name, (pair[0], []))[1].append(pair[1])
    plan = SplitPlan(split, extra={"layout": "annotation list", "annotation": str(annotation)})
    for name, (image_path, captions) in by_name.items():
        image = find_file([root / f"images_{short_split}" / name[:4] / name, root / image_path])
        plan.add_captioned(name, name, [RawImage(str(image))], captions)
    return plan


def plan_img2dataset(tars: list[Path], split: str) -> SplitPlan:
    """img2dataset's tars: one item per key, its caption from ``KEY.txt``."""
    plan = SplitPlan(split, extra={"layout": "img2dataset", "tars": [str(t) for t in tars]})
    for tar_path in tars:
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(tar_path, "r:") as tar:
            for member in tar:
                if member.isfile():
                    key, _, ext = PurePosixPath(member.name).name.partition(".")
                    members.setdefault(key, {})[ext.lower()] = member
            for key, files in members.items():
                image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
                if image is None:
                    plan.skip(key, NO_IMAGE_IN_TAR)
                    continue
                captions: list[object] = []
                if "txt" in files:
                    reader = tar.extractfile(files["txt"])
                    assert reader is not None  # a regular file
                    try:
                        captions.append(decode_text(reader.read(), "caption"))
                    except ValueError as err:
                        plan.skip(f"{key}/caption0", str(err))
                raw = RawImage(str(tar_path), image.offset_data, image.size)
                plan.add_captioned(key, key, [raw], captions)
    return plan


def plan_web_captions(
    root: Path, split: str, listing: Path, plan_listing: ListingPlanner = plan_annotation_list
) -> SplitPlan:
    """Output ``split`` (``pretrain/train``...) from img2dataset tars when there are, else the
    source's listing layout: ``plan_listing`` with its ``listing`` file."""
    short_split = split.rsplit("/", 1)[-1]
    tars = img2dataset_tars(root, short_split)
    if tars:
        return plan_img2dataset(tars, split)
    return plan_listing(root, split, short_split, listing)


def convert_web_captions(
    args: argparse.Namespace,
    source: str,
    listings: dict[str, str],
    plan_listing: ListingPlanner = plan_annotation_list,
) -> None:
    """Run ``vilt-shards gcc`` / ``sbu`` / ``cc12m``: ``listings`` maps each output split to its
    listing file name under ``--root``, read by ``plan_listing`` when there are no img2dataset tars."""
    options = runner.options_from_args(args, source)

    def plan(split: str) -> SplitPlan:
        return plan_web_captions(options.raw_root, split, options.raw_root / listings[split], plan_listing)

    runner.report(runner.convert_splits(options, runner.selected(args, list(listings)), plan))
