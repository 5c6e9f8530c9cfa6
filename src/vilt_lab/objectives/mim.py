"""Masked image modelling (MIM): the paper's "masked modelling for visual inputs" future work.

A fixed share of each image's valid patches is replaced by a learnable mask token before the
position embeddings, on a pass of its own with unmasked text (as MPP); a light MAE-style decoder
(`MIMDecoder`) over that pass's image tokens predicts each masked patch, and only masked patches
that the pass kept count. Three targets, one objective:

- ``normalized``: MAE's `norm_pix_loss` target, each patch's pixels normalised by their own mean
  and (unbiased) variance, eps 1e-6; MSE per patch. MAE's ablation: 85.4 against 84.9 raw.
- ``raw``: VLC's target, the patch's pixels as the backbone sees them (the model's pixel
  normalisation of the uint8 image, `normalize_images`); MSE per patch.
- ``mpp``: the paper's masked patch prediction target, the mean colour of each channel in 256
  bins, classified (MPP's `mean_rgb_loss`).

Pixels are flattened per patch in MAE's `patchify` order: patch rows in raster order, inside a
patch (row, column, channel).
"""

from __future__ import annotations

import torch

from vilt_lab.model import MIMDecoder, ViltBackbone, ViltConfig
from vilt_lab.model.embeddings import patch_validity
from vilt_lab.utils.draws import draw_device

from .base import Objective
from .mpp import MEAN_RGB_BINS, kept_masked, masked_image_pass, mean_rgb_loss, new_mask_token
from .passes import Passes

NORMALIZED, RAW, MPP = "normalized", "raw", "mpp"
MIM_TARGETS = (NORMALIZED, RAW, MPP)
# MAE's norm_pix_loss: (x - mean) / (var + 1e-6) ** 0.5.
NORM_PIX_EPS = 1e-6


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, Hp * Wp, p * p * C) as MAE's `patchify`; pixels beyond the last whole
    patch are ignored, as the patch conv does."""
    B, C, H, W = images.shape
    Hp, Wp, p = H // patch_size, W // patch_size, patch_size
    x = images[:, :, : Hp * p, : Wp * p].reshape(B, C, Hp, p, Wp, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(B, Hp * Wp, p * p * C)


def normalize_patches(pixels: torch.Tensor) -> torch.Tensor:
    """MAE's per-patch normalisation of (..., P) patch pixels: zero mean, unit (unbiased) variance."""
    mean = pixels.mean(dim=-1, keepdim=True)
    var = pixels.var(dim=-1, keepdim=True)
    return (pixels - mean) / (var + NORM_PIX_EPS) ** 0.5


def masked_count(valid_patches: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B,) patches to mask per image of (B,) valid patches: `ratio` of them rounded half up, and
    at least one in an image of two or more (a small image still gets a target)."""
    count = torch.floor(valid_patches.double() * ratio + 0.5).long()
    return torch.where(valid_patches >= 2, count.clamp(min=1), count)


class MIMObjective(Objective):
    """Regression (or MPP's classification) of masked patches from a light decoder.

    Owns the decoder (its head, which a checkpoint stores) and the learnable mask token; both
    take part in every step's loss, so every parameter gets a gradient (zero when nothing is
    masked). The mask has a fixed count per image, as MAE's and VLC's, rather than MPP's
    independent draws: every image then gives the same share of targets, whatever its size.
    """

    uses_pooler = False

    def __init__(
        self,
        hidden_size: int,
        patch_size: int,
        ratio: float = 0.6,
        target: str = NORMALIZED,
        decoder_depth: int = 2,
        decoder_width: int = 512,
    ) -> None:
        super().__init__()
        if target not in MIM_TARGETS:
            raise ValueError(f"MIM target {target!r}: expected one of {MIM_TARGETS}")
        self.ratio = ratio
        self.target = target
        self.patch_size = patch_size
        outputs = 3 * MEAN_RGB_BINS if target == MPP else patch_size * patch_size * 3
        self.head = MIMDecoder(hidden_size, decoder_width, decoder_depth, outputs)
        self.mask_token = new_mask_token(hidden_size)

    @classmethod
    def from_config(cls, config: ViltConfig, **kwargs: float | int | str) -> MIMObjective:
        return cls(config.hidden_size, config.patch_size, **kwargs)  # type: ignore[arg-type]

    def sample_mask(self, pixel_mask: torch.Tensor, grid: tuple[int, int], passes: Passes) -> torch.Tensor:
        """(B, Hp, Wp) bool: `masked_count` of each image's valid patches, drawn uniformly without
        replacement, never padding. Sorting random keys (padding's pushed past every valid one)
        needs no count on the host."""
        valid = patch_validity(pixel_mask, grid).flatten(1)
        generator = passes.generator
        device = draw_device(generator, pixel_mask.device)
        keys = torch.rand(valid.shape, generator=generator, device=device).to(pixel_mask.device)
        keys = keys + (~valid).to(keys.dtype) * 2.0
        rank = keys.argsort(dim=1).argsort(dim=1)  # each patch's place in its image's draw
        masked = rank < masked_count(valid.sum(1), self.ratio).unsqueeze(1)
        return masked.view(-1, *grid)

    def head_spec(self) -> dict[str, int]:
        """The decoder's build arguments, as a checkpoint's head list stores them."""
        return {"width": self.head.width, "depth": self.head.depth, "outputs": self.head.outputs}

    def pixel_targets(
        self, batch: dict[str, torch.Tensor], passes: Passes, index: torch.Tensor
    ) -> torch.Tensor:
        """(B, L, p * p * 3) float targets of the pass's L image positions (`index` on the grid)."""
        pixels = patchify(passes.pixel_values(batch).float(), self.patch_size)
        pixels = pixels.gather(1, index.unsqueeze(-1).expand(-1, -1, pixels.shape[-1]))
        return normalize_patches(pixels) if self.target == NORMALIZED else pixels

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        output, masked_patches = masked_image_pass(
            batch, backbone, passes, "mim", self.sample_mask, self.mask_token
        )
        predictions = self.head(output.image_feats, output.image_mask)  # (B, L, outputs)
        if self.target == MPP:
            logits = predictions.unflatten(-1, (3, MEAN_RGB_BINS))
            return mean_rgb_loss(logits, batch["image"], self.patch_size, output.patches, masked_patches)
        selected = kept_masked(masked_patches, output.patches)
        targets = self.pixel_targets(batch, passes, output.patches.index)
        per_patch = (predictions.float() - targets).pow(2).mean(dim=-1)  # MSE per patch, as MAE
        patches = selected.sum()
        # Sum / count: no masked patch gives loss 0 with zero gradients, not NaN (see MLM).
        loss = torch.where(selected, per_patch, 0.0).sum() / patches.clamp(min=1)
        # count: the masked patches the loss averages over, for per-patch means across batches.
        return {"loss": loss, "count": patches.float()}
