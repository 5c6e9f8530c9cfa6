"""NLVR2: one sample per image pair, with every statement about the pair and its True/False label.

Raw layout: ``ROOT/nlvr2/data/{train,dev,test1}.json`` (JSON lines: ``identifier``, ``sentence``,
``label``), train images in ``ROOT/images/train/<dir>/``, dev and test1 images in ``ROOT/dev/``
and ``ROOT/test1/`` (``ROOT/images/<split>/`` also works). The pair of identifier
``train-10171-0-0`` is ``train-10171-0``, its images ``train-10171-0-img0.png`` (left, stored as
``KEY.0.*``) and ``...-img1.png`` (right, ``KEY.1.*``); statements sharing a pair become one
sample, in file order. test1 is the paper's test-P.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import check_text, read_json_lines

SPLITS = {"nlvr2/train": "train", "nlvr2/dev": "dev", "nlvr2/test1": "test1"}
LABELS = {"True": True, "False": False}
BAD_LABEL = "label not True/False"
NO_STATEMENT = "no statement left"


def pair_id(identifier: str) -> str:
    """The image pair of a statement identifier: the identifier without its last ``-N``."""
    return identifier.rsplit("-", 1)[0]


def image_index(root: Path, name: str) -> dict[str, Path]:
    """Every image file of raw split ``name`` by file name (train spreads them over 100 folders)."""
    index: dict[str, Path] = {}
    for directory in (root / name, root / "images" / name):
        for parent, _, files in os.walk(directory):
            for file in files:
                index.setdefault(file, Path(parent) / file)
    return index


def plan_nlvr2(root: Path, split: str) -> runner.SplitPlan:
    """The pairs of output ``split`` with their statements, in order of first appearance."""
    name = SPLITS[split]
    annotation = root / "nlvr2" / "data" / f"{name}.json"
    images = image_index(root, name)
    plan = runner.SplitPlan(split, extra={"annotation": str(annotation)})
    pairs: dict[str, list[dict[str, object]]] = {}
    for record in read_json_lines(annotation):
        identifier = str(record["identifier"])
        statements = pairs.setdefault(pair_id(identifier), [])
        try:
            text = check_text(record.get("sentence"), "statement")
        except ValueError as err:
            plan.skip(identifier, str(err))
            continue
        if record.get("label") not in LABELS:
            plan.skip(identifier, BAD_LABEL)
            continue
        statements.append({"id": identifier, "text": text, "label": LABELS[record["label"]]})
    for pair, statements in pairs.items():
        if not statements:
            plan.skip(pair, NO_STATEMENT)
            continue
        files = [f"{pair}-img{side}.png" for side in (0, 1)]
        # An image missing from the index gets its dev/test1-layout path, so the skip names a place.
        raw = [RawImage(str(images.get(f, root / name / f))) for f in files]
        plan.add(pair, pair, raw, {"id": pair, "statements": statements})
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards nlvr2``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards nlvr2``."""
    options = runner.options_from_args(args, "nlvr2")
    manifests = runner.convert_splits(
        options, runner.selected(args, SPLITS), lambda split: plan_nlvr2(options.raw_root, split)
    )
    runner.report(manifests)
