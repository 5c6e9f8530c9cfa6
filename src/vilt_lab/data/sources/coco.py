"""COCO captions, Karpathy splits: pre-training (train + restval) and retrieval (train, val, test).

Raw layout: ``ROOT/{train2014,val2014}/COCO_*.jpg`` and ``ROOT/karpathy/dataset_coco.json``.
As in the official code, pre-training and retrieval training use Karpathy train + restval (113K
images; the retrieval copy is hard-linked, not converted twice), ``retrieval/val`` is the 5K
Karpathy val images and ``retrieval/test`` the 5K test images (the paper's COCO 5K).
"""

from __future__ import annotations

import argparse
from functools import cache

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.karpathy import plan_karpathy, read_karpathy

SPLITS: dict[str, tuple[str, ...]] = {
    "pretrain/train": ("train", "restval"),
    "retrieval/train": ("train", "restval"),
    "retrieval/val": ("val",),
    "retrieval/test": ("test",),
}
COPIES = {"retrieval/train": "pretrain/train"}
KARPATHY_FILE = "karpathy/dataset_coco.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards coco``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards coco``."""
    options = runner.options_from_args(args, "coco")
    entries = cache(lambda: read_karpathy(options.raw_root / KARPATHY_FILE))

    def plan(split: str) -> runner.SplitPlan:
        return plan_karpathy(
            entries(), split, SPLITS[split], lambda e: options.raw_root / e["filepath"] / e["filename"]
        )

    runner.report(runner.convert_splits(options, runner.selected(args, SPLITS), plan, COPIES))
