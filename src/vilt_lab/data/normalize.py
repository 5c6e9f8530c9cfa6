"""Image normalisation on the device.

Batches travel from the loader workers as uint8 (4x less to pickle and copy than float32) and
are normalised here, after the host-to-device copy.
"""

from __future__ import annotations

import torch

MEAN = 0.5
STD = 0.5


def normalize_images(
    images: torch.Tensor, pixel_mask: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (x / 255 - 0.5) / 0.5 in [-1, 1], exactly 0 on padding.

    Zero padding in normalised space is what the official collate produces; padded patches are
    masked out of attention anyway, but keeping them at 0 keeps features bit-identical to HF's.
    """
    # In place on the one new tensor, scale and shift folded into one multiply and one subtract:
    # on a CPU each pass over a batch-sized tensor (or temporary) costs as much as the arithmetic.
    x = images.to(dtype).mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)
    return x.mul_(pixel_mask.unsqueeze(1))
