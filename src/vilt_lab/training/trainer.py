"""The one Accelerate training loop, for every task.

The loop counts optimizer steps. One optimizer step is `accumulation` micro-batches on each of
`num_processes` processes, so global batch = micro batch x accumulation x processes. The data
stream, the per-step random generator (ITM negatives, patch sampling) and the checkpoints are all
functions of (seed, rank, step), which is what makes `resume=latest` continue exactly where a
straight run would have been.
"""

from __future__ import annotations

import logging
import math
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

from ..evaluation.evaluators import Evaluator
from ..evaluation.loop import to_device
from ..utils.metric_means import WeightedMeans, means_from_vector
from ..utils.progress import ProgressStyle, progress_bar
from ..utils.seeds import step_seed
from .checkpoint import CheckpointManager, TrainingState
from .faults import fault_point
from .metrics_log import MetricsLog
from .optim import build_optimizer
from .schedule import build_scheduler

log = logging.getLogger(__name__)

# A stream of batches starting at a given optimizer step (data position is a function of it).
TrainStream = Callable[[int], Iterable[dict[str, Any]]]


# "Not yet" for the first non-finite step of a health entry (above any step count).
NEVER = 2**62


class NonFiniteError(FloatingPointError):
    """A loss, gradient or parameter went non-finite (see `trainer.nonfinite`)."""


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


@dataclass
class TrainerSettings:
    """Everything the loop needs besides the model and the data (see conf/trainer, optim, schedule)."""

    max_steps: int
    warmup: float | int
    global_batch_size: int
    micro_batch_size: int
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    lr_mult: dict[str, float] = field(default_factory=dict)
    grad_clip: float | None = None
    log_every: int = 10
    ckpt_every: int = 1000
    keep_last: int = 3
    eval_every: int | None = None
    select_metric: str | None = None
    select_mode: str = "max"
    progress: ProgressStyle = field(default_factory=ProgressStyle)
    seed: int = 0
    nonfinite: str = "stop"
    max_skipped_steps: int = 10

    def __post_init__(self) -> None:
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"trainer.nonfinite={self.nonfinite!r}: expected stop or skip")
        if self.select_mode not in ("max", "min"):
            raise ValueError(f"task.select_mode={self.select_mode!r}: expected max or min")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"trainer.eval_every={self.eval_every}: a positive step count, or null")


