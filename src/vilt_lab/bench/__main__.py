"""``python -m vilt_lab.bench <benchmark> [options]``: one sub-command per benchmark.

python -m vilt_lab.bench loader              # our sample pipeline vs HF ViltImageProcessor
python -m vilt_lab.bench loader --tiny       # seconds, for the test suite
python -m vilt_lab.bench latency             # ViLT's visual embedding + transformer at batch 1
python -m vilt_lab.bench table6              # the paper's Table 6 here: experiments/table6/result.md
python -m vilt_lab.bench model               # ours vs HF ViltModel: pre-training step, latency, throughput, retrieval
python -m vilt_lab.bench model --tiny        # seconds, for the test suite
python -m vilt_lab.bench canvas              # image canvases: padded tokens, batch shapes, step time (CPU)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from vilt_lab.bench import canvas, latency, loader, model, table6

BENCHMARKS = {"loader": loader, "latency": latency, "table6": table6, "model": model, "canvas": canvas}


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
