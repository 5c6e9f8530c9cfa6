"""`vilt-predict`: one image, some texts and a checkpoint -> predictions as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.sources.images import BadImage, open_image
from ..data.transforms import SHARD_IMAGES
from ..weights.checkpoint_io import UnsafeCheckpointError
from .modes import MODES, ArgumentError, Inputs, format_table, infer_task
from .predictor import Predictor, require_head
from .preprocess import input_settings

EPILOG = """examples:
  vilt-predict runs/demo/checkpoints/step_00001600 --image scene.png --text "two red squares" --text "a blue circle"
  vilt-predict ckpt/vilt_200k_mlm_itm --image cat.jpg --text "a [MASK] sitting on a sofa"
  vilt-predict ckpt/vilt_vqa --image cat.jpg --text "what colour is the cat?"
  vilt-predict ckpt/vilt_nlvr2 --image left.jpg --image2 right.jpg --text "there are two dogs"
  vilt-predict CKPT --image scene.png --text "two red squares" --heatmap wpa.png --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vilt-predict",
        description="Predictions of a vilt_lab checkpoint on one image (NLVR2: two) and some texts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        help="a vilt_lab checkpoint dir (vilt-convert's, save_pretrained's), a run's "
        "checkpoints/step_N, a run dir (its best checkpoint, else its latest) or an official .ckpt",
    )
    parser.add_argument("--image", type=Path, required=True, help="the image (a local file)")
    parser.add_argument(
        "--text",
        action="append",
        required=True,
        help="a caption, a text with [MASK] words, a question or a statement (repeatable)",
    )
    parser.add_argument("--image2", type=Path, help="NLVR2: the second image of the pair")
    parser.add_argument(
        "--task",
        choices=sorted(MODES),
        help="; ".join(f"{name}: {mode.summary}" for name, mode in MODES.items())
        + ". Default: nlvr2 with --image2, mlm for a text with [MASK], else itm (vqa for a "
        "checkpoint with a VQA head and no ITM head)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="predictions shown per [MASK] / question")
    parser.add_argument(
        "--heatmap",
        type=Path,
        help="also write the word-patch alignment of the first text over --image (PNG)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--tokenizer",
        help="the checkpoint's tokenizer (name or dir); default: its run's data.tokenizer or the "
        "one its export carries (vilt-convert run), else bert-base-uncased (the released checkpoints')",
    )
    parser.add_argument(
        "--shorter",
        type=int,
        help="resize: shorter side; default: its run's or its export's, else 384 (the paper's)",
    )
    parser.add_argument(
        "--longer",
        type=int,
        help="resize: longer side at most; default: its run's or its export's, else 639 (the paper's)",
    )
    return parser


def run_device(name: str) -> torch.device:
    """The device `--device` names: auto is the GPU when there is one, else the CPU; a GPU that
    is not there is refused before the checkpoint is read."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArgumentError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ArgumentError(
            f"--device {name}: this machine has {torch.cuda.device_count()} usable CUDA device(s); "
            "use --device cpu (or auto)"
        )
    if device.type not in ("cpu", "cuda"):
        raise ArgumentError(f"--device {name}: vilt-predict runs on cpu or cuda")
    return device


def check_arguments(args: argparse.Namespace) -> Inputs:
    """What can be wrong with the arguments alone, found before anything is loaded."""
    for flag, path in (("--image", args.image), ("--image2", args.image2)):
        if path is None:
            continue
        if not path.is_file():
            raise ArgumentError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")
        try:  # the header only, with the loader's own rules: no pixel is decoded yet
            open_image(path.read_bytes(), SHARD_IMAGES).close()
        except BadImage as err:
            raise ArgumentError(f"{flag} {path}: {err}") from err
    empty = [text for text in args.text if not text.strip()]
    if empty:
        raise ArgumentError("--text: an empty text has nothing to predict from")
    if args.top_k < 1:
        raise ArgumentError(f"--top-k {args.top_k}: must be at least 1")
    if args.heatmap is not None and not args.heatmap.parent.is_dir():
        raise ArgumentError(f"--heatmap {args.heatmap}: directory {args.heatmap.parent} does not exist")
    return Inputs(args.image, tuple(args.text), args.image2, args.top_k)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """Check, load, predict: the result `main` prints (the `--json` object)."""
    inputs = check_arguments(args)
    device = run_device(args.device)
    task = args.task or infer_task(inputs, heads=None)
    if task is not None:
        MODES[task].check(inputs)
    # Reading a checkpoint imports the tasks, objectives and Accelerate: the argument errors above
    # are reported before that wait.
    from ..build.task import read_checkpoint

    checkpoint = read_checkpoint(args.checkpoint)
    if task is None:  # ITM or VQA: the checkpoint's heads decide
        task = infer_task(inputs, heads=checkpoint.heads)
        MODES[task].check(inputs)
    mode = MODES[task]
    require_head(checkpoint, mode.head, args.checkpoint, task)
    settings = input_settings(args.checkpoint, args.tokenizer, args.shorter, args.longer)
    predictor = Predictor.load(checkpoint, args.checkpoint, settings, device)
    result: dict[str, Any] = {
        "task": task,
        "checkpoint": str(args.checkpoint),
        "image": str(inputs.image),
        **({"image2": str(inputs.image2)} if inputs.image2 is not None else {}),
        "predictions": mode.predict(predictor, inputs),
    }
    if args.heatmap is not None:
        text = inputs.texts[0]
        result["heatmap"] = {"text": text, "path": str(predictor.heatmap(inputs.image, text, args.heatmap))}
    return result


def render(result: dict[str, Any]) -> str:
    """The result as a table under a line saying what was predicted from what."""
    mode = MODES[result["task"]]
    images = result["image"] + (f" + {result['image2']}" if "image2" in result else "")
    lines = [
        f"{result['task']}: {images} (checkpoint {result['checkpoint']})",
        "",
        format_table(mode.columns, mode.rows(result["predictions"])),
    ]
    if "heatmap" in result:
        heatmap = result["heatmap"]
        lines += ["", f"word-patch alignment of {heatmap['text']!r}: {heatmap['path']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = predict(args)
    # Argument, head, image and checkpoint errors are ValueErrors; missing files OSErrors.
    except (KeyError, OSError, UnsafeCheckpointError, ValueError) as err:
        print(f"vilt-predict: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0
