"""Conceptual 12M (CC12M): pre-training train (img2dataset tars, or the released TSV and its images).

Raw layout: img2dataset output in ``ROOT/train/*.tar`` or ``ROOT/*.tar`` (read as GCC's and SBU's
are), or the released ``ROOT/cc12m.tsv`` (``url<TAB>caption`` per line, no header) with the images
you downloaded named by their line: line ``N`` (0-based, every line counted, failed downloads
included) is ``ROOT/images_train/<first 4 digits>/<N as 8 digits>.<jpg|png|webp>``. That is GCC's
official layout (``images_<split>/<first 4 chars>/<name>``: 10,000 files a directory) with the line
number as the name, since the TSV has no other id; the extension is only where to look, the
converter reads the format from the bytes.

CC12M has no validation split. Captions are kept as released: CC12M replaced person names by
``<PERSON>``, which stays (BERT's tokenizer reads it as ``<``, ``person``, ``>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vilt_lab.data.shards import IMAGE_EXTENSIONS
from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import find_file
from vilt_lab.data.sources.runner import SplitPlan
from vilt_lab.data.sources.web_captions import convert_web_captions

# output split -> the released listing
SPLITS = {"pretrain/train": "cc12m.tsv"}
MALFORMED_LINE = "TSV line not url<TAB>caption"


def image_name(line: int) -> str:
    """The file name (without extension) of the image on TSV line ``line`` (0-based)."""
    return f"{line:08d}"


def plan_tsv(root: Path, split: str, short_split: str, tsv: Path) -> SplitPlan:
    """The released TSV: one item per line, its image found by :func:`image_name`.

    Raises:
        FileNotFoundError: naming the file, when it is missing.
    """
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv} is missing (docs/data.md, 'CC12M and the 14M mix', gives the layout)")
    plan = SplitPlan(split, extra={"layout": "tsv", "tsv": str(tsv)})
    with open(tsv, "rb") as lines:  # binary lines end at b"\n" only, whatever a caption holds
        for number, line in enumerate(lines):
            name = image_name(number)
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 2:
                plan.skip(name, MALFORMED_LINE)
                continue
            directory = root / f"images_{short_split}" / name[:4]
            image = find_file([directory / f"{name}.{ext}" for ext in IMAGE_EXTENSIONS])
            caption = fields[1].decode("utf-8", "surrogateescape")  # checked per caption
            plan.add_captioned(name, name, [RawImage(str(image))], [caption])
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards cc12m``."""
    runner.add_arguments(parser, list(SPLITS))


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards cc12m``."""
    convert_web_captions(args, "cc12m", SPLITS, plan_tsv)
