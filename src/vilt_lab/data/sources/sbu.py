"""SBU Captions: pre-training train (official layout or img2dataset tars).

Raw layout: ``ROOT/images_train/<first 4 chars>/<name>`` with ``ROOT/annot.json`` (a list of
``[image_path, caption]``), or img2dataset output in ``ROOT/train/*.tar`` or ``ROOT/*.tar``.
"""

from __future__ import annotations

import argparse

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.web_captions import convert_web_captions

# output split -> its annotation file in the official layout
SPLITS = {"pretrain/train": "annot.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards sbu``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards sbu``."""
    convert_web_captions(args, "sbu", SPLITS)
