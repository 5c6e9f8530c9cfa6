"""Random backbone inputs of a chosen shape: what FLOP counting and latency timing feed the model.

Counts and timings depend on shapes alone, so no data, tokenizer or weights are needed: one
full-length text of random word pieces and one unpadded image of random normalised pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import ViltConfig

# The paper's Table 6 shapes: a 384x640 image (12x20 = 240 patches of 32) with a 40-token text;
# its FLOPs are quoted for 200 image tokens, what pre-training samples (max_image_len = 200).
TABLE6_IMAGE_HW = (384, 640)
TABLE6_TEXT_LEN = 40
TABLE6_IMAGE_TOKENS = 200


@dataclass(frozen=True)
class DummyInputs:
    """One batch for `ViltBackbone`: (B, T) ids and mask, (B, 3, H, W) pixels and (B, H, W) mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor

    def to(self, device: torch.device, dtype: torch.dtype) -> DummyInputs:
        """On `device`, with the pixels in `dtype` (ids and masks keep their integer type)."""
        return DummyInputs(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            pixel_values=self.pixel_values.to(device=device, dtype=dtype),
            pixel_mask=self.pixel_mask.to(device),
        )


def dummy_inputs(
    config: ViltConfig, image_hw: tuple[int, int], text_len: int, batch_size: int = 1, seed: int = 0
) -> DummyInputs:
    """Random inputs: `text_len` real word pieces and an `image_hw` image with every pixel valid."""
    height, width = image_hw
    if height % config.patch_size or width % config.patch_size:
        raise ValueError(f"image {height}x{width} is not a multiple of the patch size {config.patch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DummyInputs(
        input_ids=torch.randint(config.vocab_size, (batch_size, text_len), generator=generator),
        attention_mask=torch.ones(batch_size, text_len, dtype=torch.long),
        # Normalised pixels lie in [-1, 1] (mean = std = 0.5).
        pixel_values=torch.rand(batch_size, 3, height, width, generator=generator) * 2 - 1,
        pixel_mask=torch.ones(batch_size, height, width, dtype=torch.long),
    )


def parse_image_size(text: str) -> tuple[int, int]:
    """'384x640' -> (384, 640): height then width, as `--image` options take it."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise ValueError(f"image size {text!r} is not HEIGHTxWIDTH, e.g. 384x640")
    return int(height), int(width)
