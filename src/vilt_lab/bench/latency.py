"""Latency of ViLT's visual embedding + transformer at batch 1: the timing of the paper's Table 6.

The paper (Sec. 4.6) times the visual embedder and the transformer, not the text embedder, on a
384x640 image, averaged over 10K runs on an NVIDIA P40: ~15 ms for ViLT-B/32. Here the 40-token
text is embedded once, outside the clock; each timed call embeds the image (patch projection,
position table, modality type; all 240 patches kept, as in fine-tuning) and runs the blocks and
the final norm over 40 + 1 + 240 tokens, in eval mode under `torch.inference_mode`. It reports the
median over the repeats after warm-up calls, and their mean (the paper's statistic), on the
machine at hand: the CUDA GPU when there is one (synchronised around every call), else the CPU.
Random weights: the time depends on the shapes, not on what the weights hold.

    python -m vilt_lab.bench latency                        # base32, float32, the GPU if any
    python -m vilt_lab.bench latency --device cpu --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from vilt_lab.bench.hardware import describe_hardware, hardware_line
from vilt_lab.measure.dummy_inputs import TABLE6_IMAGE_HW, TABLE6_TEXT_LEN, dummy_inputs, parse_image_size
from vilt_lab.model.backbone import ViltBackbone
from vilt_lab.model.config import SIZES, get_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (warm-up calls, timed calls) per device type: a CPU forward of base32 takes a second or more
# (the whole table stays within a minute or two), a GPU one milliseconds, so it can afford many
# and needs them to settle its clocks and caches.
DEFAULT_CALLS = {"cpu": (2, 10), "cuda": (50, 500)}


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

    def line(self) -> str:
        """The result in one line: median, mean, shapes, dtype, hardware."""
        height, width = self.image_hw
        return (
            f"visual embedding + transformer, B=1, {height}x{width} ({self.image_patches} patches) + "
            f"{self.text_tokens} text tokens: median {self.median_ms:.1f} ms, mean {self.mean_ms:.1f} ms "
            f"over {self.repeats} calls after {self.warmup} warm-up, {self.dtype}, {self.hardware['device']}: "
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
) -> LatencyResult:
    """Time `backbone` (moved to `device` and `dtype`, put in eval mode) at batch 1.

    warmup, repeats: untimed and timed calls; None takes `DEFAULT_CALLS` for the device type.
    """
    if device.type not in DEFAULT_CALLS:
        # Other accelerators run asynchronously too, and only CUDA is synchronised around each call.
        raise ValueError(f"times a CPU or a CUDA GPU, not {device.type!r}")
    default_warmup, default_repeats = DEFAULT_CALLS[device.type]
    warmup = default_warmup if warmup is None else warmup
    repeats = default_repeats if repeats is None else repeats
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    backbone.to(device=device, dtype=DTYPES[dtype]).eval()
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def latency_from_args(
    args: argparse.Namespace, backbone: ViltBackbone, image_hw: tuple[int, int] = TABLE6_IMAGE_HW
) -> LatencyResult:
    """`measure_latency` with the options of `add_timing_arguments` (threads set first)."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    return measure_latency(backbone, device, args.dtype, args.warmup, args.repeats, image_hw)


def run(args: argparse.Namespace) -> LatencyResult:
    """Time the chosen size and print the result (one line, or JSON with `--json`)."""
    result = latency_from_args(args, ViltBackbone(get_config(args.size)), args.image)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.line(), flush=True)
    return result
