"""Loader throughput: our sample pipeline against HF's ViltImageProcessor, images/s on one core.

* Ours: 640x480 JPEGs read from WebDataset shards, decoded, MinMaxResize(384, 639) (bicubic), a
  caption picked, tokenized to 40, whole-word masked, padded into a uint8 batch: the code a loader
  worker runs (here in this process), up to the batch it hands to training.
* HF: the same JPEG bytes decoded by PIL and passed to ``transformers.ViltImageProcessor`` with
  its defaults (resize to shorter 384 / longer 639 / multiple of 32, bicubic, rescale, normalise
  0.5/0.5, pad), one image per call: image processing alone, no text. In transformers 5 that
  class runs on torchvision (the same antialiased bicubic kernel as ours); its PIL/NumPy
  backend ``ViltImageProcessorPil`` (transformers 4's ``ViltImageProcessor``) is timed too.

Normalisation is on HF's side of the result but not on ours, because that is where each pipeline
does it: HF's processor returns float32 pixels, our batches stay uint8 until training has copied
them to the device (4x less to copy) and normalise there (``normalize_images`` in the model's
forward). Normalising our batches on the CPU as well (what a CPU-only run pays, in the training
process) is timed apart, on the same batches, and reported with its ratio on its own line.

It also times ours on the same images pre-resized at conversion (``vilt-shards ...
--resize-shorter 384``: 512x384 JPEGs, so the loader only decodes): not the benchmark's result,
which is about 640x480 shards, but what that conversion option buys.

All run on one thread, alternating in rounds so that load from other processes on the machine
falls on each alike. The last line printed is ``ours N images/s/core, HF M, ratio R.RRx``.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase, ViltImageProcessor, ViltImageProcessorPil

from vilt_lab.data.normalize import normalize_images
from vilt_lab.data.pipeline import LoaderConfig, Source, build_train_loader
from vilt_lab.data.shards import ShardWriter, iter_samples
from vilt_lab.data.sources.images import ImagePolicy, clean_image
from vilt_lab.data.sources.shapes import captions, sample_scene
from vilt_lab.data.tokenizer import load_tokenizer, train_wordpiece
from vilt_lab.data.transforms import MinMaxResize, decode_image

IMAGE_SIZE = (640, 480)
JPEG_QUALITY = 90
PAPER_TOKENIZER = "bert-base-uncased"
LOCAL_VOCAB_SIZE = 1000
NOISE_STD = 40.0


@dataclass(frozen=True)
class LoaderBenchResult:
    """Images per second on one core: ours (full sample pipeline, uint8 batches), ours followed
    by normalising each batch on the CPU, HF's ViltImageProcessor and its PIL backend (image
    processing alone), and ours on shards pre-resized at conversion."""

    ours: float
    ours_cpu_normalised: float
    hf: float
    hf_pil: float
    ours_preresized: float

    @property
    def ratio(self) -> float:
        return self.ours / self.hf

    def line(self) -> str:
        return f"ours {self.ours:.0f} images/s/core, HF {self.hf:.0f}, ratio {self.ratio:.2f}x"


def synthetic_jpeg(rng: np.random.Generator, size: tuple[int, int] = IMAGE_SIZE) -> bytes:
    """A horizontal grey ramp with Gaussian noise (std 40) as a quality-90 JPEG.

    The noise leaves many non-zero DCT coefficients, so decoding costs at least what it costs on
    a photo of the same size (entropy decoding dominates): a flat test image would flatter both.
    """
    width, height = size
    ramp = np.linspace(0.0, 255.0, width)[None, :, None]
    pixels = ramp + rng.normal(0.0, NOISE_STD, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_bench_shards(
    out: Path, num_images: int, seed: int = 0, maxcount: int = 64, resize_shorter: int | None = None
) -> Path:
    """``num_images`` synthetic 640x480 JPEGs with shapes-world captions, as shards in ``out``;
    with ``resize_shorter``, each is pre-resized as ``vilt-shards --resize-shorter`` does."""
    text_rng, pixel_rng = random.Random(seed), np.random.default_rng(seed)
    policy = ImagePolicy(resize_shorter=resize_shorter)
    with ShardWriter(out, source="bench", split="train", maxcount=maxcount, overwrite=True) as writer:
        for i in range(num_images):
            texts = captions(sample_scene(text_rng), text_rng)
            image = synthetic_jpeg(pixel_rng)
            if resize_shorter is not None:
                image = clean_image(image, policy).data
            writer.write(f"img{i:06d}", [image], {"id": str(i), "captions": texts})
    return out


def bench_tokenizer(texts: list[str], work_dir: Path) -> tuple[PreTrainedTokenizerBase, str]:
    """``bert-base-uncased`` from the local HF cache, or else a BERT-like WordPiece trained here.

    Never touches the network (the cache lookup runs with ``HF_HUB_OFFLINE=1``); returns the
    tokenizer and a note saying which one it is. Tokenizing costs about the same with either:
    both are the same Rust WordPiece model with BERT's normaliser and pre-tokenizer.
    """
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return load_tokenizer(PAPER_TOKENIZER), f"{PAPER_TOKENIZER} (from the HF cache)"
    except OSError:
        local = work_dir / "tokenizer"
        train_wordpiece(texts, local, vocab_size=LOCAL_VOCAB_SIZE)
        note = f"a local WordPiece of {LOCAL_VOCAB_SIZE} pieces ({PAPER_TOKENIZER} is not in the HF cache)"
        return load_tokenizer(local), note
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _ours(batches: Iterator[dict], num_images: int) -> tuple[int, float, float]:
    """Pull batches until ``num_images`` are done; returns (images, seconds, seconds it then took
    to normalise those batches on the CPU, which training leaves to the device)."""
    done, pulling, normalising = 0, 0.0, 0.0
    while done < num_images:
        start = time.perf_counter()
        batch = next(batches)
        pulled = time.perf_counter()
        normalize_images(batch["image"], batch["pixel_mask"])
        pulling += pulled - start
        normalising += time.perf_counter() - pulled
        done += len(batch["input_ids"])
    return done, pulling, normalising


def _hf(
    processor: ViltImageProcessor | ViltImageProcessorPil, blobs: Iterator[bytes], num_images: int
) -> tuple[int, float]:
    """Decode and process ``num_images`` images one per call; returns (images, seconds)."""
    start = time.perf_counter()
    for _ in range(num_images):
        with Image.open(io.BytesIO(next(blobs))) as image:
            processor(images=[image.convert("RGB")], return_tensors="pt")
    return num_images, time.perf_counter() - start


def parity(blob: bytes, processor: ViltImageProcessor, resize: MinMaxResize) -> tuple[tuple[int, ...], float]:
    """Our normalised image and HF's ``pixel_values`` for the same JPEG: their shape (they must
    agree) and the largest absolute difference, so the two pipelines are seen to do the same work."""
    ours = decode_image(blob, resize)[None]
    ours = normalize_images(ours, torch.ones(ours.shape[0], *ours.shape[2:], dtype=torch.bool))
    with Image.open(io.BytesIO(blob)) as image:
        theirs = processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
    if ours.shape != theirs.shape:
        raise RuntimeError(f"ours gives {tuple(ours.shape)}, HF {tuple(theirs.shape)} for the same image")
    return tuple(ours.shape[1:]), float((ours - theirs).abs().max())


def benchmark_loader(
    num_images: int, batch_size: int, seconds: float, work_dir: Path, log: Callable[[str], None] = print
) -> LoaderBenchResult:
    """Write the shards, warm every pipeline up, then alternate them in rounds of
    ``2 x batch_size`` images each until ``seconds`` of measuring have passed (at least one round)."""
    torch.set_num_threads(1)
    shards = write_bench_shards(work_dir / "shards", num_images)
    blobs = [images[0] for _, images, _ in iter_samples(shards)]
    texts = [text for _, _, meta in iter_samples(shards) for text in meta["captions"]]
    tokenizer, tokenizer_note = bench_tokenizer(texts, work_dir)
    config = LoaderConfig(batch_size=batch_size, shuffle_buffer=2 * batch_size, shuffle_initial=batch_size)
    batches = iter(build_train_loader(Source(shards), tokenizer, config))
    preresized_shards = write_bench_shards(
        work_dir / "shards_preresized", num_images, resize_shorter=config.image_shorter
    )
    preresized_batches = iter(build_train_loader(Source(preresized_shards), tokenizer, config))
    processor, pil_processor = ViltImageProcessor(), ViltImageProcessorPil()
    shape, difference = parity(blobs[0], processor, MinMaxResize(config.image_shorter, config.image_longer))
    log(
        f"{num_images} JPEGs {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} in shards, batch {batch_size}, 1 thread, tokenizer: {tokenizer_note}"
    )
    log(f"same image through both: {shape}, largest difference after normalisation {difference:.4f}")
    log(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )

    round_images = 2 * batch_size
    hf_blobs = cycle(blobs)
    _ours(batches, batch_size)  # warm-up: fills the shuffle buffer, first tokenizer call
    _ours(preresized_batches, batch_size)
    _hf(processor, hf_blobs, 2)
    _hf(pil_processor, hf_blobs, 2)
    totals = {name: [0, 0.0] for name in LoaderBenchResult.__dataclass_fields__}
    rounds, start = 0, time.perf_counter()
    while rounds == 0 or time.perf_counter() - start < seconds:
        images, pulling, normalising = _ours(batches, round_images)
        for name, (count, took) in (
            ("ours", (images, pulling)),
            ("ours_cpu_normalised", (images, pulling + normalising)),
            ("hf", _hf(processor, hf_blobs, round_images)),
            ("hf_pil", _hf(pil_processor, hf_blobs, round_images)),
            ("ours_preresized", _ours(preresized_batches, round_images)[:2]),
        ):
            totals[name][0] += count
            totals[name][1] += took
        rounds += 1
    log(f"{rounds} rounds; load average now {os.getloadavg()[0]:.2f} (other processes share these cores)")
    result = LoaderBenchResult(**{name: count / took for name, (count, took) in totals.items()})
    log(
        f"HF ViltImageProcessorPil (PIL/NumPy backend): {result.hf_pil:.0f} images/s/core, ours {result.ours / result.hf_pil:.2f}x"
    )
    log(
        f"ours normalising on the CPU too (training does it on the device): {result.ours_cpu_normalised:.0f} "
        f"images/s/core, ratio {result.ours_cpu_normalised / result.hf:.2f}x"
    )
    log(
        f"ours on shards pre-resized at conversion (--resize-shorter {config.image_shorter}): "
        f"{result.ours_preresized:.0f} images/s/core, {result.ours_preresized / result.hf:.2f}x HF on the originals"
    )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--images", type=int, default=256, help="distinct JPEGs written to the shards")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per batch (ours)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring time, all pipelines together")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where to write the shards (default: a temp dir)"
    )
    parser.add_argument("--tiny", action="store_true", help="8 images, batches of 4, one round (for tests)")


def run(args: argparse.Namespace) -> LoaderBenchResult:
    """Run the benchmark from parsed options and print the result as the last line."""
    num_images, batch_size, seconds = (
        (8, 4, 0.0) if args.tiny else (args.images, args.batch_size, args.seconds)
    )
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"--images and --batch-size must be positive, got {num_images} and {batch_size}")
    with tempfile.TemporaryDirectory(prefix="vilt-bench-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        result = benchmark_loader(num_images, batch_size, seconds, work_dir)
    print(result.line(), flush=True)
    return result
