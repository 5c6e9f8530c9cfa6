"""Encoded images for tests that need image bytes but not a scene."""

from __future__ import annotations

import io

from PIL import Image


def encode_image(
    size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG"
) -> bytes:
    """A solid ``size`` (width, height) image encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()
