"""JPEG decoding on the GPU (``data.decode=gpu``): the workers read headers, the device decodes.

The CPU path decodes and resizes every image in the loader workers
(:func:`vilt_lab.data.transforms.decode_image`), about 300 images/s per core on 640x480 JPEGs, so
feeding 1500 samples/s takes 4-5 cores per GPU. With ``data.decode=gpu`` a worker reads a JPEG's
header only (the converter's size rules, MinMaxResize's target size) and hands the encoded bytes
on; in the batch, the image's slot is padded and masked exactly as the decoded image's would be
(its placeholder has the target size), and after the host-to-device copy
:func:`decode_on_device` decodes the batch's JPEGs with nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``), resizes each one (bicubic, antialiased) and
writes it into its slot. The batch keeps the CPU path's layout: uint8 (B, 3, H, W) or
(B, k, 3, H, W), RGB, each image at the top-left of its slot, zero padding, the same
``pixel_mask``; normalisation stays where it is (:mod:`vilt_lab.data.normalize`).

What the device cannot take is decoded in the worker as before: payloads that are not JPEGs,
CMYK and YCCK JPEGs, and every image of a stream that augments (RandAugment works on the decoded
image, before the resize) or mixes (MixGen blends the decoded pixels in the collate). Pixel values are not bit-identical to the CPU path's: nvJPEG's IDCT
and chroma upsampling are not libjpeg-turbo's, a large photo is resized from its full size where
the CPU path first decodes at 1/2, 1/4 or 1/8 scale, and the GPU resize runs in float (PyTorch's
CUDA bicubic has no uint8 kernel), within a grey level of the uint8 kernel's result
(:func:`resize_float`).

A JPEG whose data the device refuses (headers are all the workers check; the converter checked
the data when it wrote the shards) is decoded on the CPU instead, in the training process.
torchvision 0.29 deprecates its image decoders in favour of TorchCodec's: :func:`_decode_all` is
the one call to move.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from vilt_lab.data.sources.images import open_image
from vilt_lab.data.transforms import (
    SHARD_IMAGES,
    ImageAugment,
    MinMaxResize,
    decode_image,
    rgb_jpeg_size,
    rgb_to_tensor,
)

DECODE = ("cpu", "gpu")  # data.decode: where the loader's JPEGs are decoded
DEFERRED = "deferred_jpegs"  # an item's JPEGs left to the device: [(image index, DeferredJpeg)]
JPEGS = "jpegs"  # the batch's field for them (an EncodedJpegs)


class DeferredJpeg(NamedTuple):
    """One JPEG the device will decode: its bytes and the (width, height) it is resized to."""

    data: torch.Tensor  # uint8 (n,): the encoded file, as decode_jpeg takes it
    size: tuple[int, int]

    def placeholder(self) -> torch.Tensor:
        """A uint8 (3, H, W) zero image of the target size, costing no memory (a broadcast
        scalar): what the collate pads and masks in the decoded image's place."""
        width, height = self.size
        return torch.zeros((), dtype=torch.uint8).expand(3, height, width)


class EncodedJpegs(NamedTuple):
    """A batch's JPEGs left to the device; ``slots[i]`` indexes ``image`` flattened to
    (N, 3, H, W) (N = B, or B x k for items of k images)."""

    slots: tuple[int, ...]
    data: list[torch.Tensor]
    sizes: tuple[tuple[int, int], ...]


@functools.cache
def _warn_no_cuda() -> None:
    warnings.warn(
        "data.decode=gpu without a CUDA device: decoding JPEGs on the CPU (data.decode=cpu)", stacklevel=3
    )


def decodes_on_device(decode: str) -> bool:
    """Whether ``data.decode`` leaves JPEGs to the device here: ``gpu`` on a machine with CUDA;
    without one, ``gpu`` falls back to the CPU path, with one warning per process."""
    if decode not in DECODE:
        raise ValueError(f"data.decode={decode!r}: expected one of {DECODE}")
    if decode == "gpu" and not torch.cuda.is_available():
        _warn_no_cuda()
        return False
    return decode == "gpu"


