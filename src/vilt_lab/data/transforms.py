"""Image transforms that run in the loader workers: decode, (augment), MinMaxResize, uint8 CHW tensor.

The paper's transform ("pixelbert" in the official code) is MinMaxResize with bicubic
resampling, then normalisation with mean = std = 0.5. Normalisation is not here: batches travel
as uint8 and are normalised on the device (:func:`vilt_lab.data.normalize.normalize_images`).

Decoding is PIL's, except for the commonest case: a JPEG that needs no draft (DCT) downscaling,
such as a 640x480 COCO image headed for 512x384. That one goes through ``simplejpeg``: the same
libjpeg-turbo with the same settings (accurate DCT, smooth chroma upsampling), so the pixels are
identical, but decoded straight into a NumPy array without a PIL image in between, about 1.4x
faster on one core (1.88 against 2.62 ms for a noisy 640x480 JPEG, decode plus tensor).

Both paths read the header first and apply the converter's image rules (``ImagePolicy``: the
minimum side, PIL's decompression-bomb limit) before decoding: shards another tool wrote have not
been through the converter, and a 100-Mpx image must be refused before it costs 300 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image

from vilt_lab.data.sources.images import ImagePolicy, check_image_size, open_image

# The paper's "longer side 640" is computed in the official code as int(1333 / 800 * 384) = 639,
# which, after flooring to a multiple of 32, caps the longer side at 608 (vilt-paper ref. §0.5).
# 639 is the default (`data.image_longer`), so images get the sizes the released checkpoints were
# trained on; 640 gives the paper's stated maximum of 640 (20 patches).
PAPER_SHORTER = 384
PAPER_LONGER = int(1333 / 800 * PAPER_SHORTER)

# An augmentation of a decoded RGB image that keeps its size and mode.
ImageAugment = Callable[[Image.Image], Image.Image]
# The converter's own rules (its defaults), applied again to every image a loader reads.
SHARD_IMAGES = ImagePolicy()


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


def resize_bicubic(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, h, w) -> uint8 (3, H, W) for ``size`` = (W, H), bicubic with antialiasing.

    PyTorch's antialiased bicubic uses PIL's filter (a = -0.5, support scaled when shrinking), so
    the result is PIL's ``resize(BICUBIC)`` to within one grey level, at about a third of the time
    on one core (its uint8 kernel is vectorised; PIL's is not).
    """
    width, height = size
    if pixels.shape[1:] == (height, width):
        return pixels
    return F.interpolate(pixels[None], size=(height, width), mode="bicubic", antialias=True)[0]


def rgb_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a uint8 (3, H, W) tensor (torchvision's `pil_to_tensor`, without
    importing torchvision: its package import pulls in torchvision.models and torch._dynamo,
    about 3 s of every process start)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


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
        """Resize a PIL ``image`` (bicubic); returns it unchanged if it already has the target size."""
        target = self.size(*image.size)
        return image if target == image.size else image.resize(target, Image.Resampling.BICUBIC)


JPEG_MAGIC = b"\xff\xd8\xff"
# Colour spaces libjpeg-turbo turns into RGB itself; CMYK and YCCK JPEGs go to PIL, which does.
_SIMPLEJPEG_SPACES = ("RGB", "YCbCr", "Gray")


def rgb_jpeg_size(data: bytes, policy: ImagePolicy = SHARD_IMAGES) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG that libjpeg-turbo turns into RGB itself, read from its
    header alone; None for any other payload (not a JPEG, an unreadable header, CMYK or YCCK).

    Raises:
        BadImage: for a size ``policy`` skips.
    """
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        height, width, colour_space, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    check_image_size(width, height, policy)
    return (width, height) if colour_space in _SIMPLEJPEG_SPACES else None


def _decode_jpeg_direct(
    data: bytes, resize: MinMaxResize, policy: ImagePolicy = SHARD_IMAGES
) -> torch.Tensor | None:
    """The JPEG as a uint8 (3, h, w) tensor via simplejpeg, or None to leave it to PIL.

    None when the payload is not a plain JPEG, needs a colour conversion libjpeg-turbo cannot do,
    would be drafted (PIL's draft path is what shrinks large photos), or makes libjpeg-turbo so
    much as warn (``strict``): PIL then decodes it or raises, so both paths accept and refuse
    exactly the same files.

    Raises:
        BadImage: for a size ``policy`` skips (from the header, before decoding).
    """
    if (size := rgb_jpeg_size(data, policy)) is None:
        return None
    width, height = size
    target_w, target_h = resize.size(width, height)
    if min(width // target_w, height // target_h) >= 2:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def decode_image(
    data: bytes, resize: MinMaxResize, augment: ImageAugment | None = None, policy: ImagePolicy = SHARD_IMAGES
) -> torch.Tensor:
    """Encoded image bytes -> (augmented,) resized RGB uint8 tensor of shape (3, H, W).

    ``augment`` runs on the decoded RGB image before the final resize, as the official
    fine-tuning transform does (RandAugment, then MinMaxResize).

    Raises:
        BadImage: for a payload that is not an image, or whose size ``policy`` skips (checked
        on the header, before decoding);
        OSError: for a truncated image (the caller skips such samples).
    """
    if augment is None and (pixels := _decode_jpeg_direct(data, resize, policy)) is not None:
        return resize_bicubic(pixels, resize.size(pixels.shape[2], pixels.shape[1]))
    with open_image(data, policy) as image:  # reads the header only
        target = resize.size(*image.size)
        # JPEG can decode at 1/2, 1/4 or 1/8 scale for almost nothing: a 4000 px photo headed for
        # 384 px decodes about 8x faster. draft() only picks a scale that stays >= target, and is a
        # no-op for other formats, so the final bicubic resize still sets the exact size.
        # Augmenting after the draft is what makes it cheap (the ops run on at most twice the
        # target size rather than the original); it only makes TranslateX/Y's absolute 30 px
        # relatively larger on photos above twice the target size.
        image.draft("RGB", target)
        # convert() copies even an RGB image: skip it when the decode already gives RGB.
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if augment is not None:
            rgb = augment(rgb)
        pixels = rgb_to_tensor(rgb)
    return resize_bicubic(pixels, target)
