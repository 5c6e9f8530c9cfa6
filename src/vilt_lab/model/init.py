"""Weight initialisation shared by the backbone and the heads (official ViLT `init_weights`)."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) for Linear and Embedding weights, zero biases, LayerNorm 1/0.

    Conv layers (the patch projection) keep PyTorch's default, as in the official code.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
