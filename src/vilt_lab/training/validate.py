"""Evaluation during training: when it runs, and running it.

The evaluators (:mod:`vilt_lab.evaluation.evaluators`) run every `eval_every` steps, at the last
step (before that step's checkpoint, so the checkpoint knows whether it is the best), and once
more when a finished run is run again (resumed from its final checkpoint, it trains no step).
"""

from __future__ import annotations

import time

from accelerate import Accelerator
from torch import nn

from ..evaluation.evaluators import Evaluator
from .metrics_log import MetricsLog
from .settings import TrainerSettings


class Validator:
    """evaluators: metric prefix (``eval`` for the validation split, ``test`` for a test split)
    -> an evaluator; none: the loop never evaluates."""

    def __init__(
        self,
        accelerator: Accelerator,
        evaluators: dict[str, Evaluator],
        settings: TrainerSettings,
        metrics: MetricsLog,
    ) -> None:
        self.acc = accelerator
        self.evaluators = dict(evaluators)
        self.settings = settings
        self.metrics = metrics
        self.last_values: dict[str, float] = {}
        self.last_step: int | None = None
        self.seconds = 0.0  # spent evaluating, so training time can be told apart

    def due(self, step: int) -> bool:
        """Whether the loop evaluates after optimizer step `step`."""
        every = self.settings.eval_every
        return bool(self.evaluators) and (
            step == self.settings.max_steps or bool(every and step % every == 0)
        )

    def due_after_training(self, step: int) -> bool:
        """Whether the loop, ended at `step`, still has to evaluate its final model: it has not
        (resumed from the final checkpoint of a finished run)."""
        return bool(self.evaluators) and self.last_step != step

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Run every evaluator on `model` (unwrapped); log the values at `step`.

        Collective: every process calls it at the same step. Inside, each process evaluates its
        own share with no collective until the evaluator's one gather (uneven shares cannot hang).
        """
        t0 = time.perf_counter()
        values: dict[str, float] = {}
        for prefix, evaluator in self.evaluators.items():
            values.update({f"{prefix}/{k}": v for k, v in evaluator(model, self.acc).items()})
        self.seconds += time.perf_counter() - t0
        self.metrics.write(step, values)
        self.last_values, self.last_step = values, step
        return values
