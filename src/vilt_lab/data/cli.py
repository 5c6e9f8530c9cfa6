"""``vilt-shards``: convert a raw dataset (or generate the shapes world) into WebDataset shards.

    vilt-shards coco --root /data/coco --out /shards/coco [--split retrieval/test] [--workers 8]
    vilt-shards shapes --out /shards/shapes --n 2000

Each source is a module registered in :data:`SOURCES` that defines
``add_arguments(parser)`` (its own options; real datasets add ``--root``, ``--split``,
``--workers`` and the image options of :mod:`vilt_lab.data.sources.runner`) and
``convert(args)``; every source also gets ``--out``, ``--overwrite`` and ``--maxcount``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence
from pathlib import Path

# source name -> module path; modules are imported only when the parser is built.
SOURCES: dict[str, str] = {
    "shapes": "vilt_lab.data.sources.shapes",
    "coco": "vilt_lab.data.sources.coco",
    "f30k": "vilt_lab.data.sources.f30k",
    "vg": "vilt_lab.data.sources.vg",
    "gcc": "vilt_lab.data.sources.gcc",
    "sbu": "vilt_lab.data.sources.sbu",
    "cc12m": "vilt_lab.data.sources.cc12m",
    "vqav2": "vilt_lab.data.sources.vqav2",
    "nlvr2": "vilt_lab.data.sources.nlvr2",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``vilt-shards`` parser, one sub-command per registered source."""
    parser = argparse.ArgumentParser(prog="vilt-shards", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for name, module_path in SOURCES.items():
        module = importlib.import_module(module_path)
        summary = (module.__doc__ or name).strip().split("\n")[0]
        source_parser = sub.add_parser(name, help=summary, description=summary)
        source_parser.add_argument("--out", type=Path, required=True, help="output directory")
        source_parser.add_argument(
            "--overwrite", action="store_true", help="replace an earlier conversion in --out"
        )
        source_parser.add_argument(
            "--maxcount", type=int, default=5000, help="samples (items) per shard (default: %(default)s)"
        )
        module.add_arguments(source_parser)
        source_parser.set_defaults(convert=module.convert)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``vilt-shards``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.convert(args)


if __name__ == "__main__":
    main()
