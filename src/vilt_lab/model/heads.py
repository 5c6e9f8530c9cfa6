"""Heads on top of the backbone (shapes as in the official code, Sec. 1.8 of the reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .init import init_weights


class PredictionHeadTransform(nn.Module):
    """BERT's head transform: Linear -> GELU -> LayerNorm(eps 1e-12)."""

    def __init__(self, hidden_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class ITMHead(nn.Module):
    """Image-text matching: one Linear(hidden -> 2) on the pooled vector (1 = match)."""

    def __init__(self, hidden_size: int, std: float = 0.02) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, 2)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class MLMHead(nn.Module):
    """Masked language modelling: transform, then a decoder with its own bias.

    Not tied to the word embeddings, as in the official code (HF: tie_word_embeddings=False).
    """

    def __init__(self, hidden_size: int, vocab_size: int, eps: float = 1e-12, std: float = 0.02) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(lambda m: init_weights(m, std))

    def forward(self, text_feats: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(text_feats)) + self.bias


class MPPHead(nn.Module):
    """Masked patch prediction: transform, then Linear(hidden -> 3 x bins) (mean RGB classes)."""

    def __init__(self, hidden_size: int, bins: int = 256, eps: float = 1e-12, std: float = 0.02) -> None:
        super().__init__()
        self.bins = bins
        self.transform = PredictionHeadTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, 3 * bins)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, image_feats: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, 3, bins) logits."""
        return self.decoder(self.transform(image_feats)).unflatten(-1, (3, self.bins))
