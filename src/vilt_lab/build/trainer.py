"""The trainer of a config: its settings, its optimizer and learning-rate schedule, and the
components that act around the loop. Without a run dir there are no checkpoints and no
metrics.jsonl: a notebook or a benchmark drives `Trainer.train_step` itself."""

from __future__ import annotations

from datetime import timedelta

import torch
from accelerate import Accelerator
from torch import nn

from ..config.schema import TrainSchema
from ..evaluation.evaluators import Evaluator
from ..training.checkpoint import CheckpointManager, TrainingState
from ..training.metrics_log import MetricsFile, MetricsLog
from ..training.optim import build_optimizer
from ..training.preemption import StopRequest
from ..training.run_dir import RunDir
from ..training.schedule import build_scheduler
from ..training.settings import TrainerSettings
from ..training.trainer import Trainer, TrainStream
from ..training.validate import Validator
from ..training.watchdog import ProgressWatchdog
from .settings import trainer_settings


def build_optimization(
    task: nn.Module, settings: TrainerSettings
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over `task`'s parameter groups (`optim.*`) and its warmup-then-decay schedule
    (`schedule.warmup` over the run's optimizer steps). Build it once `task` is on its device:
    AdamW picks its kernel (fused on CUDA) from where the parameters are."""
    optimizer = build_optimizer(task, settings.optim)
    return optimizer, build_scheduler(optimizer, settings.schedule.warmup, settings.max_steps)


def build_trainer(
    cfg: TrainSchema,
    accelerator: Accelerator,
    task: nn.Module,
    train_stream: TrainStream,
    evaluators: dict[str, Evaluator],
    run_dir: RunDir | None,
) -> Trainer:
    """The trainer of `cfg` for `task` (moved to the accelerator's device and prepared with its
    optimizer), evaluating with `evaluators`, keeping its checkpoints and metrics in `run_dir`."""
    settings = trainer_settings(cfg)
    task.to(accelerator.device)
    optimizer, scheduler = build_optimization(task, settings)
    # The scheduler is deliberately not prepared (see training/schedule.py).
    model, optimizer = accelerator.prepare(task, optimizer)
    metrics = MetricsLog(accelerator, settings, MetricsFile(run_dir.metrics) if run_dir is not None else None)
    checkpoints = None
    if run_dir is not None:
        state = TrainingState(accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler)
        checkpoints = CheckpointManager(run_dir.checkpoints, accelerator, state, settings)
    return Trainer(
        accelerator,
        model,
        optimizer,
        scheduler,
        settings,
        train_stream,
        metrics=metrics,
        validator=Validator(accelerator, evaluators, settings, metrics),
        checkpoints=checkpoints,
        watchdog=ProgressWatchdog(
            settings.trainer.watchdog_minutes,
            accelerator.process_index,
            run_dir.hang_report(accelerator.process_index) if run_dir is not None else None,
        ),
        # A run that saves acts on a scheduler's stop signal: it saves the step and stops.
        stop=StopRequest(accelerator, timedelta(minutes=settings.trainer.collective_timeout_min))
        if checkpoints is not None
        else None,
    )
