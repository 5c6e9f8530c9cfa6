"""Image transforms that run in the loader workers: decode, MinMaxResize, uint8 CHW tensor.

Normalisation is not here: batches travel as uint8 and are normalised on the device
(:func:`vilt_lab.data.normalize.normalize_images`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

# The paper's "longer side 640" is computed in the official code as int(1333 / 800 * 384) = 639,
# which, after flooring to a multiple of 32, caps the longer side at 608 (vilt-paper ref. §0.5).
PAPER_SHORTER = 384
PAPER_LONGER = int(1333 / 800 * PAPER_SHORTER)


def min_max_size(width: int, height: int, shorter: int, longer: int, patch: int) -> tuple[int, int]:
    """Output ``(width, height)`` of MinMaxResize for an input of ``width`` x ``height``.

    Scale so the shorter side is ``shorter``; if the longer side then exceeds ``longer``, scale
    so it is ``longer``; round; floor each side to a multiple of ``patch`` (at least one patch,
    so extreme aspect ratios still give a valid image).
    """
    scale = shorter / min(width, height)
    if max(width, height) * scale > longer:
        scale = longer / max(width, height)
    new_w, new_h = int(width * scale + 0.5), int(height * scale + 0.5)
    return max(patch, new_w // patch * patch), max(patch, new_h // patch * patch)


@dataclass(frozen=True)
class MinMaxResize:
    """ViLT's resize: shorter side to ``shorter``, longer side at most ``longer``, sides a multiple
    of ``patch``, bicubic. Paper data: ``MinMaxResize(384, 639, 32)``; the shapes world uses a
    small setting such as ``MinMaxResize(96, 160, 16)``.
    """

    shorter: int = PAPER_SHORTER
    longer: int = PAPER_LONGER
    patch: int = 32

    def size(self, width: int, height: int) -> tuple[int, int]:
        """Output ``(width, height)`` for an input of that size."""
        return min_max_size(width, height, self.shorter, self.longer, self.patch)

    def __call__(self, image: Image.Image) -> Image.Image:
        """Resize ``image`` (bicubic); returns it unchanged if it already has the target size."""
        target = self.size(*image.size)
        return image if target == image.size else image.resize(target, Image.Resampling.BICUBIC)


def decode_image(data: bytes, resize: MinMaxResize) -> torch.Tensor:
    """Encoded image bytes -> resized RGB uint8 tensor of shape (3, H, W).

    Raises:
        PIL.UnidentifiedImageError / OSError: for a payload that is not an image or is truncated
        (the caller skips such samples).
    """
    with Image.open(io.BytesIO(data)) as image:
        target = resize.size(*image.size)
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for almost nothing: a 4000 px photo headed for
        # 384 px decodes about 8x faster. draft() only picks a scale that stays >= target, and is a
        # no-op for other formats, so the final bicubic resize below still sets the exact size.
        image.draft("RGB", target)
        rgb = image.convert("RGB")
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BICUBIC)
    return pil_to_tensor(rgb)
