"""The trainer's settings from a config: the typed `trainer`, `optim` and `schedule` nodes, the
schedule in optimizer steps (an epoch schedule counted from the data), the evaluation interval,
the selection metric."""

from __future__ import annotations

from ..config.schema import TrainSchema
from ..tasks import get_task
from ..training.schedule import steps_for_epochs
from ..training.settings import TrainerSettings


def train_items(cfg: TrainSchema) -> int:
    """Items in one epoch of the training data (every source's shards), for `schedule.max_epochs`."""
    task = get_task(cfg.task.name)
    return sum(task.count_items(cfg, source.urls) for source in cfg.data.sources.values())


def max_steps(cfg: TrainSchema) -> int:
    """`schedule.max_steps`, or the optimizer steps of `schedule.max_epochs` epochs of the train split."""
    steps, epochs = cfg.schedule.max_steps, cfg.schedule.max_epochs
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"set exactly one of schedule.max_steps ({steps}) and schedule.max_epochs ({epochs})"
        )
    if steps is not None:
        return steps
    return steps_for_epochs(train_items(cfg), epochs, cfg.trainer.global_batch_size)


def eval_every(cfg: TrainSchema) -> int | None:
    """`trainer.eval_every`, or the steps between `trainer.evals_per_epoch` evaluations."""
    trainer = cfg.trainer
    if trainer.evals_per_epoch is None:
        return trainer.eval_every
    if trainer.eval_every is not None:
        raise ValueError("set trainer.eval_every or trainer.evals_per_epoch, not both")
    if cfg.schedule.max_epochs is None:
        raise ValueError("trainer.evals_per_epoch needs an epoch schedule (schedule.max_epochs)")
    steps_per_epoch = steps_for_epochs(train_items(cfg), 1.0, trainer.global_batch_size)
    return max(1, steps_per_epoch // trainer.evals_per_epoch)


def trainer_settings(cfg: TrainSchema) -> TrainerSettings:
    return TrainerSettings(
        trainer=cfg.trainer,
        optim=cfg.optim,
        schedule=cfg.schedule,
        seed=cfg.seed,
        max_steps=max_steps(cfg),
        eval_every=eval_every(cfg),
        select_metric=get_task(cfg.task.name).select_metric(cfg),
        select_mode=cfg.task.select_mode,
    )
