"""Visual Genome: region phrases as captions, de-duplicated per image (pre-training only).

Raw layout: ``ROOT/images/VG_100K/<id>.jpg`` or ``ROOT/images/VG_100K_2/<id>.jpg``, and
``ROOT/annotations/region_descriptions.json`` (one entry per image: ``id`` and ``regions``, whose
``phrase`` strings are the captions; boxes are unused by ViLT). Exact duplicate phrases of an
image are dropped, as the official loader does; the manifest counts them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import find_file, read_json

SPLITS = ("pretrain/train",)
ANNOTATIONS = "annotations/region_descriptions.json"
IMAGE_DIRS = ("images/VG_100K", "images/VG_100K_2")


def plan_vg(root: Path, split: str) -> runner.SplitPlan:
    """Every annotated image with its distinct region phrases, in file order."""
    path = root / ANNOTATIONS
    entries = read_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of images with 'id' and 'regions'")
    plan = runner.SplitPlan(split)
    for entry in entries:
        image_id = str(entry["id"])
        image = find_file([root / d / f"{image_id}.jpg" for d in IMAGE_DIRS])
        phrases = [region.get("phrase") for region in entry.get("regions", [])]
        plan.add_captioned(image_id, image_id, [RawImage(str(image))], phrases)
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards vg``."""
    runner.add_arguments(parser, SPLITS)


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards vg``."""
    options = runner.options_from_args(args, "vg")
    manifests = runner.convert_splits(
        options, runner.selected(args, SPLITS), lambda split: plan_vg(options.raw_root, split)
    )
    runner.report(manifests)
