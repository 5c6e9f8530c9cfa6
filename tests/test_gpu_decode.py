"""data.decode=gpu: the workers read JPEG headers, the device decodes, and the batch has the CPU
path's layout. On the CPU, torchvision's CPU decode_jpeg stands in for nvJPEG (it is
libjpeg-turbo with the CPU path's settings: the same pixels); the device itself is a gpu test."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from helpers.images import encode_image
from vilt_lab.bench.loader import synthetic_jpeg
from vilt_lab.data import device_decode
from vilt_lab.data.collate import ItemCollator
from vilt_lab.data.device_decode import (
    DEFERRED,
    JPEGS,
    collect_jpegs,
    decode_on_device,
    decode_or_defer,
    decodes_on_device,
    resize_float,
)
from vilt_lab.data.pipeline import LoaderConfig, build_eval_loader
from vilt_lab.data.transforms import MinMaxResize, resize_bicubic
from vilt_lab.evaluation.loop import to_device

RESIZE = MinMaxResize(384, 640, 32)
SHAPES = LoaderConfig(batch_size=8, image_shorter=96, image_longer=160, patch_size=16)
# (width, height): shrunk, stretched to the longer-side cap, enlarged, already a patch multiple.
SIZES = [(640, 480), (500, 333), (300, 700), (200, 150), (512, 384)]


@pytest.fixture(name="no_cuda")
def without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device_decode._warn_no_cuda.cache_clear()
    yield
    device_decode._warn_no_cuda.cache_clear()


def jpegs(sizes) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [synthetic_jpeg(rng, size) for size in sizes]


def assert_same_layout_and_pixels(ours: dict, cpu: dict, max_difference: int) -> None:
    """The same layout as the CPU path's batch; pixels within the float resize's rounding."""
    assert ours["image"].shape == cpu["image"].shape and ours["image"].dtype == torch.uint8
    assert torch.equal(ours["pixel_mask"].cpu(), cpu["pixel_mask"])
    difference = (ours["image"].cpu().int() - cpu["image"].int()).abs()
    assert int(difference.max()) <= max_difference, int(difference.max())
    assert float((difference > 0).float().mean()) < 0.02
    assert not bool(difference[~cpu["pixel_mask"].unsqueeze(-3).expand_as(difference)].any())  # zero padding


# ------------------------------------------------------------------ the choice and its fallback
def test_gpu_without_cuda_falls_back_to_the_cpu_with_one_warning(no_cuda) -> None:
    with pytest.warns(UserWarning, match=r"data.decode=gpu without a CUDA device") as caught:
        assert decodes_on_device("gpu") is False
        assert decodes_on_device("gpu") is False
    assert len([w for w in caught if "data.decode" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decodes_on_device("cpu") is False
    with pytest.raises(ValueError, match="data.decode='npu'"):
        decodes_on_device("npu")


def test_the_fallback_stream_is_the_cpu_stream(no_cuda, shapes_world: Path, shapes_tokenizer) -> None:
    val = shapes_world / "pretrain" / "val"
    with pytest.warns(UserWarning, match="data.decode=gpu"):
        fallback = list(build_eval_loader(val, shapes_tokenizer, replace(SHAPES, decode="gpu")))
    cpu = list(build_eval_loader(val, shapes_tokenizer, SHAPES))
    assert len(fallback) == len(cpu)
    for a, b in zip(fallback, cpu, strict=True):
        assert JPEGS not in a
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["pixel_mask"], b["pixel_mask"])


# ------------------------------------------------------------------ the device path, on the CPU
def test_the_float_resize_is_the_cpu_resize_within_rounding() -> None:
    """Fed the same decoded image, the device's resize gives the CPU path's tensor (to the uint8
    kernel's fixed-point rounding); one float pass over both sides would be up to 7 levels off."""
    for data, size in zip(jpegs(SIZES), SIZES, strict=True):
        pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        assert pixels.shape[1:] == (size[1], size[0])
        target = RESIZE.size(*size)
        cpu, ours = resize_bicubic(pixels, target), resize_float(pixels, target)
        assert ours.shape == cpu.shape and ours.dtype == torch.uint8
        difference = (ours.int() - cpu.int()).abs()
        assert int(difference.max()) <= 2 and float((difference > 0).float().mean()) < 0.02, size


def collate(items: list[dict], tokenizer, on_device: bool) -> dict:
    steps = (collect_jpegs,) if on_device else ()
    return ItemCollator(tokenizer, 40, "longest", steps)(items)


def items_of(payloads: list[list[bytes]], on_device: bool) -> list[dict]:
    """Items of one or several images as the worker makes them (``ItemDecoder``'s loop)."""
    items = []
    for images in payloads:
        decoded, deferred = [], []
        for index, data in enumerate(images):
            pixels, jpeg = decode_or_defer(data, RESIZE, None, on_device)
            decoded.append(pixels)
            if jpeg is not None:
                deferred.append((index, jpeg))
        item = {"image": decoded[0]} if len(images) == 1 else {"images": decoded}
        items.append({**item, "text": "a red square", **({DEFERRED: deferred} if deferred else {})})
    return items


@pytest.mark.parametrize("per_item", [1, 2])
def test_decoded_on_the_device_the_batch_has_the_cpu_layout(per_item: int, shapes_tokenizer) -> None:
    """Single images and NLVR2's pairs, of different sizes, with a PNG the worker still decodes:
    each JPEG lands in its own slot, resized, padded and masked as the CPU path's."""
    data = jpegs(SIZES)
    data[1] = encode_image((333, 222), fmt="PNG")
    payloads = [data[i : i + per_item] for i in range(0, len(data) - per_item + 1, per_item)]
    cpu = collate(items_of(payloads, on_device=False), shapes_tokenizer, on_device=False)
    handed_over = collate(items_of(payloads, on_device=True), shapes_tokenizer, on_device=True)

    jpegs_left = handed_over[JPEGS]
    png_slot = 1
    assert png_slot not in jpegs_left.slots and len(jpegs_left.slots) == sum(map(len, payloads)) - 1
    placeholders = handed_over["image"].flatten(0, -4)[list(jpegs_left.slots)]
    assert not placeholders.any()  # nothing decoded in the worker but the PNG
    decoded = decode_on_device(to_device(handed_over, torch.device("cpu")))
    assert JPEGS not in decoded
    assert_same_layout_and_pixels(decoded, cpu, max_difference=2)


def test_augmented_streams_decode_in_the_worker() -> None:
    pixels, jpeg = decode_or_defer(jpegs([(640, 480)])[0], RESIZE, lambda image: image, on_device=True)
    assert jpeg is None and pixels.shape == (3, 384, 512) and pixels.any()


def test_a_jpeg_the_device_refuses_is_decoded_on_the_cpu(monkeypatch, shapes_tokenizer) -> None:
    import torchvision.io

    def refuse(*args, **kwargs):
        raise RuntimeError("nvjpeg: bad data")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    payloads = [[data] for data in jpegs(SIZES[:2])]
    cpu = collate(items_of(payloads, on_device=False), shapes_tokenizer, on_device=False)
    handed_over = collate(items_of(payloads, on_device=True), shapes_tokenizer, on_device=True)
    assert_same_layout_and_pixels(decode_on_device(handed_over), cpu, max_difference=2)


# ------------------------------------------------------------------ the device itself
@pytest.mark.gpu
def test_nvjpeg_batches_have_the_cpu_layout(shapes_tokenizer) -> None:
    """On the GPU: nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, so pixels may
    differ by a few grey levels; the layout may not differ at all."""
    payloads = [[data] for data in jpegs(SIZES)]
    cpu = collate(items_of(payloads, on_device=False), shapes_tokenizer, on_device=False)
    handed_over = collate(items_of(payloads, on_device=True), shapes_tokenizer, on_device=True)
    decoded = to_device(handed_over, torch.device("cuda"))
    assert decoded["image"].is_cuda and JPEGS not in decoded
    assert decoded["image"].shape == cpu["image"].shape and decoded["image"].dtype == torch.uint8
    assert torch.equal(decoded["pixel_mask"].cpu(), cpu["pixel_mask"])
    difference = (decoded["image"].cpu().float() - cpu["image"].float()).abs()
    assert float(difference.mean()) < 2.0, (float(difference.mean()), float(difference.max()))
