"""AdamW with ViLT's parameter groups.

Biases and normalisation weights get no weight decay (the official code matches names; we use
`ndim <= 1`, which also catches LayerNorms inside `nn.Sequential` heads that the official name
matching misses), and neither do the parameters that a submodule's `no_weight_decay()` names,
timm-style: relative to that submodule, so `backbone.no_weight_decay()` returning {"pos_embed"}
exempts `backbone.pos_embed`. ViltBackbone's set is empty: the official code decays `pos_embed`
and `cls_token`, which timm exempts. Parameters whose name starts with a prefix in `lr_mult` train
at `lr * mult` (the official VQA head uses 10).

The update runs as PyTorch's fused AdamW kernel when every parameter sits on CUDA (one launch
for every parameter instead of a few per tensor) or every one on the CPU (one vectorised pass
over parameter, gradient and both moments instead of about eight element-wise passes: 3.2x
faster on 2 EPYC cores, a sixth of a ViLT-B/32 CPU step); elsewhere as PyTorch's default. Both
compute the same update (equal within fp32 rounding, tests/test_speed_levers.py). Which one ran
is an implementation detail of the process, not of the run: a checkpoint restores into either
(see `keep_implementation`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..config.schema import OptimSchema


def no_weight_decay(model: nn.Module) -> set[str]:
    """The parameter names of `model` that its submodules' `no_weight_decay()` exempt, each
    prefixed with its submodule's name (`model` itself included, with no prefix)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if hasattr(module, "no_weight_decay"):
            names.update(f"{prefix}.{name}" if prefix else name for name in module.no_weight_decay())
    unknown = sorted(names - {name for name, _ in model.named_parameters()})
    if unknown:
        raise KeyError(f"no_weight_decay() names {unknown}, which are no parameters of the model")
    return names


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_mult: Mapping[str, float] | None = None
) -> list[dict]:
    """Parameter groups keyed by (decay or not, learning-rate multiplier); no decay for `ndim <= 1`
    and for the names `no_weight_decay` gives."""
    lr_mult = dict(lr_mult or {})
    exempt = no_weight_decay(model)
    used_prefixes: set[str] = set()
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next((p for p in lr_mult if name.startswith(p)), None)
        if prefix is not None:
            used_prefixes.add(prefix)
        mult = lr_mult[prefix] if prefix is not None else 1.0
        decay = param.ndim > 1 and name not in exempt
        groups.setdefault((decay, mult), []).append(param)
    unused = sorted(set(lr_mult) - used_prefixes)
    if unused:
        raise KeyError(f"optim.lr_mult prefixes {unused} match no trainable parameter name")
    return [
        {"params": params, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
        for (decay, mult), params in groups.items()
    ]


def implementation(model: nn.Module) -> dict[str, bool | None]:
    """AdamW's implementation flags for `model`'s parameters: fused when they all sit on CUDA or
    all on the CPU (the devices torch>=2.4 has the kernel for; a mixed-device model cannot use
    it), PyTorch's default otherwise."""
    devices = {p.device.type for p in model.parameters()}
    fused = len(devices) == 1 and devices <= {"cuda", "cpu"}
    return {"fused": True if fused else None, "foreach": None}


def keep_implementation(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A load_state_dict pre-hook: the restored param groups keep this optimizer's fused / foreach
    flags rather than the saving process's, so a checkpoint written by a fused (GPU) run resumes
    on a CPU and the other way round, with AdamW's state moved where the implementation wants it."""
    flags = {key: optimizer.defaults[key] for key in ("fused", "foreach")}
    return {**state, "param_groups": [{**group, **flags} for group in state["param_groups"]]}


def build_optimizer(model: nn.Module, optim: OptimSchema) -> torch.optim.AdamW:
    """AdamW as `optim.*` says (conf/optim/adamw.yaml: betas 0.9/0.98, eps 1e-8 as the official
    code) over `param_groups`, fused where the kernel exists (`implementation`): build it after
    moving the model to its device."""
    optimizer = torch.optim.AdamW(
        param_groups(model, optim.lr, optim.weight_decay, optim.lr_mult),
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        **implementation(model),
    )
    optimizer.register_load_state_dict_pre_hook(keep_implementation)
    return optimizer
