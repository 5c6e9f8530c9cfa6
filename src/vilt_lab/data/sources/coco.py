"""COCO captions, Karpathy splits: pre-training (train + restval) and retrieval (train, val, test).

Raw layout: ``ROOT/{train2014,val2014}/COCO_*.jpg`` and ``ROOT/karpathy/dataset_coco.json``.
As in the official code, pre-training and retrieval training use Karpathy train + restval (113K
images; the retrieval copy is hard-linked, not converted twice), ``retrieval/val`` is the 5K
Karpathy val images and ``retrieval/test`` the 5K test images (the paper's COCO 5K).
"""

from __future__ import annotations

import argparse

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.karpathy import convert_karpathy

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
    convert_karpathy(
        args, "coco", SPLITS, KARPATHY_FILE, lambda root, e: root / e["filepath"] / e["filename"], COPIES
    )
