"""Image-text retrieval fine-tuning (reference §4.4): rank an image's caption above 15 others.

Per image: its caption (the one the data worker picked) plus ``negatives`` captions drawn from
the whole training split, scored by the rank head (one output, started from ITM's "match" row),
cross-entropy with the true caption as the target. Text-side negatives only, as the official
code by default. The draws come from the step's generator, a function of (seed, rank, step), so a
resumed run draws what a straight run would have. By default a negative is never a caption of the
image itself; ``exclude_own=False`` is the official draw, which can hit them (even the positive).

``image_negatives`` (not in the official code; 0 there) adds the image side: each image's caption
is also scored against that many other images of the micro batch, a second cross-entropy with the
true image as the target, and the loss is the mean of the two. Why: text negatives alone only
compare captions of one image, so any per-image offset in the score is free, and image retrieval
(ranking images for a text) inherits it. On the shapes world that left IR@1 at or below its
zero-shot value (docs/benchmarks.md, `make finetune-demo`). The other images come from the batch, so no image
is decoded twice; a pick of the image itself (a resampled duplicate) is masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.data.collate import UNPADDED
from vilt_lab.model import RetrievalHead, ViltBackbone, ViltConfig
from vilt_lab.utils.draws import draw_device

from .base import Objective
from .passes import POOLED, Passes

DRAW_FALSE_TEXT = 15  # the official configs' negatives per image
IRTR_PASS = "irtr"  # each image with its own caption and its negatives (not shared)


def pad_to(input_ids: torch.Tensor, attention_mask: torch.Tensor, length: int, pad_id: int):
    """Right-pad (N, T) ids and mask to (N, length)."""
    extra = length - input_ids.shape[1]
    return F.pad(input_ids, (0, extra), value=pad_id), F.pad(attention_mask, (0, extra), value=0)


class IRTRObjective(Objective):
    """Cross-entropy over (1 + negatives) scores per image; ``accuracy``: the true caption ranks first."""

    reads_pass = IRTR_PASS
    reads_rows = POOLED

    def __init__(
        self,
        hidden_size: int,
        pool: CaptionPool | None = None,
        negatives: int = DRAW_FALSE_TEXT,
        exclude_own: bool = True,
        image_negatives: int = 0,
    ) -> None:
        super().__init__()
        if negatives < 1:
            raise ValueError(f"task.negatives={negatives}: retrieval fine-tuning needs at least one")
        if image_negatives < 0:
            raise ValueError(f"task.image_negatives={image_negatives}: must be 0 (off) or more")
        self.head = RetrievalHead(hidden_size)
        # A plain attribute, not a buffer: DDP would broadcast a buffer every step, and the pool
        # of a large split is far bigger than the model's inputs.
        self.pool = pool
        self.negatives = negatives
        self.exclude_own = exclude_own
        self.image_negatives = image_negatives

    @classmethod
    def from_config(
        cls,
        config: ViltConfig,
        pool: CaptionPool | None = None,
        negatives: int = DRAW_FALSE_TEXT,
        exclude_own: bool = True,
        image_negatives: int = 0,
    ) -> IRTRObjective:
        return cls(config.hidden_size, pool, negatives, exclude_own, image_negatives)

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled vectors -> (B,) retrieval scores (what exact evaluation ranks by)."""
        return self.head(pooled).float()

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        if self.pool is None:
            raise RuntimeError("retrieval fine-tuning needs the training split's caption pool")
        positive_ids, positive_mask = batch["input_ids"], batch["attention_mask"]
        B, device, K = positive_ids.shape[0], positive_ids.device, self.negatives
        drawn = self.pool.draw_negatives(batch["pool_image"], K, passes.generator, self.exclude_own)
        negative_ids, negative_mask = self.pool.tokens(drawn.flatten(), device)
        length = max(positive_ids.shape[1], negative_ids.shape[1])
        pad = self.pool.pad_token_id
        positive_ids, positive_mask = pad_to(positive_ids, positive_mask, length, pad)
        negative_ids, negative_mask = pad_to(negative_ids, negative_mask, length, pad)
        # Row i * (1 + K) is image i's own caption, the next K rows its negatives; then, with
        # image negatives, B * M rows of caption i against the other images drawn for it.
        input_ids = torch.cat([positive_ids[:, None], negative_ids.view(B, K, length)], 1).flatten(0, 1)
        attention_mask = torch.cat([positive_mask[:, None], negative_mask.view(B, K, length)], 1).flatten(
            0, 1
        )
        image_index = torch.arange(B, device=device).repeat_interleave(1 + K)
        other_images, same_image = self.draw_other_images(batch["pool_image"], passes.generator)
        M = other_images.shape[1]
        if M:
            input_ids = torch.cat([input_ids, positive_ids.repeat_interleave(M, 0)])
            attention_mask = torch.cat([attention_mask, positive_mask.repeat_interleave(M, 0)])
            image_index = torch.cat([image_index, other_images.flatten()])
        output = passes.run(
            backbone,
            {**batch, "attention_mask": attention_mask, UNPADDED: False},  # negatives may be padded
            input_ids,
            image_index=image_index,
            serves=(IRTR_PASS,),
        )
        scores = self.score(output.pooled)
        text_scores = scores[: B * (1 + K)].view(B, 1 + K)
        target = torch.zeros(B, dtype=torch.long, device=device)
        losses = {
            "loss": F.cross_entropy(text_scores, target),
            "accuracy": (text_scores.detach().argmax(-1) == 0).float().mean(),
        }
        if M:
            image_scores = torch.cat([text_scores[:, :1], scores[B * (1 + K) :].view(B, M)], 1)
            image_scores = image_scores.masked_fill(F.pad(same_image, (1, 0)), float("-inf"))
            losses["loss"] = (losses["loss"] + F.cross_entropy(image_scores, target)) / 2
            losses["image_accuracy"] = (image_scores.detach().argmax(-1) == 0).float().mean()
        return losses

    def draw_other_images(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each of the batch's (B,) pool ``images``: (B, M) batch positions of M other images
        drawn without replacement, and (B, M) bool, true where a pick shows the same pool image
        (a duplicate in a resampled stream; masked out of the loss). M = min(image_negatives,
        B - 1): a short last batch has fewer others to draw from.
        """
        B = images.shape[0]
        M = min(self.image_negatives, B - 1)
        device = draw_device(generator)
        if M <= 0:
            empty = torch.zeros(B, 0, dtype=torch.long, device=images.device)
            return empty, empty.bool()
        # Random keys, the batch position itself sorted last: the first M of each row are a
        # uniform draw without replacement from the other positions.
        keys = torch.rand(B, B, generator=generator, device=device)
        keys.fill_diagonal_(2.0)
        picks = keys.argsort(1)[:, :M].to(images.device)
        return picks, images[picks] == images[:, None]
