"""VQA: answer classification over the answer vocabulary with soft targets (reference §1.8, §4.2).

The head reads the pooled vector of one pass over (question, image) with all patches. The loss is
the official one: binary cross-entropy with logits against the VQA soft scores, averaged over
questions and answers, times the number of answers (so it is a per-question sum over answers, and
its size does not shrink with a larger vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vilt_lab.model import ViltBackbone, ViltConfig, VQAHead

from .base import Objective
from .passes import POOLED, Passes

# The pass on the batch's own texts and images, by its cache key.
PLAIN_PASS = "plain"


def plain_pass(batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes):
    """The step's pass on the batch's own texts and images (shared by the objectives that read it)."""
    return passes.get(
        PLAIN_PASS, lambda: passes.run(backbone, batch, batch["input_ids"], serves=(PLAIN_PASS,))
    )


class VQAObjective(Objective):
    """BCE of the VQA head against soft scores; ``score`` is ViLT's VQAScore (the soft score of
    the argmax answer, averaged)."""

    reads_pass = PLAIN_PASS
    reads_rows = POOLED

    def __init__(self, hidden_size: int, num_labels: int, labels: Sequence[str] | None = None) -> None:
        super().__init__()
        if labels is not None and len(labels) != num_labels:
            raise ValueError(f"{len(labels)} answer names for {num_labels} VQA labels")
        self.head = VQAHead(hidden_size, num_labels)
        self.labels = list(labels) if labels is not None else None

    @classmethod
    def from_config(
        cls, config: ViltConfig, num_labels: int = 3129, labels: Sequence[str] | None = None
    ) -> VQAObjective:
        return cls(config.hidden_size, num_labels, labels)

    def head_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"num_labels": self.head.fc2.out_features}
        if self.labels is not None:
            spec["labels"] = list(self.labels)
        return spec

    def logits(self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes) -> torch.Tensor:
        return self.head(plain_pass(batch, backbone, passes).pooled).float()

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        logits = self.logits(batch, backbone, passes)
        targets = batch["vqa_targets"].float()
        loss = F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]
        predicted = logits.detach().argmax(-1)
        score = targets.gather(1, predicted[:, None]).squeeze(1).mean()
        return {"loss": loss, "score": score}

    @torch.no_grad()
    def predict(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        """Per question: ``label`` (argmax answer) and its top-5 ``top_labels`` / ``top_probs``."""
        logits = self.logits(batch, backbone, passes)
        probs, labels = torch.sigmoid(logits).topk(min(5, logits.shape[1]), dim=-1)
        return {"label": logits.argmax(-1), "top_labels": labels, "top_probs": probs}
