"""The one guard against non-finite values: losses and the gradient norm before each optimizer
step (`trainer.nonfinite`), parameters before each save.

Every process decides alike (a NaN on one rank alone would otherwise leave the others stepping,
and the job hung):

* ``skip`` all-reduces the health of every step and reads it (one host sync per step: whether
  the step counts, and moves the learning-rate schedule, is decided on the host). A step with a
  non-finite entry takes no optimizer step, at most `trainer.max_skipped_steps` times.
* ``stop`` keeps each entry's first non-finite step on the device and reads it, gathered, only
  at a step that reports (logs, evaluates or saves), before that step's update. Between two such
  steps the host never waits for the device; a non-finite update there reaches the weights in
  memory only, since the run stops at the next such step, before anything is saved.
"""

from __future__ import annotations

import logging
import math

import torch
from accelerate import Accelerator
from torch import nn

from ..config.schema import TrainerSchema

log = logging.getLogger(__name__)

# "Not yet" for the first non-finite step of a health entry (above any step count).
NEVER = 2**62


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter went non-finite (see `trainer.nonfinite`)."""


class NonFiniteGuard:
    """Whether an optimizer step may update the weights (see the module docstring)."""

    def __init__(self, accelerator: Accelerator, trainer: TrainerSchema) -> None:
        self.acc = accelerator
        self.trainer = trainer
        self.steps_skipped = 0  # optimizer steps left out (trainer.nonfinite=skip), checkpointed
        # trainer.nonfinite=stop: per health entry (each loss, the gradient norm), the first step
        # it went non-finite on this process (NEVER: not yet), kept on the device.
        self.first_nonfinite: torch.Tensor | None = None

    def admits(
        self,
        step: int,
        losses: torch.Tensor,
        loss_names: list[str],
        grad_norm: torch.Tensor,
        reports: bool,
    ) -> bool:
        """Whether optimizer step `step` (the one being taken) may update the weights; raises
        NonFiniteError when the run must stop.

        losses: this process's per-objective losses summed over the step's micro-batches (on the
        device). reports: whether `step` logs, evaluates or saves (`stop` reads only then).
        Collective under `skip`, and under `stop` at a reporting step: every process calls it
        with the same `step` and `reports`.
        """
        # Under fp16 an inf gradient is routine: the GradScaler skips that step and lowers the
        # scale. Only the losses are ours to judge there.
        checked_norm = torch.zeros_like(grad_norm) if self.acc.scaler is not None else grad_norm
        health = torch.cat([losses.float(), checked_norm.reshape(1).float()])
        names = [*loss_names, "gradient norm"]
        if self.trainer.nonfinite == "skip":
            if self.acc.num_processes > 1:
                health = self.acc.reduce(health, reduction="sum")
            bad = [name for name, v in zip(names, health.tolist(), strict=True) if not math.isfinite(v)]
            if bad:
                self._refuse_step(step, bad)
                return False
            return True
        self._note_nonfinite(step, health)
        if reports:
            self._stop_if_nonfinite(step, names)
        return True

    def _note_nonfinite(self, step: int, health: torch.Tensor) -> None:
        """Remember, on the device, the step each health entry first went non-finite."""
        at = torch.full_like(health, step, dtype=torch.long)
        never = torch.full_like(at, NEVER)
        if self.first_nonfinite is None:
            self.first_nonfinite = never
        self.first_nonfinite = torch.minimum(
            self.first_nonfinite, torch.where(torch.isfinite(health), never, at)
        )

    def _stop_if_nonfinite(self, now: int, names: list[str]) -> None:
        """trainer.nonfinite=stop: raise if any process saw a non-finite entry (collective)."""
        first = self.first_nonfinite
        if self.acc.num_processes > 1:
            first = self.acc.gather(first).reshape(self.acc.num_processes, -1).amin(0)
        first = first.tolist()
        step = min(first)
        if step == NEVER:
            return
        bad = [name for name, at in zip(names, first, strict=True) if at == step]
        untaken = (
            "no optimizer step was taken and no checkpoint written"
            if step == now
            else f"found at step {now}, the next step that logs, evaluates or saves; no checkpoint "
            "written since"
        )
        raise NonFiniteError(
            f"step {step}: non-finite {', '.join(bad)}; {untaken}, the run dir's checkpoints hold "
            "finite weights (trainer.nonfinite=stop; trainer.nonfinite=skip leaves such steps out)"
        )

    def _refuse_step(self, step: int, bad: list[str]) -> None:
        """trainer.nonfinite=skip: a step whose loss or gradient went non-finite took no optimizer
        step: count it, or stop once trainer.max_skipped_steps are used up."""
        limit = self.trainer.max_skipped_steps
        if self.steps_skipped < limit:
            self.steps_skipped += 1
            log.warning(
                "step %d: non-finite %s: no optimizer step (%d of trainer.max_skipped_steps=%d skipped)",
                step,
                ", ".join(bad),
                self.steps_skipped,
                limit,
            )
            return
        raise NonFiniteError(
            f"step {step}: non-finite {', '.join(bad)}; no optimizer step was taken and no checkpoint "
            f"written, the run dir's checkpoints hold finite weights (trainer.max_skipped_steps="
            f"{limit} already skipped)"
        )


def check_finite_parameters(model: nn.Module, step: int) -> None:
    """No checkpoint with a non-finite parameter is ever written (one host sync per save)."""
    named = list(model.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()
    bad = [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
    if bad:
        raise NonFiniteError(
            f"step {step}: non-finite parameters {bad[:3]}{' ...' if len(bad) > 3 else ''}: "
            "the checkpoint is not written"
        )
