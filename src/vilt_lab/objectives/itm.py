"""Image-text matching (ITM): is this image the caption's own?

Negatives come from inside the batch: exactly floor(B/2) pairs, chosen at random, take the
image of another pair. The official code pre-loads a random image of the same dataset per
sample instead (a second image decode per sample, and it can hit the true image by chance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vilt_lab.model import BackboneOutput, ITMHead, ViltBackbone, ViltConfig

from .passes import Passes


def random_derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of range(n) without fixed points (n >= 2), on the CPU
    (or the generator's device).

    Rejection sampling: a random permutation is a derangement with probability about 1/e, so
    this takes e ~ 2.7 draws on average.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    device = generator.device if generator is not None else torch.device("cpu")
    identity = torch.arange(n, device=device)
    while True:
        perm = torch.randperm(n, generator=generator, device=device)
        if not bool((perm == identity).any()):
            return perm


def sample_negatives(
    batch_size: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which image each pair sees and whether it is its own: (image_index, labels), both (B,) long.

    Exactly floor(B/2) pairs, chosen uniformly, are negatives (label 0); they swap images along a
    random derangement among themselves, so every image of the batch is still used once. A single
    negative (B = 2 or 3) takes any other pair's image. B = 1 has no negative. Tensors are on the
    CPU (or the generator's device).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    image_index = torch.arange(batch_size, device=device)
    labels = torch.ones(batch_size, dtype=torch.long, device=device)
    num_negatives = batch_size // 2
    if num_negatives == 0:
        return image_index, labels
    negatives = torch.randperm(batch_size, generator=generator, device=device)[:num_negatives]
    if num_negatives == 1:
        shift = torch.randint(1, batch_size, (1,), generator=generator, device=device)
        image_index[negatives] = (negatives + shift) % batch_size
    else:
        image_index[negatives] = negatives[random_derangement(num_negatives, generator)]
    labels[negatives] = 0
    return image_index, labels


@dataclass
class ITMPass:
    """The pass on unmasked text and mixed images, with its ITM labels (1 = match)."""

    output: BackboneOutput
    labels: torch.Tensor
    image_index: torch.Tensor


def itm_pass(batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes) -> ITMPass:
    """The step's ITM pass, run on first use and shared through `passes` (ITM and WPA)."""

    def compute() -> ITMPass:
        device = batch["input_ids"].device
        image_index, labels = sample_negatives(batch["input_ids"].shape[0], passes.generator)
        image_index, labels = image_index.to(device), labels.to(device)
        output = passes.run(backbone, batch, batch["input_ids"], image_index=image_index)
        return ITMPass(output=output, labels=labels, image_index=image_index)

    return passes.get("itm", compute)


class ITMObjective(nn.Module):
    """Two-way cross-entropy of the ITM head on the pooled vector of the ITM pass."""

    uses_pooler = True

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.head = ITMHead(hidden_size)

    @classmethod
    def from_config(cls, config: ViltConfig) -> ITMObjective:
        return cls(config.hidden_size)

    def head_spec(self) -> dict[str, int]:
        """The head's build arguments, as a checkpoint's head list stores them."""
        return {}

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        result = itm_pass(batch, backbone, passes)
        logits = self.head(result.output.pooled).float()
        loss = F.cross_entropy(logits, result.labels)
        accuracy = (logits.detach().argmax(-1) == result.labels).float().mean()
        return {"loss": loss, "accuracy": accuracy}
