"""MixGen (Hao et al. 2022, arXiv 2206.08358): new image-text pairs made inside a batch.

The official ``mixgen(image, text, num, lam)`` replaces, for ``i < num``, image ``i`` by
``lam * image[i] + (1 - lam) * image[i + num]`` and text ``i`` by ``text[i] + " " +
text[i + num]``: the first ``num`` pairs become mixes with the next ``num``, in place, so the
batch keeps its size, and the draw is the batch's order (already shuffled), not a random one.
:class:`MixGen` does the same on a worker's decoded items, before the collate tokenises them,
so whole-word masking runs on the mixed text's tokens and ITM and WPA take a mixed pair as a
positive (their negatives are drawn from the batch as for any pair).

ViLT's images have their own sizes (MinMaxResize keeps the aspect ratio), padded to the batch's
largest only in the collate. Image ``i + num`` is resized (bicubic, antialiased: MinMaxResize's
own resize) to image ``i``'s (h, w) and then blended, so every pixel of the mixed image is a true
``lam`` blend and the pair keeps image ``i``'s size, patch count and pixel mask. Blending on the
padded canvas under the union of the two pixel masks instead would leave strips where one image
is padding: a faded copy of the other image alone, not a mix, and a patch count that grows with
the larger image. The blend runs on the uint8 pixels and rounds to uint8; normalisation is
affine (``(x / 255 - 0.5) / 0.5``), so this equals blending normalised images, as the official
code does, up to that rounding (half a grey level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vilt_lab.data.transforms import resize_bicubic


def mixed_pairs(share: float, batch_size: int) -> int:
    """The pairs mixed in a batch of ``batch_size``: ``round(share * batch_size)``, capped at half
    the batch (each pair takes two items)."""
    return min(round(share * batch_size), batch_size // 2)


def mix_images(image: torch.Tensor, other: torch.Tensor, lam: float) -> torch.Tensor:
    """uint8 (3, h, w): ``lam * image + (1 - lam) * other`` resized to ``image``'s (h, w), rounded."""
    height, width = image.shape[1:]
    other = resize_bicubic(other, (width, height)).float()
    return (lam * image.float() + (1 - lam) * other).round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class MixGen:
    """The official MixGen on a batch's decoded items (``{"image": uint8 (3, h, w), "text": str,
    ...}``): ``share`` of the items (:func:`mixed_pairs`) are replaced by their mix with the
    items after them, with weight ``lam`` on their own image; every other field (key, source) is
    the first item's."""

    share: float
    lam: float = 0.5

    def __call__(self, samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        num = mixed_pairs(self.share, len(samples))
        mixed = [
            {
                **first,
                "image": mix_images(first["image"], second["image"], self.lam),
                "text": first["text"] + " " + second["text"],
            }
            for first, second in zip(samples[:num], samples[num : 2 * num], strict=True)
        ]
        return [*mixed, *samples[num:]]
