"""The trainer's settings from a config: the schedule in optimizer steps (an epoch schedule
counted from the data), the evaluation interval, the selection metric."""

from __future__ import annotations

from ..config.schema import TrainSchema
from ..tasks import get_task
from ..training.schedule import steps_for_epochs
from ..training.trainer import TrainerSettings
from ..utils.progress import progress_style


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
        return int(steps)
    return steps_for_epochs(train_items(cfg), float(epochs), int(cfg.trainer.global_batch_size))


def eval_every(cfg: TrainSchema) -> int | None:
    """`trainer.eval_every`, or the steps between `trainer.evals_per_epoch` evaluations."""
    per_epoch = cfg.trainer.evals_per_epoch
    if per_epoch is None:
        return cfg.trainer.eval_every
    if cfg.trainer.eval_every is not None:
        raise ValueError("set trainer.eval_every or trainer.evals_per_epoch, not both")
    if cfg.schedule.max_epochs is None:
        raise ValueError("trainer.evals_per_epoch needs an epoch schedule (schedule.max_epochs)")
    steps_per_epoch = steps_for_epochs(train_items(cfg), 1.0, int(cfg.trainer.global_batch_size))
    return max(1, steps_per_epoch // int(per_epoch))


def trainer_settings(cfg: TrainSchema) -> TrainerSettings:
    o, t, s = cfg.optim, cfg.trainer, cfg.schedule
    task = get_task(cfg.task.name)
    return TrainerSettings(
        max_steps=max_steps(cfg),
        warmup=s.warmup,
        global_batch_size=int(t.global_batch_size),
        micro_batch_size=int(t.micro_batch_size),
        lr=float(o.lr),
        weight_decay=float(o.weight_decay),
        betas=tuple(o.betas),
        eps=float(o.eps),
        lr_mult=dict(o.lr_mult),
        grad_clip=o.grad_clip,
        log_every=int(t.log_every),
        ckpt_every=int(t.ckpt_every),
        keep_last=int(t.keep_last),
        eval_every=eval_every(cfg),
        select_metric=task.select_metric(cfg),
        select_mode=cfg.task.select_mode,
        progress=progress_style(t),
        seed=int(cfg.seed),
        nonfinite=str(t.nonfinite),
        max_skipped_steps=int(t.max_skipped_steps),
    )
