"""Raw images at conversion time: read them, decode-check them, and hand the loader clean bytes.

Policy (the same for every converter):

* every image is fully decoded once here, so a truncated or corrupt file is found now and skipped
  with its reason, instead of costing a retry in a training worker;
* PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, about 89M pixels) is a skip, not a
  crash: PIL only *warns* between the limit and twice it, so the warning is raised as an error;
* an image whose shorter side is below ``min_side`` is skipped (default one ViT-B/32 patch: below
  that, MinMaxResize mostly invents pixels);
* CMYK, greyscale, palette and alpha images, and formats other than JPEG / PNG / WebP, are
  re-encoded as RGB JPEG, alpha composited over white; clean RGB JPEG / PNG / WebP files are
  kept byte for byte;
* optional pre-resize: an image whose shorter side is above ``resize_shorter`` is scaled down to
  it (aspect kept) and re-encoded, so loader workers decode small JPEGs (ViLT uses 384).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ...utils.picklable_errors import RebuiltFromMessage

# What the shard schema stores as it is. MPO is PIL's name for the multi-picture JPEGs some
# cameras write: JPEG bytes whose first frame is what every decoder shows.
KEPT_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BACKGROUND = (255, 255, 255)  # transparent pixels hold arbitrary colours; viewers show white
# High, because a kept JPEG is never re-encoded and a re-encoded one is encoded only this once.
JPEG_QUALITY = 95

# Skip reasons (categories: the manifest counts skips by reason; details go beside them).
MISSING = "image file missing"
UNREADABLE = "image file unreadable"
NOT_AN_IMAGE = "not an image"
CORRUPT = "image truncated or corrupt"
TOO_LARGE = "image too large (decompression-bomb limit)"
TOO_SMALL = "image too small"
UNSUPPORTED_MODE = "unsupported image mode"


class BadImage(RebuiltFromMessage, ValueError):
    """An image the converter skips: ``reason`` is one of the categories above, ``detail`` says more."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class RawImage:
    """Where one raw image's bytes are: a whole file, or ``size`` bytes at ``offset`` of one
    (a member of an uncompressed tar, e.g. img2dataset's output)."""

    path: str
    offset: int = 0
    size: int = -1

    def read(self) -> bytes:
        """The bytes.

        Raises:
            BadImage: when the file does not exist or cannot be read (a directory, no permission).
        """
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return f.read(self.size)
        except FileNotFoundError as err:
            raise BadImage(MISSING, self.path) from err
        except OSError as err:
            raise BadImage(UNREADABLE, f"{self.path}: {err}") from err


@dataclass(frozen=True)
class ImagePolicy:
    """What the converter does with each image (see the module docstring)."""

    min_side: int = 32
    resize_shorter: int | None = None


@dataclass(frozen=True)
class CleanImage:
    """An image ready for the shard writer, and what was done to it: kept, reencoded or resized."""

    data: bytes
    action: str


def check_image_size(width: int, height: int, policy: ImagePolicy) -> None:
    """Raise :class:`BadImage` for a size the policy skips: over PIL's decompression-bomb limit
    (``Image.MAX_IMAGE_PIXELS``; None turns it off) or a shorter side below ``min_side``. Needs
    the header alone, so readers check before decoding anything."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise BadImage(TOO_LARGE, f"{width}x{height} = {width * height} px, over PIL's limit of {limit}")
    if min(width, height) < policy.min_side:
        raise BadImage(TOO_SMALL, f"{width}x{height} px, shorter side below {policy.min_side}")


def open_image(data: bytes, policy: ImagePolicy) -> Image.Image:
    """Open ``data`` (its header: no pixel is decoded yet) and check its size against ``policy``;
    raise :class:`BadImage` for anything the policy skips. The caller closes the image."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadImage(TOO_LARGE, str(err)) from err
        except UnidentifiedImageError as err:
            raise BadImage(NOT_AN_IMAGE, f"{len(data)} bytes starting {bytes(data[:8])!r}") from err
        except (OSError, SyntaxError, ValueError) as err:  # PIL's plugins raise all three on bad headers
            raise BadImage(CORRUPT, str(err)) from err
    try:
        check_image_size(*image.size, policy)
    except BadImage:
        image.close()
        raise
    return image


def _open_checked(data: bytes, policy: ImagePolicy) -> tuple[Image.Image, tuple[int, int]]:
    """Open and fully decode ``data``: the image and its size in the file (a JPEG headed for a
    pre-resize is decoded smaller); raise :class:`BadImage` for anything the policy skips."""
    image = open_image(data, policy)
    width, height = image.size
    if policy.resize_shorter and min(width, height) > policy.resize_shorter:
        # JPEG decodes at 1/2..1/8 scale nearly for free; draft keeps both sides >= the request.
        image.draft("RGB", _scaled(image.size, policy.resize_shorter))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        image.close()
        raise BadImage(CORRUPT, str(err)) from err
    return image, (width, height)


def _scaled(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    width, height = size
    scale = shorter / min(width, height)
    return max(shorter, round(width * scale)), max(shorter, round(height * scale))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, BACKGROUND)
        rgb.paste(rgba, mask=rgba.getchannel("A"))
        return rgb
    try:
        return image.convert("RGB")
    except ValueError as err:  # e.g. some 16-bit and float modes
        raise BadImage(UNSUPPORTED_MODE, f"{image.mode}: {err}") from err


def clean_image(data: bytes, policy: ImagePolicy) -> CleanImage:
    """Decode-check one raw image and return the bytes to store (see the module docstring).

    Raises:
        BadImage: for an image to skip, with its reason.
    """
    image, original_size = _open_checked(data, policy)
    with image:
        resize = bool(policy.resize_shorter) and min(original_size) > policy.resize_shorter
        if not resize and image.mode == "RGB" and image.format in KEPT_FORMATS:
            return CleanImage(data, "kept")
        rgb = _to_rgb(image)
    if resize:
        assert policy.resize_shorter is not None
        target = _scaled(original_size, policy.resize_shorter)
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return CleanImage(buffer.getvalue(), "resized" if resize else "reencoded")


def read_clean_image(raw: RawImage, policy: ImagePolicy) -> CleanImage:
    """:func:`clean_image` of the bytes at ``raw``; a missing file is a :class:`BadImage` too."""
    return clean_image(raw.read(), policy)
