"""NLVR2 by the paper's pair method (reference §4.3): is the statement true of the image pair?

Two passes per statement, (text, left image) with image modality type 1 and (text, right image)
with type 2; the head classifies the two pooled vectors concatenated, with cross-entropy. A
checkpoint with two modality rows gets the third from its image row (`model.init_from`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vilt_lab.data.normalize import normalize_images
from vilt_lab.model import NLVR2Head, ViltBackbone, ViltConfig

from .base import Objective
from .passes import Passes, unpadded

NUM_IMAGES = 2


class NLVR2Objective(Objective):
    """Two-way cross-entropy of the NLVR2 head on the pair's pooled vectors (label 1 = true)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.head = NLVR2Head(hidden_size)

    @classmethod
    def from_config(cls, config: ViltConfig) -> NLVR2Objective:
        if config.num_modality_types < NUM_IMAGES + 1:
            raise ValueError(
                f"NLVR2 needs model.num_modality_types >= 3 (text, image 1, image 2), got {config.num_modality_types}"
            )
        return cls(config.hidden_size)

    def head_spec(self) -> dict[str, int]:
        return {"num_labels": self.head.fc2.out_features}

    def logits(self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes) -> torch.Tensor:
        image, pixel_mask = batch["image"], batch["pixel_mask"]  # (B, 2, 3, H, W), (B, 2, H, W)
        if image.dim() != 5 or image.shape[1] != NUM_IMAGES:
            raise ValueError(f"NLVR2 batches hold image pairs (B, 2, 3, H, W), got {tuple(image.shape)}")
        pixel_values = normalize_images(image.flatten(0, 1), pixel_mask.flatten(0, 1)).unflatten(0, (-1, 2))
        pooled = [
            backbone(
                batch["input_ids"],
                batch["attention_mask"],
                pixel_values[:, i],
                pixel_mask[:, i],
                max_image_len=passes.max_image_len,
                image_token_type_idx=i + 1,
                generator=passes.generator,
                rows=1,  # the two passes are NLVR2's own and only their pooled [CLS] is read
                max_patches=passes.max_patches(backbone, batch),
                unpadded=unpadded(batch),
            ).pooled
            for i in range(NUM_IMAGES)
        ]
        return self.head(*pooled).float()

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        logits = self.logits(batch, backbone, passes)
        labels = batch["nlvr2_labels"]
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(-1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def predict(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        """Per statement: ``label`` (1 = true) and ``prob_true``."""
        logits = self.logits(batch, backbone, passes)
        return {"label": logits.argmax(-1), "prob_true": logits.softmax(-1)[:, 1]}
