"""``data.decode=cpu`` against ``data.decode=gpu`` on the loader benchmark's 640x480 JPEGs.

For each path, the loader's work on one core (one process, one thread, no workers: what one
worker costs), in samples/s, and so the cores that 1500 samples/s need; `to_device`'s rate
(synchronised: the copy, and on the GPU path the decode and resize) and the host syncs one
`to_device` makes (it runs inside the training step; counted are those PyTorch's sync debug
mode sees, while torchvision's nvJPEG decoder also waits on its own stream with a plain CUDA
call); and how the two paths' batches of the same samples compare: the same layout (shapes,
dtype, pixel_mask) and the largest and mean pixel difference. Writes every figure to ``--json``.

Without CUDA the GPU path falls back to the CPU one (``"on_device": false``): that is the CPU
dry run of bench/gpu_check.sh, which checks this driver and its output, not the figures.

    PYTHONPATH=src python bench/decode_rate.py --json decode.json [--images 256 --batches 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from sync_sites import sync_sites  # bench/, beside this script

from vilt_lab.bench.loader import bench_tokenizer, write_bench_shards
from vilt_lab.data.device_decode import decodes_on_device
from vilt_lab.data.pipeline import LoaderConfig, Source, build_train_loader
from vilt_lab.data.shards import iter_samples
from vilt_lab.evaluation.loop import to_device

TARGET_SAMPLES_PER_S = 1500


def loader_rate(batches: Iterator[dict[str, Any]], count: int) -> tuple[float, list[dict[str, Any]]]:
    """Samples/s of pulling ``count`` batches on this core, and the batches."""
    start = time.perf_counter()
    pulled = [next(batches) for _ in range(count)]
    seconds = time.perf_counter() - start
    return sum(len(b["input_ids"]) for b in pulled) / seconds, pulled


def device_rate(batches: list[dict[str, Any]], device: torch.device) -> tuple[float, list[dict[str, Any]]]:
    """Images/s of `to_device` (the copy, and the decode where JPEGs were left to the device)."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    to_device(batches[0], device)  # warm-up: nvJPEG's handles, the first kernels
    synchronize()
    start = time.perf_counter()
    moved = [to_device(batch, device) for batch in batches[1:] or batches]
    synchronize()
    images = sum(len(b["input_ids"]) for b in batches[1:] or batches)
    return images / (time.perf_counter() - start), moved


def compare(cpu: dict[str, Any], gpu: dict[str, Any]) -> dict[str, Any]:
    """The same samples through both paths: layout equal, pixel differences."""
    same_layout = (
        cpu["image"].shape == gpu["image"].shape
        and cpu["image"].dtype == gpu["image"].dtype
        and torch.equal(cpu["pixel_mask"], gpu["pixel_mask"].cpu())
    )
    if not same_layout:
        return {"same_layout": False, "shapes": [list(cpu["image"].shape), list(gpu["image"].shape)]}
    difference = (cpu["image"].int() - gpu["image"].cpu().int()).abs()
    return {
        "same_layout": True,
        "max_abs_difference": int(difference.max()),
        "mean_abs_difference": float(difference.float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs in the shards")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="batches timed per path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="vilt-decode-") as tmp:
        shards = write_bench_shards(Path(tmp) / "shards", args.images)
        texts = [text for _, _, meta in iter_samples(shards) for text in meta["captions"]]
        tokenizer, _ = bench_tokenizer(texts, Path(tmp))
        figures: dict[str, Any] = {
            "device": str(device),
            "images": args.images,
            "batch_size": args.batch_size,
        }
        first = {}
        for decode in ("cpu", "gpu"):
            config = LoaderConfig(
                batch_size=args.batch_size,
                shuffle_buffer=args.images,
                shuffle_initial=args.images,
                pin_memory=device.type == "cuda",  # as a training run's loader
                decode=decode,
            )
            batches = iter(build_train_loader(Source(shards), tokenizer, config))
            next(batches)  # warm-up: the shuffle buffer, the first tokenizer call
            per_core, pulled = loader_rate(batches, args.batches)
            on_device_rate, moved = device_rate(pulled, device)
            first[decode] = moved[0]
            figures[decode] = {
                "on_device": decodes_on_device(decode),
                "loader_samples_per_s_per_core": per_core,
                "cores_for_target": TARGET_SAMPLES_PER_S / per_core,
                "to_device_images_per_s": on_device_rate,
                # Inside the training step: a sync here would stall every step (null: no CUDA).
                "to_device_syncs": sync_sites(lambda batch=pulled[0]: to_device(batch, device)),
            }
        figures["agreement"] = compare(first["cpu"], first["gpu"])
    figures["target_samples_per_s"] = TARGET_SAMPLES_PER_S
    args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
