"""Flickr30K, Karpathy splits: retrieval train (train + val, as the official code), val and test.

Raw layout: ``ROOT/flickr30k-images/*.jpg`` and ``ROOT/karpathy/dataset_flickr30k.json``.
``retrieval/test`` is the 1K Karpathy test images (the paper's Flickr30K 1K); the official code
also trains on the Karpathy val images, which ``retrieval/val`` holds on their own.
"""

from __future__ import annotations

import argparse

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.karpathy import convert_karpathy

SPLITS: dict[str, tuple[str, ...]] = {
    "retrieval/train": ("train", "val"),
    "retrieval/val": ("val",),
    "retrieval/test": ("test",),
}
KARPATHY_FILE = "karpathy/dataset_flickr30k.json"
IMAGE_DIR = "flickr30k-images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards f30k``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards f30k``."""
    convert_karpathy(args, "f30k", SPLITS, KARPATHY_FILE, lambda root, e: root / IMAGE_DIR / e["filename"])
