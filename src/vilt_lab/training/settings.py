"""What the training loop and its components read: config nodes as the schema types them, and the
values derived from the config and the data.

Every key and its default is declared once, in `vilt_lab.config.schema`; `build.settings` fills
this from a config. Each component reads the keys it acts on from the node itself, so a new
trainer key is its declaration in the schema and its one consumer, with nothing in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.schema import OptimSchema, ScheduleSchema, TrainerSchema


@dataclass(frozen=True)
class TrainerSettings:
    """The `trainer`, `optim` and `schedule` nodes, the seed, and what `build.settings` derives."""

    trainer: TrainerSchema
    optim: OptimSchema
    schedule: ScheduleSchema
    seed: int
    # Optimizer steps: schedule.max_steps, or those of schedule.max_epochs over the training data.
    max_steps: int
    # Steps between evaluations: trainer.eval_every, or from trainer.evals_per_epoch (None: at the end only).
    eval_every: int | None
    # The metric the best checkpoint is kept by (task.select_metric, else the task's own), and
    # whether higher (max) or lower (min) is better (task.select_mode).
    select_metric: str | None
    select_mode: str
