"""``vilt-convert``: ViLT weights between the official checkpoints, vilt_lab and HF transformers.

    vilt-convert official vilt_vqa.ckpt --vqa-labels vqa_dict.json --out ckpt/vilt_vqa
    vilt-convert to-hf ckpt/vilt_vqa --head vqa --out hf/vilt_vqa
    vilt-convert from-hf hf/vilt_vqa --out ckpt/vilt_vqa_again
    vilt-convert run runs/demo --out ckpt/demo           # the run's best checkpoint, else its newest
    vilt-convert run runs/demo/checkpoints/step_00000100 --out ckpt/demo_100
    vilt-convert fetch vilt_vqa --out ckpt/vilt_vqa      # download, verify, convert in one step
    vilt-convert fetch --list

A vilt_lab checkpoint directory (model.safetensors + config.json) is what `model.init_from=DIR`
starts a run from. `to-hf` also takes an official `.ckpt` file directly; `run` takes the model
out of a training run's checkpoint (which also holds optimizer and RNG state), the run dir's
selected one or a `checkpoints/step_N`, with the run's tokenizer (copied into the export) and
resize (recorded in its config.json), so the export predicts with no more flags than the run would.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .build.task import read_checkpoint, read_run_checkpoint
from .data.tokenizer import load_tokenizer
from .predict.preprocess import input_settings
from .training.run_dir import RunDir
from .weights.checkpoint_io import TOKENIZER_DIR, ViltCheckpoint, save_checkpoint
from .weights.download import default_cache_dir
from .weights.fetch import fetch_released
from .weights.hf import HF_HEAD_CLASSES, load_hf, save_hf
from .weights.official import read_official, read_vqa_labels
from .weights.released import RELEASE_URL, RELEASED, released


def describe(checkpoint: ViltCheckpoint) -> str:
    """One line: size and heads of a checkpoint."""
    c = checkpoint.config
    heads = ", ".join(
        name + (f" ({spec['num_labels']} labels)" if "num_labels" in spec else "")
        for name, spec in sorted(checkpoint.heads.items())
    )
    return (
        f"hidden {c.hidden_size}, {c.num_layers} layers, {c.num_heads} heads, patch {c.patch_size}, "
        f"image {c.image_size}, text {c.max_text_len}, vocab {c.vocab_size}, "
        f"{c.num_modality_types} modality types; heads: {heads or 'none'}"
    )


def run_official(args: argparse.Namespace) -> None:
    labels = read_vqa_labels(args.vqa_labels) if args.vqa_labels else None
    checkpoint = read_official(args.ckpt, num_heads=args.num_heads, vqa_labels=labels)
    save_checkpoint(checkpoint, args.out)
    print(f"{args.ckpt} -> {args.out}: {describe(checkpoint)}")


def run_fetch(args: argparse.Namespace) -> None:
    if args.list:
        for entry in RELEASED.values():
            print(f"{entry.name:18} {entry.task:8} {entry.description}")
        return
    if args.name is None or args.out is None:
        raise ValueError("give the checkpoint's NAME and --out DIR (or --list)")
    entry = released(args.name)
    cache = args.cache or default_cache_dir() / "released"
    checkpoint = fetch_released(
        entry, args.out, cache, base=args.mirror or RELEASE_URL, sha256=args.sha256, progress=not args.quiet
    )
    print(f"{entry.name} -> {args.out}: {describe(checkpoint)}")


def run_to_hf(args: argparse.Namespace) -> None:
    checkpoint = read_checkpoint(args.ckpt)
    for note in save_hf(checkpoint, args.head, args.out):
        print(f"note: {note}")
    print(
        f"{args.ckpt} -> {args.out}: transformers.{HF_HEAD_CLASSES[args.head]}.from_pretrained({str(args.out)!r})"
    )


def run_from_hf(args: argparse.Namespace) -> None:
    checkpoint = load_hf(args.hf_dir)
    save_checkpoint(checkpoint, args.out)
    print(f"{args.hf_dir} -> {args.out}: {describe(checkpoint)}")


def run_checkpoint(path: Path) -> Path:
    """The checkpoint `vilt-convert run` exports: a run dir's selected one (its best when the run
    selected one, else its newest complete one), a `checkpoints/step_N` as it is given. A run dir
    is known by its config.yaml, so one without any checkpoint is refused with that reason."""
    run_dir = RunDir(path)
    return run_dir.selected_checkpoint() if run_dir.config.is_file() else path


def run_run(args: argparse.Namespace) -> None:
    step = run_checkpoint(args.ckpt)
    checkpoint = read_run_checkpoint(step)
    settings = input_settings(step)
    tokenizer_out = Path(args.out) / TOKENIZER_DIR
    if Path(settings.tokenizer).is_dir():
        shutil.copytree(settings.tokenizer, tokenizer_out, dirs_exist_ok=True)
    else:  # a Hub name: its files from the HF cache, so the export needs no network
        load_tokenizer(settings.tokenizer, key=settings.tokenizer_key).save_pretrained(tokenizer_out)
    inputs = {"tokenizer": TOKENIZER_DIR, "shorter": settings.shorter, "longer": settings.longer}
    save_checkpoint(checkpoint, args.out, inputs=inputs)
    print(f"{step} -> {args.out}: {describe(checkpoint)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vilt-convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    official = sub.add_parser("official", help="an official ViLT .ckpt -> a vilt_lab checkpoint directory")
    official.add_argument(
        "ckpt", type=Path, help="official Lightning checkpoint (read with weights_only=True)"
    )
    official.add_argument("--out", type=Path, required=True, help="vilt_lab checkpoint directory to write")
    official.add_argument(
        "--num-heads", type=int, default=None, help="attention heads (default: hidden size / 64, as ViT)"
    )
    official.add_argument(
        "--vqa-labels",
        type=Path,
        default=None,
        help="answer names: the release's vqa_dict.json (index -> answer)",
    )
    official.set_defaults(run=run_official)

    to_hf = sub.add_parser(
        "to-hf", help="a vilt_lab checkpoint (or official .ckpt) -> HF save_pretrained directory"
    )
    to_hf.add_argument("ckpt", type=Path, help="vilt_lab checkpoint directory or official .ckpt file")
    # Not argparse choices: asking for ITM should say why it cannot be exported.
    to_hf.add_argument(
        "--head", required=True, help=f"the head to export: {', '.join(sorted(HF_HEAD_CLASSES))}"
    )
    to_hf.add_argument("--out", type=Path, required=True, help="HF directory to write")
    to_hf.set_defaults(run=run_to_hf)

    from_hf = sub.add_parser("from-hf", help="an HF ViLT save_pretrained directory -> a vilt_lab checkpoint")
    from_hf.add_argument("hf_dir", type=Path, help="directory with config.json and the weights")
    from_hf.add_argument("--out", type=Path, required=True, help="vilt_lab checkpoint directory to write")
    from_hf.set_defaults(run=run_from_hf)

    run = sub.add_parser(
        "run", help="a training run (or one of its checkpoints) -> a vilt_lab checkpoint directory"
    )
    run.add_argument(
        "ckpt",
        type=Path,
        help="a run dir (its best checkpoint, else its newest) or its checkpoints/step_* "
        "(the run's config.yaml is read too)",
    )
    run.add_argument("--out", type=Path, required=True, help="vilt_lab checkpoint directory to write")
    run.set_defaults(run=run_run)

    fetch = sub.add_parser(
        "fetch",
        help="download a released official checkpoint, check its SHA-256, convert it (--list: the names)",
    )
    fetch.add_argument("name", nargs="?", help=f"one of: {', '.join(RELEASED)}")
    fetch.add_argument("--out", type=Path, help="vilt_lab checkpoint directory to write")
    fetch.add_argument("--list", action="store_true", help="list the released checkpoints and stop")
    fetch.add_argument(
        "--sha256",
        default=None,
        help="the .ckpt's expected SHA-256 (overrides the registry's; refused if it differs)",
    )
    fetch.add_argument(
        "--mirror",
        default=None,
        help=f"base URL holding the release's files instead of {RELEASE_URL} (file:// too)",
    )
    fetch.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="where downloads are kept (default $XDG_CACHE_HOME/vilt_lab/released)",
    )
    fetch.add_argument("--quiet", action="store_true", help="no download progress")
    fetch.set_defaults(run=run_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vilt-convert``: 0 on success, 2 with the reason on stderr otherwise."""
    args = build_parser().parse_args(argv)
    # Progress written to a file (not a terminal) goes out as log lines: show them.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except (FileNotFoundError, KeyError, ValueError, pickle.UnpicklingError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"vilt-convert {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
