"""The one Accelerate training loop, for every task.

The loop counts optimizer steps. One optimizer step is `accumulation` micro-batches on each of
`num_processes` processes, so global batch = micro batch x accumulation x processes. The data
stream, the per-step random generator (ITM negatives, patch sampling) and the checkpoints are all
functions of (seed, rank, step), which is what makes `resume=latest` continue exactly where a
straight run would have been.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch._dynamo.utils import counters as dynamo_counters

from ..evaluation.loop import to_device
from ..utils.metric_means import WeightedMeans, means_from_vector
from ..utils.progress import progress_bar, progress_style
from ..utils.seeds import step_seed
from .checkpoint import CheckpointManager
from .faults import fault_point
from .metrics_log import MetricsLog
from .nonfinite import NonFiniteGuard
from .preemption import StopRequest
from .settings import TrainerSettings
from .speed_levers import RecompileLimitWatch
from .validate import Validator
from .watchdog import ProgressWatchdog

log = logging.getLogger(__name__)

# A stream of batches starting at a given optimizer step (data position is a function of it).
TrainStream = Callable[[int], Iterable[dict[str, Any]]]


def accumulation_steps(global_batch: int, micro_batch: int, num_processes: int) -> int:
    """Micro-batches per optimizer step; the global batch must split evenly."""
    per_step = micro_batch * num_processes
    if global_batch % per_step:
        raise ValueError(
            f"trainer.global_batch_size={global_batch} is not a multiple of trainer.micro_batch_size="
            f"{micro_batch} x {num_processes} processes = {per_step}"
        )
    return global_batch // per_step


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # ru_maxrss is in KiB on Linux: the host process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _Counted:
    """An iterator that counts what it has handed out."""

    def __init__(self, items: Iterator[Any]) -> None:
        self.items, self.read = items, 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        item = next(self.items)
        self.read += 1
        return item


@dataclass
class StepResult:
    """What one optimizer step leaves for the loop to log."""

    outputs: list[dict[str, torch.Tensor]]  # each micro-batch's task outputs, in order
    grad_norm: torch.Tensor | None  # on the device; None: a step left out, or fp16 without clipping
    data_wait_s: float  # spent waiting for the micro-batches


@dataclass
class LogInterval:
    """What the loop gathers between two logging steps."""

    means: WeightedMeans = field(default_factory=WeightedMeans)
    data_wait_s: float = 0.0
    step_s: float = 0.0  # whole steps, data wait included

    def add(self, result: StepResult, step_s: float) -> None:
        for out in result.outputs:
            self.means.add(out)
        self.data_wait_s += result.data_wait_s
        self.step_s += step_s


class Trainer:
    """Trains `model` (a prepared task module whose forward(batch, generator) returns a dict with
    "loss") with its prepared `optimizer` and its `scheduler`, both built outside (`build.trainer`).

    `train_step` takes one optimizer step: its micro-batches with the step's random generator,
    the non-finite guard (`NonFiniteGuard`), the optimizer and the schedule. It needs no run dir,
    so a notebook or a benchmark can drive steps itself (`build_trainer(..., run_dir=None)`, the
    model in train mode). `fit` is the run's loop: it trains from `step` to `max_steps` and asks
    each component whether to act after each step:

    * `metrics` (`MetricsLog`) whether the step logs, and writes the values (metrics.jsonl, W&B);
    * `validator` (`Validator`) whether to evaluate, and runs the evaluators;
    * `checkpoints` (`CheckpointManager`, None: no checkpoints) which evaluation is the best,
      whether the step saves (checking the parameters first), and what a resume restores;
    * `watchdog` (`ProgressWatchdog`) ends the process when the steps stop.

    A step "reports" when any of them acts on it: the guard's `stop` mode reads the device only
    then. Every decision is a function of the step alone, the same on every process, so every
    process reaches every collective (gradient all-reduce, log reduction, evaluation gather,
    save) at the same step.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        settings: TrainerSettings,
        train_stream: TrainStream,
        *,
        metrics: MetricsLog,
        validator: Validator,
        checkpoints: CheckpointManager | None,
        watchdog: ProgressWatchdog,
        stop: StopRequest | None = None,
    ) -> None:
        self.acc = accelerator
        self.stop = stop  # None: a stop signal acts as it would without the trainer
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.settings = settings
        self.train_stream = train_stream
        self.metrics, self.validator, self.checkpoints = metrics, validator, checkpoints
        self.watchdog = watchdog
        t = settings.trainer
        self.accumulation = accumulation_steps(
            t.global_batch_size, t.micro_batch_size, accelerator.num_processes
        )
        self.guard = NonFiniteGuard(accelerator, t)
        self.recompile_limit = RecompileLimitWatch()
        self.step = 0
        # Where the train stream stands: the step it was started (seeded) at and the micro-batches
        # read from it since. Checkpoints on schedule restart it (start = their step, 0 read); a
        # stop between them saves its position, and the resume reads the same stream up to it.
        self.stream_position = (0, 0)
        self.samples_skipped = 0
        self.extra_state: dict[str, Any] = {}  # kept in every checkpoint besides the loop's own

    # ----------------------------------------------------------------------------- resume
    def restore(self, path: Path | None) -> dict[str, Any]:
        """Continue from checkpoint `path` (None: a fresh start); return its trainer state.
        Choosing the checkpoint is `training.checkpoint.resume_checkpoint`'s job."""
        if path is None:
            return {}
        state = self.checkpoints.load(path)
        self.step = int(state["step"])
        self.stream_position = tuple(state.get("stream_position", (self.step, 0)))
        self.samples_skipped = int(state.get("samples_skipped", 0))
        self.guard.steps_skipped = int(state.get("steps_skipped", 0))
        self.metrics.truncate_after(self.step)
        log.info("resumed from %s at step %d", path, self.step)
        return state

    def trainer_state(self) -> dict[str, Any]:
        return {
            "stream_position": list(self.stream_position),
            "samples_skipped": self.samples_skipped,
            "steps_skipped": self.guard.steps_skipped,
            "best": self.checkpoints.best if self.checkpoints is not None else None,
            **self.extra_state,
        }

    def reports(self, step: int) -> bool:
        """Whether `step` logs, evaluates or saves: something of it leaves the process."""
        return (
            self.metrics.due(step)
            or self.validator.due(step)
            or (self.checkpoints is not None and self.checkpoints.due(step))
        )

    # ----------------------------------------------------------------------------- one step
    def train_step(self, batches: Iterator[dict[str, Any]]) -> StepResult:
        """Take optimizer step `step + 1` on the next `accumulation` micro-batches of `batches`.

        A step the guard leaves out (`trainer.nonfinite=skip`) still counts: the data position
        and the random draws are functions of the step, so a resumed run stays aligned.
        """
        outputs: list[dict[str, torch.Tensor]] = []
        losses, wait = None, 0.0
        for micro in range(self.accumulation):
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            self.samples_skipped += int(batch.pop("skipped", 0))
            out = self._micro_step(to_device(batch, self.acc.device), micro)
            outputs.append(out)
            loss_names = sorted(k for k in out if k.endswith("/loss"))
            micro_losses = (
                torch.stack([out[k].float() for k in loss_names])
                if loss_names
                else out["loss"].detach().reshape(1)
            )
            losses = micro_losses if losses is None else losses + micro_losses
        grad_norm = self._optimizer_step(losses, loss_names or ["loss"])
        self.step += 1
        return StepResult(outputs, grad_norm, wait)

    def _micro_step(self, batch: dict[str, Any], micro: int) -> dict[str, torch.Tensor]:
        acc = self.acc
        generator = torch.Generator(device=acc.device).manual_seed(
            step_seed(self.settings.seed, acc.process_index, self.step, micro)
        )
        last = micro == self.accumulation - 1
        # Gradients are all-reduced only on the last micro-batch of an optimizer step.
        with nullcontext() if last else acc.no_sync(self.model):
            with acc.autocast():
                out = self.model(batch, generator=generator)
            acc.backward(out["loss"] / self.accumulation)
        return out

    def _optimizer_step(self, losses: torch.Tensor, loss_names: list[str]) -> torch.Tensor | None:
        """Step unless the guard refuses; return the gradient norm (a device tensor, read only
        when logged). Under fp16 without `optim.grad_clip` the gradients are still multiplied by
        the loss scale here (clipping unscales them first), so no norm is returned."""
        acc, grad_clip = self.acc, self.settings.optim.grad_clip
        params = [p for p in self.model.parameters() if p.grad is not None]
        if grad_clip:
            grad_norm = acc.clip_grad_norm_(params, grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if not self.guard.admits(self.step + 1, losses, loss_names, grad_norm, self.reports(self.step + 1)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        # An fp16 step skipped for inf gradients must not advance the learning-rate curve.
        if not acc.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm.detach() if grad_clip or acc.scaler is None else None

    # ----------------------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train to `max_steps`, under the progress watchdog (`trainer.watchdog_minutes`); on a
        stop signal (`training.preemption`) every process stops after the same step, saved, and
        `Stopped` is raised."""
        with self.watchdog.watching(self.step), self.stop if self.stop is not None else nullcontext():
            self._fit()

    def _open_stream(self) -> _Counted:
        """The train stream at `stream_position`: started at its step, read up to where it was."""
        start, read = self.stream_position
        batches = _Counted(iter(self.train_stream(start)))
        if read:
            log.info(
                "reading the train stream started at step %d up to where it stopped (%d micro-batches)",
                start,
                read,
            )
            for _ in range(read):
                next(batches)
        return batches

    def _fit(self) -> None:
        t = self.settings.trainer
        self.model.train()
        batches = self._open_stream()
        interval = LogInterval()
        bar = progress_bar(
            desc="train",
            style=progress_style(t).only_if(self.acc.is_main_process),
            total=self.settings.max_steps,
            initial=self.step,
            unit="step",
        )
        while self.step < self.settings.max_steps:
            t0 = time.perf_counter()
            result = self.train_step(batches)
            self.watchdog.beat(self.step)
            fault_point("step")
            interval.add(result, time.perf_counter() - t0)
            if self.metrics.due(self.step):
                self._log_train(interval, result.grad_norm, bar)
                interval = LogInterval()
            bar.update(1)  # after the log: a progress line shows this step's values
            if self.validator.due(self.step):
                with self.watchdog.paused():
                    values = self.validator.evaluate(self.acc.unwrap_model(self.model), self.step)
                if self.checkpoints is not None:
                    self.checkpoints.select(self.step, values)
            if self.checkpoints is not None and self.checkpoints.due(self.step):
                # The stream restarts from the checkpoint's step so that a resumed run and this
                # one read the same batches from here on.
                self.stream_position = (self.step, 0)
                self.checkpoints.save(self.step, self.trainer_state())
                if self.step < self.settings.max_steps:
                    batches = self._open_stream()
            signum = self.stop.agreed() if self.stop is not None else None
            if signum is not None:
                if self.checkpoints is not None and self.stream_position[0] != self.step:
                    self.stream_position = (self.stream_position[0], batches.read)
                    self.checkpoints.save(self.step, self.trainer_state())
                bar.close()
                raise self.stop.stopped(signum, self.step)
        bar.close()
        if self.validator.due_after_training(self.step):
            with self.watchdog.paused():
                self.validator.evaluate(self.acc.unwrap_model(self.model), self.step)

    def _log_train(self, interval: LogInterval, grad_norm: torch.Tensor | None, bar) -> None:
        acc, running, busy = self.acc, interval.means, interval.step_s
        keys = running.keys()
        # Collective: every process reaches this at the same step (with the same keys).
        sums = acc.reduce(torch.tensor(running.vector(keys), device=acc.device, dtype=torch.float64), "sum")
        skipped = acc.reduce(torch.tensor([float(self.samples_skipped)], device=acc.device), reduction="sum")
        values = {f"train/{k}": v for k, v in means_from_vector(keys, sums.tolist()).items()}
        values.update(
            {
                "train/lr": self.scheduler.get_last_lr()[0],
                "train/samples_per_s": self.settings.trainer.global_batch_size
                * running.updates
                / self.accumulation
                / max(busy, 1e-9),
                "train/data_wait_fraction": interval.data_wait_s / max(busy, 1e-9),
                "train/samples_skipped": int(skipped.item()),
                "train/peak_memory_gib": peak_memory_gib(acc.device),
            }
        )
        if grad_norm is not None:
            values["train/grad_norm"] = float(grad_norm)
        # Graphs torch.compile made in this process so far (trainer.compile): a count that keeps
        # growing means a recompile per new shape (see trainer.compile_dynamic, data.text_padding).
        compiles = dynamo_counters["stats"]["unique_graphs"]
        if compiles:
            values["train/compiles"] = compiles
        # Code objects dynamo stopped compiling (their new shapes run eager), evaluation's included.
        fallbacks = self.recompile_limit.check()
        if fallbacks:
            values["train/compile_fallbacks"] = fallbacks
        if self.guard.steps_skipped:
            values["train/steps_skipped"] = self.guard.steps_skipped
        self.metrics.write(self.step, values)
        bar.set_postfix(
            loss=f"{values.get('train/loss', float('nan')):.3f}",
            lr=f"{values['train/lr']:.2e}",
            **{"samples/s": f"{values['train/samples_per_s']:.1f}"},
        )
