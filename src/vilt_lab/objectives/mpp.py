"""Masked patch prediction (MPP), the paper's ablation (Table 5; dropped because it did not help).

15% of the valid patches are replaced by a learnable mask token before position embeddings;
the head classifies each masked patch's mean colour into 256 bins per RGB channel. The legacy
official code replaced only 80% of the chosen patches and never created its mask token
(reference Sec. 2.4); here every chosen patch is replaced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.model import BackboneOutput, MPPHead, ViltBackbone, ViltConfig
from vilt_lab.model.embeddings import PatchSelection, patch_validity
from vilt_lab.utils.draws import draw_device

from .base import Objective
from .passes import Passes

# patch_mean_rgb's classes per channel: every uint8 value.
MEAN_RGB_BINS = 256


def new_mask_token(hidden_size: int) -> nn.Parameter:
    """A learnable (1, 1, hidden) mask token, trunc-normal with std 0.02 (the official fix)."""
    token = nn.Parameter(torch.zeros(1, 1, hidden_size))
    nn.init.trunc_normal_(token, std=0.02)
    return token


def patch_mean_rgb(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Per-patch mean colour of uint8 (B, 3, H, W) images: (B, Hp * Wp, 3) long in 0..255, raster order.

    The mean of each channel over the patch's pixels, rounded down. Summed in int64 and divided
    as integers, so the bin is exact (a float mean can land a hair below an integer and floor
    to the wrong bin). Pixels beyond the last whole patch are ignored, as the patch conv does.
    """
    B, C, H, W = image.shape
    Hp, Wp = H // patch_size, W // patch_size
    patches = image[:, :, : Hp * patch_size, : Wp * patch_size].reshape(B, C, Hp, patch_size, Wp, patch_size)
    sums = patches.sum(dim=(3, 5), dtype=torch.int64)  # (B, C, Hp, Wp)
    return torch.div(sums, patch_size * patch_size, rounding_mode="floor").flatten(2).transpose(1, 2)


def kept_masked(masked_patches: torch.Tensor, patches: PatchSelection) -> torch.Tensor:
    """(B, L) bool: which positions of a pass hold a masked patch, of (B, Hp, Wp) `masked_patches`.

    Only masked patches that the pass kept (max_image_len may drop some) and that are not fill.
    """
    return masked_patches.flatten(1).gather(1, patches.index) & patches.valid


def mean_rgb_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    patch_size: int,
    patches: PatchSelection,
    masked_patches: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """MPP's loss: 256-way cross-entropy per channel of the masked, kept patches' mean colour.

    logits: (B, L, 3, bins) for the pass's L image positions; image: the batch's uint8 images.
    Returns "loss", "accuracy" and "count" (patch-channel entries), as `Objective.forward`.
    """
    index = patches.index  # (B, L) grid index of each kept patch
    selected = kept_masked(masked_patches, patches)
    targets = patch_mean_rgb(image, patch_size)
    targets = targets.gather(1, index.unsqueeze(-1).expand(-1, -1, 3))  # (B, L, 3)
    labels = torch.where(selected.unsqueeze(-1), targets, IGNORE_INDEX)
    per_entry = F.cross_entropy(
        logits.flatten(0, 2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    entries = (labels != IGNORE_INDEX).sum()
    count = entries.clamp(min=1)
    # Sum / count: no masked patch gives loss 0 with zero gradients, not NaN (see MLM).
    loss = per_entry.float().sum() / count
    correct = (logits.detach().argmax(-1) == labels) & (labels != IGNORE_INDEX)
    # count: what loss and accuracy average over (patch-channel entries), for per-entry means.
    return {"loss": loss, "accuracy": correct.sum() / count, "count": entries.float()}


def masked_image_pass(
    batch: dict[str, torch.Tensor],
    backbone: ViltBackbone,
    passes: Passes,
    key: str,
    sample_mask: Callable[[torch.Tensor, tuple[int, int], Passes], torch.Tensor],
    mask_token: torch.Tensor,
) -> tuple[BackboneOutput, torch.Tensor]:
    """The pass of an objective that masks patches (MPP, MIM): unmasked text, the (B, Hp, Wp)
    patches `sample_mask(pixel_mask, grid, passes)` picks replaced by `mask_token`; computed once
    per step under `key` in `passes`. Returns the pass and the mask."""
    patch_size = backbone.config.patch_size
    H, W = batch["image"].shape[-2:]
    grid = (H // patch_size, W // patch_size)

    def compute() -> tuple[BackboneOutput, torch.Tensor]:
        masked_patches = sample_mask(batch["pixel_mask"], grid, passes)
        output = passes.run(
            backbone, batch, batch["input_ids"], masked_patches=masked_patches, mask_token=mask_token
        )
        return output, masked_patches

    return passes.get(key, compute)


class MPPObjective(Objective):
    """256-way cross-entropy per channel on the masked, kept patches of a pass with unmasked text.

    Owns its head and the learnable mask token (trunc-normal, std 0.02, as the official fix).
    """

    uses_pooler = False

    def __init__(self, hidden_size: int, probability: float = 0.15) -> None:
        super().__init__()
        self.probability = probability
        self.head = MPPHead(hidden_size, MEAN_RGB_BINS)
        self.mask_token = new_mask_token(hidden_size)

    @classmethod
    def from_config(cls, config: ViltConfig, **kwargs: float) -> MPPObjective:
        return cls(config.hidden_size, **kwargs)

    def sample_mask(self, pixel_mask: torch.Tensor, grid: tuple[int, int], passes: Passes) -> torch.Tensor:
        """(B, Hp, Wp) bool: each valid patch independently with `probability`, never padding."""
        generator = passes.generator
        device = draw_device(generator, pixel_mask.device)
        draw = torch.rand(pixel_mask.shape[0], *grid, generator=generator, device=device).to(
            pixel_mask.device
        )
        return (draw < self.probability) & patch_validity(pixel_mask, grid)

    def head_spec(self) -> dict[str, int]:
        """The head's build arguments, as a checkpoint's head list stores them."""
        return {"bins": self.head.bins}

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        output, masked_patches = masked_image_pass(
            batch, backbone, passes, "mpp", self.sample_mask, self.mask_token
        )
        logits = self.head(output.image_feats[:, 1:])  # (B, L, 3, bins)
        return mean_rgb_loss(
            logits, batch["image"], backbone.config.patch_size, output.patches, masked_patches
        )
