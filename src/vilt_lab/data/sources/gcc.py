"""Google Conceptual Captions: pre-training train and val (official layout or img2dataset tars).

Raw layout: ``ROOT/images_{train,val}/<first 4 chars>/<name>`` with ``ROOT/{train,val}_annot.json``
(lists of ``[image_path, caption]``), or img2dataset output in ``ROOT/{train,val}/*.tar``.
"""

from __future__ import annotations

import argparse

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.web_captions import convert_web_captions

# output split -> its annotation file in the official layout
SPLITS = {"pretrain/train": "train_annot.json", "pretrain/val": "val_annot.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards gcc``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards gcc``."""
    convert_web_captions(args, "gcc", SPLITS)
