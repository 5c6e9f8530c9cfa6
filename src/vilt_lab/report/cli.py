"""`vilt-report`: render a table's result.md (and PNGs) from its runs, list or launch the runs.

vilt-report render table5 [--runs runs/paper] [--out experiments/table5/result.md]
vilt-report plan table5          # the runs, done or not, with their commands
vilt-report run table5 [--launch 'accelerate launch --num_processes 8 --mixed_precision bf16 -m']
    [--set paths.data_dir=/shards]   # an override added to every run that takes it
vilt-report run table5 --slurm [--slurm-set partition=gpu --slurm-set time=2-00:00:00]   # all at once
vilt-report heatmap CHECKPOINT IMAGE "a caption" --out wpa.png   # the paper's Figure 4

TABLE is a shipped table's name (table2 ... table6, shapes/table5, shapes/future: they come with
the package, so this runs from any directory) or a folder of your own holding table.yaml beside
runs.yaml and recipes.yaml.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .definitions import find_table, load_catalog, load_table
from .heatmap import heatmap
from .plan import table_runs
from .plots import draw_cells, draw_curves
from .render import render
from .slurm import JobShape, routed, submit

DEFAULT_RUNS = Path("runs/paper")


def _render(args: argparse.Namespace) -> int:
    folder, shipped = find_table(args.table)
    table, catalog = load_table(folder), load_catalog(folder.parent)
    # The PNGs are named after the markdown, beside it: result.md -> result.png, result-curves.png.
    # A shipped table's result goes beside its runs: the package's folder is not the user's.
    result = args.out or (args.runs / table.name if shipped else folder) / "result.md"
    result.parent.mkdir(parents=True, exist_ok=True)
    text = render(table, catalog, args.runs)
    bars = draw_cells(table, catalog, args.runs, result.with_suffix(".png"))
    text += f"\n![{'paper vs ours' if table.with_paper else 'ours per row'}]({bars.name})\n"
    curves = draw_curves(table, catalog, args.runs, result.with_name(f"{result.stem}-curves.png"))
    if curves is not None:
        text += f"\n![training curves]({curves.name})\n"
    result.write_text(text)
    print(text)
    print(f"wrote {result}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    folder, _ = find_table(args.table)
    table, catalog = load_table(folder), load_catalog(folder.parent)
    for spec in table_runs(table, catalog):
        print(f"{'done' if spec.is_done(args.runs) else 'todo'}  {spec.id}\n      {spec.shell(args.runs)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run the missing runs one after another, in dependency order, and stop at the first
    failure; or, with --slurm, submit them all at once (report.slurm)."""
    folder, _ = find_table(args.table)
    table, catalog = load_table(folder), load_catalog(folder.parent)
    if args.slurm and args.launch:
        raise ValueError("--slurm and --launch: SLURM starts each run's processes itself; drop --launch")
    if args.slurm:
        shape = JobShape.parse(args.slurm_set)
        return submit(table_runs(table, catalog), args.runs, shape, args.set, args.dry_run)
    if args.slurm_set:
        raise ValueError("--slurm-set shapes the jobs of --slurm; add --slurm")
    launch = tuple(shlex.split(args.launch)) if args.launch else None
    for spec in table_runs(table, catalog):
        if spec.is_done(args.runs):
            print(f"done: {spec.id}")
            continue
        command = [*spec.command(args.runs, launch=launch), *routed(args.set, spec.kind)]
        print(f"run: {spec.id}: {shlex.join(command)}", flush=True)
        if args.dry_run:
            continue
        code = subprocess.call([sys.executable if part == "python" else part for part in command])
        if code != 0:
            print(f"{spec.id} failed with exit code {code}; fix it and run again (finished runs are kept)")
            return code
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    out = heatmap(
        args.checkpoint, args.image, args.caption, args.tokenizer, args.out, args.shorter, args.longer
    )
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vilt-report", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler in (("render", _render), ("plan", _plan), ("run", _run)):
        command = sub.add_parser(name)
        command.add_argument(
            "table",
            type=Path,
            help="a shipped table (table2 ... table6, shapes/table5, shapes/future) or a table folder",
        )
        command.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="where the tables' runs live")
        command.set_defaults(handler=handler)
        if name == "render":
            command.add_argument(
                "--out",
                type=Path,
                default=None,
                help="the markdown to write (default: TABLE/result.md; RUNS/<table>/result.md for a shipped table)",
            )
        if name == "run":
            command.add_argument("--launch", default=None, help="launcher for training, ending in -m")
            command.add_argument(
                "--slurm",
                action="store_true",
                help="submit every missing run to SLURM at once (sbatch, each after the run it starts from)",
            )
            command.add_argument(
                "--slurm-set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="the training jobs' shape: nodes, gpus_per_node (0: a CPU partition), cpus_per_task, "
                "time, partition, or any sbatch option (repeatable)",
            )
            command.add_argument("--dry-run", action="store_true", help="print the commands only")
            command.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="an override added to every run, e.g. --set paths.data_dir=/shards (repeatable)",
            )
    figure = sub.add_parser("heatmap", help="word-patch alignment of one image and caption (Figure 4)")
    figure.add_argument(
        "checkpoint", help="a vilt_lab checkpoint dir, a run's step dir or run dir, an official .ckpt"
    )
    figure.add_argument("image", type=Path)
    figure.add_argument("caption")
    figure.add_argument(
        "--tokenizer", default="bert-base-uncased", help="the checkpoint's tokenizer (name or dir)"
    )
    figure.add_argument("--out", type=Path, required=True, help="the PNG to write")
    figure.add_argument("--shorter", type=int, default=384, help="resize: shorter side (the paper: 384)")
    figure.add_argument(
        "--longer", type=int, default=640, help="resize: longer side at most (the paper: 640)"
    )
    figure.set_defaults(handler=_heatmap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"vilt-report {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
