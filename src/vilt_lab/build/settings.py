"""The trainer's settings from a config: its nodes as the schema types them, the schedule in
optimizer steps (an epoch schedule counted from the data), the evaluation interval, the selection
metric."""

from __future__ import annotations

from omegaconf import DictConfig

from ..config.schema import AnyTask, OptimSchema, ScheduleSchema, TrainerSchema
from ..config.typed import typed
from ..tasks import get_task
from ..training.schedule import steps_for_epochs
from ..training.settings import TrainerSettings


def train_items(cfg: DictConfig) -> int:
    """Items in one epoch of the training data (every source's shards), for `schedule.max_epochs`."""
    task = get_task(cfg.task.name)
    return sum(task.count_items(cfg, source.urls) for source in cfg.data.sources.values())


def _max_steps(cfg: DictConfig, schedule: ScheduleSchema, trainer: TrainerSchema) -> int:
    """`schedule.max_steps`, or the optimizer steps of `schedule.max_epochs` epochs of the train split."""
    steps, epochs = schedule.max_steps, schedule.max_epochs
    if (steps is None) == (epochs is None):
        # The values as the config writes them (the schema holds an epoch count as a float).
        raise ValueError(
            f"set exactly one of schedule.max_steps ({cfg.schedule.max_steps}) and "
            f"schedule.max_epochs ({cfg.schedule.max_epochs})"
        )
    if steps is not None:
        return steps
    return steps_for_epochs(train_items(cfg), epochs, trainer.global_batch_size)


def _eval_every(cfg: DictConfig, schedule: ScheduleSchema, trainer: TrainerSchema) -> int | None:
    """`trainer.eval_every`, or the steps between `trainer.evals_per_epoch` evaluations."""
    if trainer.evals_per_epoch is None:
        return trainer.eval_every
    if trainer.eval_every is not None:
        raise ValueError("set trainer.eval_every or trainer.evals_per_epoch, not both")
    if schedule.max_epochs is None:
        raise ValueError("trainer.evals_per_epoch needs an epoch schedule (schedule.max_epochs)")
    steps_per_epoch = steps_for_epochs(train_items(cfg), 1.0, trainer.global_batch_size)
    return max(1, steps_per_epoch // trainer.evals_per_epoch)


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    trainer, schedule = typed(cfg.trainer, TrainerSchema), typed(cfg.schedule, ScheduleSchema)
    return TrainerSettings(
        trainer=trainer,
        optim=typed(cfg.optim, OptimSchema),
        schedule=schedule,
        seed=int(cfg.seed),
        max_steps=_max_steps(cfg, schedule, trainer),
        eval_every=_eval_every(cfg, schedule, trainer),
        select_metric=get_task(cfg.task.name).select_metric(cfg),
        select_mode=typed(cfg.task, AnyTask).select_mode,
    )
