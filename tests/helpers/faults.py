"""Faults injected into an in-process run: the job killed partway, the loss turning non-finite."""

from __future__ import annotations

import vilt_lab.train as train_module
from vilt_lab.tasks.module import TaskModule


class Killed(Exception):
    """Stands for the job being killed."""


def kill_after(monkeypatch, batches: int) -> None:
    """Make the run's train stream die after `batches` micro-batches in total."""
    real = train_module.build_streams
    seen = [0]

    def build_streams_then_die(*args, **kwargs):
        train_stream, evaluators = real(*args, **kwargs)

        def dying(start_step):
            for batch in train_stream(start_step):
                if seen[0] == batches:
                    raise Killed
                seen[0] += 1
                yield batch

        return dying, evaluators

    monkeypatch.setattr(train_module, "build_streams", build_streams_then_die)


def poison_loss_from_call(monkeypatch, first_bad_call: int, objective: str = "itm") -> None:
    """Make the task module's loss NaN from its `first_bad_call`-th forward in training on."""
    forward = TaskModule.forward
    calls = [0]

    def poisoned(self, batch, generator=None):
        out = forward(self, batch, generator)
        if self.training:
            calls[0] += 1
            if calls[0] >= first_bad_call:
                out[f"{objective}/loss"] = out[f"{objective}/loss"] * float("nan")
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(TaskModule, "forward", poisoned)
