"""AdamW with ViLT's parameter groups.

Biases and normalisation weights get no weight decay (the official code matches names; we use
`ndim <= 1`, which also catches LayerNorms inside `nn.Sequential` heads that the official name
matching misses). Parameters whose name starts with a prefix in `lr_mult` train at `lr * mult`
(the official VQA head uses 10).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_mult: Mapping[str, float] | None = None
) -> list[dict]:
    """Parameter groups keyed by (decay or not, learning-rate multiplier)."""
    lr_mult = dict(lr_mult or {})
    used_prefixes: set[str] = set()
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next((p for p in lr_mult if name.startswith(p)), None)
        if prefix is not None:
            used_prefixes.add(prefix)
        mult = lr_mult[prefix] if prefix is not None else 1.0
        decay = param.ndim > 1
        groups.setdefault((decay, mult), []).append(param)
    unused = sorted(set(lr_mult) - used_prefixes)
    if unused:
        raise KeyError(f"optim.lr_mult prefixes {unused} match no trainable parameter name")
    return [
        {"params": params, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
        for (decay, mult), params in groups.items()
    ]


def build_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
    lr_mult: Mapping[str, float] | None = None,
) -> torch.optim.AdamW:
    """AdamW (betas 0.9/0.98, eps 1e-8 as the official code) over `param_groups`."""
    return torch.optim.AdamW(
        param_groups(model, lr, weight_decay, lr_mult), lr=lr, betas=tuple(betas), eps=eps
    )
