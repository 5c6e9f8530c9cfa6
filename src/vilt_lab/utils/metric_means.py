"""Means of a task's scalar outputs over many micro-batches, weighted by what each one averages.

An objective's metrics are means over something: ITM's over pairs, MLM's over masked tokens. A
batch with 40 masked tokens must count 40 times as much as one with 1, or "MLM accuracy" is a
mean of per-batch accuracies rather than the share of masked tokens predicted right. So an
objective may return ``count`` (the size of the set its metrics average over); the task prefixes
it like every output (``mlm/count``), and each ``mlm/*`` metric is then weighted by it. Metrics of
objectives without a count are weighted by the caller's default (batch size in evaluation, 1 per
micro-batch in training logs). Counts themselves are weights, not metrics: they are not reported.

The sums stay tensors on the outputs' device until `vector` reads them all at once: adding a
micro-batch never waits for the device (a `float()` per metric per micro-batch would make the
host wait for each step to finish before queueing the next).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

COUNT = "count"


def is_scalar(value: object) -> bool:
    return torch.is_tensor(value) and value.numel() == 1


@dataclass
class WeightedMeans:
    """Running weighted sums of scalar outputs; see the module docstring for the weights."""

    sums: dict[str, torch.Tensor | float] = field(default_factory=dict)
    weights: dict[str, torch.Tensor | float] = field(default_factory=dict)
    updates: int = 0

    def add(self, outputs: Mapping[str, object], default_weight: float = 1.0) -> None:
        """Add one micro-batch's outputs; non-scalar outputs are ignored."""
        for key, value in outputs.items():
            if not is_scalar(value) or key.rpartition("/")[2] == COUNT:
                continue
            prefix = key.rpartition("/")[0]
            count = outputs.get(f"{prefix}/{COUNT}") if prefix else None
            weight = count.detach().double().reshape(()) if is_scalar(count) else default_weight
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().double().reshape(()) * weight
            self.weights[key] = self.weights.get(key, 0.0) + weight
        self.updates += 1

    def vector(self, keys: Iterable[str]) -> list[float]:
        """Sums then weights of ``keys`` (0 for keys never seen here), for one cross-process sum."""
        keys = list(keys)
        values = [self.sums.get(k, 0.0) for k in keys] + [self.weights.get(k, 0.0) for k in keys]
        tensors = [i for i, v in enumerate(values) if torch.is_tensor(v)]
        if tensors:  # one read of every tensor together: the only wait for the device
            for i, v in zip(tensors, torch.stack([values[i] for i in tensors]).tolist(), strict=True):
                values[i] = v
        return [float(v) for v in values]


def means_from_vector(keys: list[str], vector: list[float]) -> dict[str, float]:
    """Undo :meth:`WeightedMeans.vector` after summing it over processes; a key whose total
    weight is 0 (say MLM over batches without one masked token) comes out NaN, not 0."""
    n = len(keys)
    return {k: s / w if w > 0 else float("nan") for k, s, w in zip(keys, vector[:n], vector[n:], strict=True)}
