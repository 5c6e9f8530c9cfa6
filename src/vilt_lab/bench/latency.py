"""Latency of ViLT's visual embedding + transformer at batch 1: the timing of the paper's Table 6.

The paper (Sec. 4.6) times the visual embedder and the transformer, not the text embedder, on a
384x640 image, averaged over 10K runs on an NVIDIA P40: ~15 ms for ViLT-B/32. Here the 40-token
text is embedded once, outside the clock; each timed call embeds the image (patch projection,
position table, modality type; all 240 patches kept, as in fine-tuning) and runs the blocks and
the final norm over 40 + 1 + 240 tokens, in eval mode under `torch.inference_mode`. It reports the
median over the repeats after warm-up calls, and their mean (the paper's statistic), on the
machine at hand: the CUDA GPU when there is one (synchronised around every call), else the CPU.
Random weights: the time depends on the shapes, not on what the weights hold.

`--compile` times the backbone as `trainer.compile=true` builds it (`compile_backbone`: the
blocks and the visual embedding, here in one graph since every patch is kept), with static shapes
(one image, one text length); `--compile-mode reduce-overhead` replays CUDA graphs. The warm-up
calls include the compile (the first call) and a CUDA graph's recording, so at least
`COMPILED_WARMUP` of them; the result says `compiled` and `compile_mode`.

    python -m vilt_lab.bench latency                        # base32, float32, the GPU if any
    python -m vilt_lab.bench latency --device cpu --repeats 5 --json        # JSON printed
    python -m vilt_lab.bench latency --json latency.json                    # JSON written, line printed
    python -m vilt_lab.bench latency --compile --compile-mode reduce-overhead --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vilt_lab.bench.hardware import describe_hardware, hardware_line
from vilt_lab.measure.dummy_inputs import TABLE6_IMAGE_HW, TABLE6_TEXT_LEN, dummy_inputs, parse_image_size
from vilt_lab.model.backbone import ViltBackbone
from vilt_lab.model.config import SIZES, get_config
from vilt_lab.training.speed_levers import compile_backbone

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (warm-up calls, timed calls) per device type: a CPU forward of base32 takes a second or more
# (the whole table stays within a minute or two), a GPU one milliseconds, so it can afford many
# and needs them to settle its clocks and caches.
DEFAULT_CALLS = {"cpu": (2, 10), "cuda": (50, 500)}
# Warm-up calls a compiled backbone needs at least before its calls time what they repeat: the
# first compiles, and with CUDA graphs (reduce-overhead) the next ones warm up and record.
COMPILED_WARMUP = 3


@dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per call (median, mean, fastest) and what was timed, on what."""

    median_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int
    dtype: str
    image_hw: tuple[int, int]
    text_tokens: int
    image_patches: int
    hardware: dict[str, str | int | float]
    compiled: bool = False
    compile_mode: str | None = None  # torch.compile's mode when compiled (None: its default)

    def line(self) -> str:
        """The result in one line: median, mean, shapes, dtype, compiled or not, hardware."""
        height, width = self.image_hw
        warmup = f"{self.warmup} warm-up"
        if self.compiled:
            warmup += f" (the compile among them), compiled, mode {self.compile_mode or 'default'}"
        return (
            f"visual embedding + transformer, B=1, {height}x{width} ({self.image_patches} patches) + "
            f"{self.text_tokens} text tokens: median {self.median_ms:.2f} ms, mean {self.mean_ms:.2f} ms "
            f"over {self.repeats} calls after {warmup}, {self.dtype}, {self.hardware['device']}: "
            f"{hardware_line(self.hardware)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_device() -> torch.device:
    """The CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def time_visual_embedding_and_transformer(
    backbone: ViltBackbone,
    text_tokens: torch.Tensor,
    text_mask: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor,
    warmup: int,
    repeats: int,
) -> list[float]:
    """Seconds per call of image embedding + `encode`, after `warmup` untimed calls."""
    device = pixel_values.device

    def synchronize() -> None:
        # CUDA kernels run asynchronously: without waiting, the clock would time their launch only.
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Read once, before the clock: with every text token and pixel real (Table 6's input), no
    # position is padding and attention runs without a mask; the image's patch count is then its
    # whole grid, known here, so patch selection needs no host sync (`max_patches`), as the
    # training step's collate-known counts spare it one.
    unpadded = bool(text_mask.all()) and bool(pixel_mask.all())
    patch = backbone.config.patch_size
    whole_grid = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch) if unpadded else None

    def call() -> None:
        image, image_mask, _ = backbone.image_tokens(pixel_values, pixel_mask, max_patches=whole_grid)
        backbone.encode(text_tokens, text_mask, image, image_mask, unpadded=unpadded)

    seconds = []
    for i in range(warmup + repeats):
        synchronize()
        start = time.perf_counter()
        call()
        synchronize()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def measure_latency(
    backbone: ViltBackbone,
    device: torch.device,
    dtype: str = "float32",
    warmup: int | None = None,
    repeats: int | None = None,
    image_hw: tuple[int, int] = TABLE6_IMAGE_HW,
    text_len: int = TABLE6_TEXT_LEN,
    compile_options: dict[str, Any] | None = None,
) -> LatencyResult:
    """Time `backbone` (moved to `device` and `dtype`, put in eval mode) at batch 1.

    warmup, repeats: untimed and timed calls; None takes `DEFAULT_CALLS` for the device type
    (compiled: at least `COMPILED_WARMUP` warm-up calls).
    compile_options: `torch.compile` arguments (`mode`, a `backend`) to time the backbone compiled
        by `compile_backbone` with static shapes; None times it eager.
    """
    if device.type not in DEFAULT_CALLS:
        # Other accelerators run asynchronously too, and only CUDA is synchronised around each call.
        raise ValueError(f"times a CPU or a CUDA GPU, not {device.type!r}")
    default_warmup, default_repeats = DEFAULT_CALLS[device.type]
    compiled = compile_options is not None
    least_warmup = COMPILED_WARMUP if compiled else 0
    warmup = max(default_warmup, least_warmup) if warmup is None else warmup
    repeats = default_repeats if repeats is None else repeats
    if repeats < 1 or warmup < least_warmup:
        raise ValueError(
            f"need repeats >= 1 and warmup >= {least_warmup}{' (compiled)' if compiled else ''}, "
            f"got {repeats} and {warmup}"
        )
    backbone.to(device=device, dtype=DTYPES[dtype]).eval()
    if compiled:
        compile_backbone(backbone, dynamic=False, **compile_options)
    inputs = dummy_inputs(backbone.config, image_hw, text_len).to(device, DTYPES[dtype])
    # Described before timing, so the load average does not include the timing itself.
    hardware = describe_hardware(device)
    with torch.inference_mode():
        text_tokens = backbone.embed_text(inputs.input_ids)  # the text embedder is not timed
        seconds = time_visual_embedding_and_transformer(
            backbone,
            text_tokens,
            inputs.attention_mask,
            inputs.pixel_values,
            inputs.pixel_mask,
            warmup,
            repeats,
        )
    patch = backbone.config.patch_size
    milliseconds = [s * 1e3 for s in seconds]
    return LatencyResult(
        median_ms=statistics.median(milliseconds),
        mean_ms=statistics.fmean(milliseconds),
        min_ms=min(milliseconds),
        repeats=repeats,
        warmup=warmup,
        dtype=dtype,
        image_hw=image_hw,
        text_tokens=text_len,
        image_patches=(image_hw[0] // patch) * (image_hw[1] // patch),
        hardware=hardware,
        compiled=compiled,
        compile_mode=(compile_options or {}).get("mode"),
    )


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how to time: the options this benchmark shares with `table6`."""
    parser.add_argument(
        "--device", type=torch.device, default=None, help="default: cuda if available, else cpu"
    )
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=None, help=f"untimed calls (default {DEFAULT_CALLS})")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options: the timing ones, the model size, the image, the output format."""
    add_timing_arguments(parser)
    parser.add_argument("--size", default="base32", choices=sorted(SIZES))
    parser.add_argument("--image", type=parse_image_size, default=TABLE6_IMAGE_HW, help="HxW pixels")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="the result as JSON: printed, or written to PATH (the line is printed then)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time the backbone compiled as trainer.compile=true compiles it",
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile's mode with --compile, e.g. reduce-overhead (CUDA graphs); default: torch's",
    )


def compile_options_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """`measure_latency`'s compile options from `--compile` and `--compile-mode`."""
    if args.compile_mode is not None and not args.compile:
        raise ValueError(f"--compile-mode {args.compile_mode} needs --compile")
    return {"mode": args.compile_mode} if args.compile else None


def latency_from_args(
    args: argparse.Namespace,
    backbone: ViltBackbone,
    image_hw: tuple[int, int] = TABLE6_IMAGE_HW,
    compile_options: dict[str, Any] | None = None,
) -> LatencyResult:
    """`measure_latency` with the options of `add_timing_arguments` (threads set first)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    return measure_latency(
        backbone, device, args.dtype, args.warmup, args.repeats, image_hw, compile_options=compile_options
    )


def run(args: argparse.Namespace) -> LatencyResult:
    """Time the chosen size and print the result: one line, or JSON with `--json` (written to its
    path when one is given, the line printed)."""
    result = latency_from_args(
        args, ViltBackbone(get_config(args.size)), args.image, compile_options_from_args(args)
    )
    text = json.dumps(result.to_dict(), indent=2)
    if args.json not in (None, "-"):
        Path(args.json).write_text(text + "\n")
    print(text if args.json == "-" else result.line(), flush=True)
    return result