def decode_or_defer(
    data: bytes, resize: MinMaxResize, augment: ImageAugment | None, on_device: bool
) -> tuple[torch.Tensor, DeferredJpeg | None]:
    """In a worker: the decoded image and None, or, on the device path, the placeholder of a
    JPEG the device will decode and that JPEG. The one place the two paths part.

    Raises:
        BadImage, OSError: as :func:`vilt_lab.data.transforms.decode_image`.
    """
    if on_device and augment is None and (size := rgb_jpeg_size(data, SHARD_IMAGES)) is not None:
        jpeg = DeferredJpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), resize.size(*size))
        return jpeg.placeholder(), jpeg
    return decode_image(data, resize, augment), None


def collect_jpegs(samples: Sequence[dict[str, Any]], encoding: Any, generator: Any) -> dict[str, Any]:
    """A collate step: the items' deferred JPEGs as the batch's :class:`EncodedJpegs` (nothing
    when every image was decoded in the worker)."""
    per_item = len(samples[0]["images"]) if "images" in samples[0] else 1
    found = [
        (i * per_item + index, jpeg)
        for i, sample in enumerate(samples)
        for index, jpeg in sample.get(DEFERRED, ())
    ]
    if not found:
        return {}
    slots, jpegs = zip(*found, strict=True)
    return {JPEGS: EncodedJpegs(slots, [j.data for j in jpegs], tuple(j.size for j in jpegs))}


def resize_float(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, h, w) -> uint8 (3, H, W) for ``size`` = (W, H): the CPU path's antialiased
    bicubic (:func:`vilt_lab.data.transforms.resize_bicubic`) in float, for devices without its
    uint8 kernel. As that kernel (and PIL) does, the width is resized first and the result rounded
    and clamped to 0-255 before the height is: one 2-D float pass would keep the overshoot of the
    bicubic lobes between the passes and differ by up to 7 grey levels at sharp edges; this
    differs only by the uint8 kernel's fixed-point rounding (one grey level on about 0.5% of the
    pixels; up to two, on about 1%, when enlarging)."""
    width, height = size
    x = pixels[None].float()
    if x.shape[-1] != width:
        x = (
            F.interpolate(x, size=(x.shape[-2], width), mode="bicubic", antialias=True)
            .round_()
            .clamp_(0, 255)
        )
    if x.shape[-2] != height:
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True).round_().clamp_(0, 255)
    return x[0].to(torch.uint8)


def _decode_on_cpu(data: torch.Tensor) -> torch.Tensor:
    """A JPEG the device refused, through PIL as the CPU path would (it raises if PIL refuses too)."""
    with open_image(data.numpy().tobytes(), SHARD_IMAGES) as image:
        return rgb_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))


def _decode_all(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """The JPEGs as uint8 (3, h, w) RGB on ``device``: one batched nvJPEG call; if it refuses
    the batch, one call per JPEG, and PIL for each JPEG the device refuses."""
    # Imported here: torchvision's import costs about 3 s, and only this path needs it.
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = []
        for jpeg in data:
            try:
                decoded.append(decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(_decode_on_cpu(jpeg).to(device))
        return decoded


def decode_on_device(batch: dict[str, Any]) -> dict[str, Any]:
    """After the host-to-device copy: decode the batch's deferred JPEGs (if any) on the device
    its ``image`` is on, resize each to its target size and write it into its slot."""
    jpegs: EncodedJpegs | None = batch.pop(JPEGS, None)
    if jpegs is None:
        return batch
    image = batch["image"]
    slots = image.flatten(0, -4)  # a view: (N, 3, H, W)
    for slot, pixels, (width, height) in zip(
        jpegs.slots, _decode_all(jpegs.data, image.device), jpegs.sizes, strict=True
    ):
        slots[slot, :, :height, :width] = resize_float(pixels, (width, height))
    return batch
