"""Masked language modelling (MLM): the objective; its masking runs in the data workers
(:mod:`vilt_lab.data.masking`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.model import MLMHead, ViltBackbone, ViltConfig

from .base import Objective
from .passes import MLM_PASS, TEXT, Passes


class MLMObjective(Objective):
    """Cross-entropy of the MLM head over masked tokens, on a pass of masked text and true images."""

    uses_pooler = False
    reads_pass = MLM_PASS
    reads_rows = TEXT

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.head = MLMHead(hidden_size, vocab_size)

    @classmethod
    def from_config(cls, config: ViltConfig) -> MLMObjective:
        return cls(config.hidden_size, config.vocab_size)

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        output = passes.get(
            MLM_PASS, lambda: passes.run(backbone, batch, batch["mlm_input_ids"], serves=(MLM_PASS,))
        )
        labels = batch["mlm_labels"].flatten()
        # The head (a D x V decoder, V = 30522 for BERT) runs on the masked tokens only, about 15%
        # of the real ones: the same loss, accuracy and gradients as decoding every position and
        # ignoring the rest, at a fraction of the cost. Their count sets a shape, so it comes from
        # the collate (`mlm_count`), not from the device (a host sync); a stable sort puts the
        # masked positions first, in the order `nonzero` would list them.
        count = batch["mlm_count"]
        positions = torch.argsort((labels == IGNORE_INDEX).to(torch.uint8), stable=True)[:count]
        targets = labels[positions]
        logits = self.head(output.text_feats.flatten(0, 1)[positions])
        # Sum / count rather than the mean reduction: a batch without any masked token then gives
        # loss 0 (not 0/0 = NaN) that still reaches every head parameter (zero gradients).
        loss = F.cross_entropy(logits.float(), targets, reduction="sum") / max(count, 1)
        correct = (logits.detach().argmax(-1) == targets).sum()
        # count: what loss and accuracy average over, so evaluation can weight them per token.
        return {
            "loss": loss,
            "accuracy": correct / max(count, 1),
            "count": torch.full((), float(count), device=labels.device),
        }
