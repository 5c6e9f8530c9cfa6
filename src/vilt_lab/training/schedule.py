"""Linear warmup, then linear decay to 0, counted in optimizer steps.

The scheduler is stepped by the trainer once per optimizer step, never handed to
`accelerator.prepare`: Accelerate's wrapper steps it `num_processes` times per optimizer step
(accelerate/scheduler.py), and the official code's epoch-based step count ignored gradient
accumulation (dandelin/ViLT#19). Counting optimizer steps makes the curve independent of both.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_from(warmup: float | int, max_steps: int) -> int:
    """`warmup` as a step count: a float in [0, 1) is a fraction of `max_steps`, an int is steps."""
    if isinstance(warmup, float) and warmup < 1.0:
        if warmup < 0:
            raise ValueError(f"schedule.warmup={warmup} must be >= 0")
        return int(round(warmup * max_steps))
    steps = int(warmup)
    if steps != warmup or steps > max_steps:
        # The typed config holds a warmup as a float: a whole number is named as the steps it is.
        named = steps if steps == warmup else warmup
        raise ValueError(
            f"schedule.warmup={named}: use a fraction < 1 or a whole number of steps <= max_steps"
        )
    return steps


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the base learning rate after `step` optimizer steps.

    The official schedule (transformers' polynomial decay with power 1, lr_end 0): `step / warmup`
    while warming up, then a straight line from 1 at `warmup_steps` to 0 at `max_steps`.
    """
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup: float | int, max_steps: int) -> LambdaLR:
    """LambdaLR over every param group (so per-head `lr_mult` groups follow the same curve)."""
    warmup_steps = warmup_steps_from(warmup, max_steps)
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, max_steps))


def steps_for_epochs(items: int, epochs: float, global_batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over `items` at `global_batch_size` items a step.

    A function of the global batch alone, so the same under any gradient accumulation and any
    number of processes. The official fine-tuning count, `len(train_dataloader) * max_epochs //
    accumulate_grad_batches`, took the per-GPU loader length (dandelin/ViLT#19).
    """
    if items <= 0 or epochs <= 0:
        raise ValueError(f"an epoch schedule needs items and epochs > 0, got {items} items, {epochs} epochs")
    return max(1, math.ceil(items * epochs / global_batch_size))
