"""``python -m vilt_lab.bench <benchmark> [options]``: one sub-command per benchmark.

python -m vilt_lab.bench loader              # our sample pipeline vs HF ViltImageProcessor
python -m vilt_lab.bench loader --tiny       # seconds, for the test suite
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vilt_lab.bench import loader

BENCHMARKS = {"loader": loader}


def build_parser() -> argparse.ArgumentParser:
    """The parser, with each benchmark module's ``add_arguments`` under its name."""
    parser = argparse.ArgumentParser(prog="python -m vilt_lab.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module in BENCHMARKS.items():
        summary = (module.__doc__ or name).strip().split("\n")[0]
        module.add_arguments(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen benchmark."""
    args = build_parser().parse_args(argv)
    BENCHMARKS[args.benchmark].run(args)


if __name__ == "__main__":
    main()
