"""The Karpathy split files of COCO and Flickr30K (``karpathy/dataset_{coco,flickr30k}.json``).

One entry per image: ``filename`` (``filepath`` too for COCO), ``split`` (``train``, ``restval``,
``val``, ``test``) and ``sentences`` whose ``raw`` strings are the captions. A converter maps each
of its output splits to the Karpathy splits it holds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import read_json
from vilt_lab.data.sources.runner import SplitPlan

KarpathyEntry = dict[str, Any]


def read_karpathy(path: Path) -> list[KarpathyEntry]:
    """The ``images`` list of a Karpathy split file.

    Raises:
        ValueError: naming the file, when it has no ``images`` list.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a Karpathy split file, an object with an 'images' list")
    return data["images"]


def plan_karpathy(
    entries: list[KarpathyEntry],
    split: str,
    karpathy_splits: Sequence[str],
    image_path: Callable[[KarpathyEntry], Path],
) -> SplitPlan:
    """The plan of output ``split``: every image of ``karpathy_splits`` with its captions, in file order.

    The sample key is the file name without its extension, the id the file name.
    """
    plan = SplitPlan(split, extra={"karpathy_splits": list(karpathy_splits)})
    for entry in entries:
        if entry.get("split") not in karpathy_splits:
            continue
        filename = str(entry["filename"])
        captions = [sentence.get("raw") for sentence in entry.get("sentences", [])]
        plan.add_captioned(Path(filename).stem, filename, [RawImage(str(image_path(entry)))], captions)
    return plan


def convert_karpathy(
    args: argparse.Namespace,
    source: str,
    splits: Mapping[str, Sequence[str]],
    karpathy_file: str,
    image_path: Callable[[Path, KarpathyEntry], Path],
    copies: Mapping[str, str] | None = None,
) -> None:
    """Convert the selected output ``splits`` (output split -> Karpathy splits) of one source.

    ``karpathy_file`` is relative to the raw root; ``image_path(root, entry)`` locates an image;
    ``copies`` maps an output split to an identical one it is hard-linked from.
    """
    options = runner.options_from_args(args, source)
    entries = cache(lambda: read_karpathy(options.raw_root / karpathy_file))  # read once, if needed

    def plan(split: str) -> SplitPlan:
        return plan_karpathy(entries(), split, splits[split], lambda e: image_path(options.raw_root, e))

    runner.report(runner.convert_splits(options, runner.selected(args, splits), plan, dict(copies or {})))