class Trainer:
    """Trains `task` (a module whose forward(batch, generator) returns a dict with "loss").

    evaluators: metric prefix (``eval`` for the validation split, ``test`` for a test split) ->
    an evaluator (:mod:`vilt_lab.evaluation.evaluators`), run every ``eval_every`` steps and at
    the end. The checkpoint of the best ``select_metric`` is kept besides the last ``keep_last``.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        task: nn.Module,
        settings: TrainerSettings,
        run_dir: Path,
        train_stream: TrainStream,
        evaluators: dict[str, Evaluator] | None = None,
    ) -> None:
        self.acc = accelerator
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.train_stream = train_stream
        self.evaluators = dict(evaluators or {})
        self.accumulation = accumulation_steps(
            settings.global_batch_size, settings.micro_batch_size, accelerator.num_processes
        )
        # On its device before the optimizer is built: AdamW picks its kernel (fused on CUDA) from
        # where the parameters are.
        task.to(accelerator.device)
        optimizer = build_optimizer(
            task, settings.lr, settings.weight_decay, settings.betas, settings.eps, settings.lr_mult
        )
        # The scheduler is deliberately not prepared (see training/schedule.py).
        self.scheduler = build_scheduler(optimizer, settings.warmup, settings.max_steps)
        self.model, self.optimizer = accelerator.prepare(task, optimizer)
        restored = TrainingState(
            accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, accelerator.scaler
        )
        self.checkpoints = CheckpointManager(
            self.run_dir / "checkpoints", accelerator, restored, settings.keep_last
        )
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
        self.step = 0
        self.samples_skipped = 0
        self.steps_skipped = 0  # optimizer steps left out for a non-finite loss (trainer.nonfinite=skip)
        self.extra_state: dict[str, Any] = {}
        # {"step", "metric", "value"} of the best evaluation so far (kept in every checkpoint).
        self.best: dict[str, Any] | None = None
        self.last_eval: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.eval_seconds = 0.0  # spent in evaluation, so training time can be told apart
        # trainer.nonfinite=stop: per health entry (each loss, the gradient norm), the first step
        # it went non-finite on this process (NEVER: not yet), kept on the device.
        self.first_nonfinite: torch.Tensor | None = None

    # ----------------------------------------------------------------------------- resume
    def restore(self, path: Path | None) -> dict[str, Any]:
        """Continue from checkpoint `path` (None: a fresh start); return its trainer state.
        Choosing the checkpoint is `training.checkpoint.resume_checkpoint`'s job."""
        if path is None:
            return {}
        state = self.checkpoints.load(path)
        self.step = int(state["step"])
        self.samples_skipped = int(state.get("samples_skipped", 0))
        self.steps_skipped = int(state.get("steps_skipped", 0))
        self.best = state.get("best")
        self.metrics.truncate_after(self.step)
        log.info("resumed from %s at step %d", path, self.step)
        return state

    def trainer_state(self) -> dict[str, Any]:
        return {
            "samples_skipped": self.samples_skipped,
            "steps_skipped": self.steps_skipped,
            "best": self.best,
            **self.extra_state,
        }

    def _save(self) -> None:
        self._check_finite_parameters()
        keep = self.best["step"] if self.best is not None else None
        self.checkpoints.save(self.step, self.trainer_state(), keep_step=keep)

    # ----------------------------------------------------------------------------- training
    def _micro_step(self, batch: dict[str, Any], micro: int) -> dict[str, torch.Tensor]:
        s, acc = self.settings, self.acc
        generator = torch.Generator(device=acc.device).manual_seed(
            step_seed(s.seed, acc.process_index, self.step, micro)
        )
        last = micro == self.accumulation - 1
        # Gradients are all-reduced only on the last micro-batch of an optimizer step.
        with nullcontext() if last else acc.no_sync(self.model):
            with acc.autocast():
                out = self.model(batch, generator=generator)
            acc.backward(out["loss"] / self.accumulation)
        return out

    def _reports(self, step: int) -> bool:
        """Whether `step` logs, evaluates or saves: something of it leaves the process."""
        s = self.settings
        return (
            step % s.log_every == 0
            or step % s.ckpt_every == 0
            or step == s.max_steps
            or bool(self.evaluators and s.eval_every and step % s.eval_every == 0)
        )

    def _optimizer_step(self, losses: torch.Tensor, loss_names: list[str]) -> torch.Tensor | None:
        """Step unless a loss or the gradient norm is non-finite; return the gradient norm (a
        device tensor, read only when logged) when `optim.grad_clip` computes it.

        losses: this process's per-objective losses summed over the step's micro-batches (on the
        device). Every process decides alike (a NaN on one rank alone would otherwise leave the
        others stepping, and the job hung): `trainer.nonfinite=skip` all-reduces the health of
        every step and reads it (one host sync per step: whether the step counts, and moves the
        learning-rate schedule, is decided on the host); `stop` keeps each entry's first
        non-finite step on the device and reads it, gathered, only at a step that logs, evaluates
        or saves, before that step's update. Between two such steps the host never waits for the
        device; a non-finite update there reaches the weights in memory only, since the run stops
        at the next such step, before anything is saved.
        """
        s, acc = self.settings, self.acc
        params = [p for p in self.model.parameters() if p.grad is not None]
        if s.grad_clip:
            grad_norm = acc.clip_grad_norm_(params, s.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # Under fp16 an inf gradient is routine: the GradScaler skips that step and lowers the
        # scale. Only the losses are ours to judge there.
        checked_norm = torch.zeros_like(grad_norm) if acc.scaler is not None else grad_norm
        health = torch.cat([losses.float(), checked_norm.reshape(1).float()])
        names = [*loss_names, "gradient norm"]
        if s.nonfinite == "skip":
            if acc.num_processes > 1:
                health = acc.reduce(health, reduction="sum")
            bad = [name for name, v in zip(names, health.tolist(), strict=True) if not math.isfinite(v)]
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                self._refuse_step(bad)
                return None
        else:
            self._note_nonfinite(health)
            if self._reports(self.step + 1):
                self._stop_if_nonfinite(names)
        self.optimizer.step()
        # An fp16 step skipped for inf gradients must not advance the learning-rate curve.
        if not acc.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm.detach() if s.grad_clip else None

    def _note_nonfinite(self, health: torch.Tensor) -> None:
        """Remember, on the device, the step each health entry first went non-finite."""
        step = torch.full_like(health, self.step + 1, dtype=torch.long)
        never = torch.full_like(step, NEVER)
        if self.first_nonfinite is None:
            self.first_nonfinite = never
        self.first_nonfinite = torch.minimum(
            self.first_nonfinite, torch.where(torch.isfinite(health), never, step)
        )

    def _stop_if_nonfinite(self, names: list[str]) -> None:
        """trainer.nonfinite=stop: raise if any process saw a non-finite entry (collective)."""
        first = self.first_nonfinite
        if self.acc.num_processes > 1:
            first = self.acc.gather(first).reshape(self.acc.num_processes, -1).amin(0)
        first = first.tolist()
        step = min(first)
        if step == NEVER:
            return
        bad = [name for name, at in zip(names, first, strict=True) if at == step]
        now = self.step + 1
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

    def _refuse_step(self, bad: list[str]) -> None:
        """trainer.nonfinite=skip: a step whose loss or gradient went non-finite took no optimizer
        step: count it, or stop once trainer.max_skipped_steps are used up."""
        s = self.settings
        step = self.step + 1
        if self.steps_skipped < s.max_skipped_steps:
            self.steps_skipped += 1
            log.warning(
                "step %d: non-finite %s: no optimizer step (%d of trainer.max_skipped_steps=%d skipped)",
                step,
                ", ".join(bad),
                self.steps_skipped,
                s.max_skipped_steps,
            )
            return
        raise NonFiniteError(
            f"step {step}: non-finite {', '.join(bad)}; no optimizer step was taken and no checkpoint "
            f"written, the run dir's checkpoints hold finite weights (trainer.max_skipped_steps="
            f"{s.max_skipped_steps} already skipped)"
        )

    def _check_finite_parameters(self) -> None:
        """No checkpoint with a non-finite parameter is ever written (one host sync per save)."""
        model = self.acc.unwrap_model(self.model)
        named = list(model.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()
        bad = [name for (name, _), ok in zip(named, finite, strict=True) if not ok]
        if bad:
            raise NonFiniteError(
                f"step {self.step}: non-finite parameters {bad[:3]}{' ...' if len(bad) > 3 else ''}: "
                "the checkpoint is not written"
            )

    def _batches(self) -> Iterator[dict[str, Any]]:
        return iter(self.train_stream(self.step))

    def fit(self) -> None:
        s, acc = self.settings, self.acc
        self.model.train()
        batches = self._batches()
        running = WeightedMeans()
        wait = busy = 0.0
        bar = progress_bar(
            desc="train",
            style=s.progress.only_if(acc.is_main_process),
            total=s.max_steps,
            initial=self.step,
            unit="step",
        )
        while self.step < s.max_steps:
            t0 = time.perf_counter()
            losses = None
            for micro in range(self.accumulation):
                tw = time.perf_counter()
                batch = next(batches)
                wait += time.perf_counter() - tw
                self.samples_skipped += int(batch.pop("skipped", 0))
                out = self._micro_step(to_device(batch, acc.device), micro)
                running.add(out)
                loss_names = sorted(k for k in out if k.endswith("/loss"))
                micro_losses = (
                    torch.stack([out[k].float() for k in loss_names])
                    if loss_names
                    else out["loss"].detach().reshape(1)
                )
                losses = micro_losses if losses is None else losses + micro_losses
            grad_norm = self._optimizer_step(losses, loss_names or ["loss"])
            # A left-out step still counts: the data position and the random draws are functions
            # of the step, so a resumed run stays aligned with this one.
            self.step += 1
            fault_point("step")
            busy += time.perf_counter() - t0
            if self.step % s.log_every == 0 or self.step == s.max_steps:  # one of `_reports`
                self._log_train(running, grad_norm, wait, busy, bar)
                running, wait, busy = WeightedMeans(), 0.0, 0.0
            bar.update(1)  # after the log: a progress line shows this step's values
            improved = False
            if self.evaluators and s.eval_every and self.step % s.eval_every == 0 and self.step < s.max_steps:
                improved = self._evaluate_and_select()
            # A new best is saved even between checkpoint steps, so the best weights are kept.
            if self.step % s.ckpt_every == 0 or improved or self.step == s.max_steps:
                if self.step == s.max_steps and self.evaluators:
                    self._evaluate_and_select()  # before the save: the final checkpoint knows its rank
                self._save()
                # The stream restarts from the checkpoint's step so that a resumed run and this
                # one read the same batches from here on.
                if self.step < s.max_steps:
                    batches = self._batches()
        bar.close()
        if self.evaluators and self.last_eval_step != self.step:
            # Resumed from the final checkpoint (a finished run run again): evaluate it once more.
            self.evaluate()

    def _log_train(
        self, running: WeightedMeans, grad_norm: torch.Tensor | None, wait: float, busy: float, bar
    ) -> None:
        acc = self.acc
        keys = sorted(running.sums)
        # Collective: every process reaches this at the same step (with the same keys).
        sums = acc.reduce(torch.tensor(running.vector(keys), device=acc.device, dtype=torch.float64), "sum")
        skipped = acc.reduce(torch.tensor([float(self.samples_skipped)], device=acc.device), reduction="sum")
        values = {f"train/{k}": v for k, v in means_from_vector(keys, sums.tolist()).items()}
        values.update(
            {
                "train/lr": self.scheduler.get_last_lr()[0],
                "train/samples_per_s": self.settings.global_batch_size
                * running.updates
                / self.accumulation
                / max(busy, 1e-9),
                "train/data_wait_fraction": wait / max(busy, 1e-9),
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
        if self.steps_skipped:
            values["train/steps_skipped"] = self.steps_skipped
        self.metrics.write(self.step, values)
        acc.log(values, step=self.step)
        bar.set_postfix(
            loss=f"{values.get('train/loss', float('nan')):.3f}",
            lr=f"{values['train/lr']:.2e}",
            **{"samples/s": f"{values['train/samples_per_s']:.1f}"},
        )

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Run every evaluator on the unwrapped model; write the values to metrics.jsonl and W&B.

        Collective: every process calls it at the same step. Inside, each process evaluates its
        own share with no collective until the evaluator's one gather (uneven shares cannot hang).
        """
        t0 = time.perf_counter()
        model = self.acc.unwrap_model(self.model)
        values: dict[str, float] = {}
        for prefix, evaluator in self.evaluators.items():
            values.update({f"{prefix}/{k}": v for k, v in evaluator(model, self.acc).items()})
        self.eval_seconds += time.perf_counter() - t0
        self.metrics.write(self.step, values)
        self.acc.log(values, step=self.step)
        self.last_eval, self.last_eval_step = values, self.step
        return values

    def _evaluate_and_select(self) -> bool:
        """Evaluate; True when the selection metric improved on the best so far."""
        s = self.settings
        values = self.evaluate()
        if s.select_metric is None:
            return False
        if s.select_metric not in values:
            raise KeyError(
                f"task.select_metric={s.select_metric!r} is not among the evaluation's metrics {sorted(values)}"
            )
        value = float(values[s.select_metric])
        if not math.isfinite(value):
            return False
        better = self.best is None or (
            value > self.best["value"] if s.select_mode == "max" else value < self.best["value"]
        )
        if better:
            self.best = {"step": self.step, "metric": s.select_metric, "value": value}
        return better
