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

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

COUNT = "count"


def is_scalar(value: object) -> bool:
    return torch.is_tensor(value) and value.numel() == 1


@dataclass
class _Group:
    """Running sums of keys that come together with one kind of weight: a vector per group, so
    adding a micro-batch costs a few device kernels however many metrics it has (a kernel per
    metric per operation would be some 40 tiny launches per micro-step)."""

    keys: tuple[str, ...]
    sums: torch.Tensor
    weights: torch.Tensor | float  # one per key (their counts), or the default weight for all

    def tensors(self) -> list[torch.Tensor]:
        """What `read` expects, in its order: the sums, then the weights if they are a tensor."""
        return [self.sums, self.weights] if torch.is_tensor(self.weights) else [self.sums]

    def read(self, values: Iterator[float]) -> Iterator[tuple[str, float, float]]:
        """(key, sum, weight) from the flat host values of `tensors`."""
        sums = [next(values) for _ in self.keys]
        weights = (
            [next(values) for _ in self.keys]
            if torch.is_tensor(self.weights)
            else [float(self.weights)] * len(sums)
        )
        return zip(self.keys, sums, weights, strict=True)


@dataclass
class WeightedMeans:
    """Running weighted sums of scalar outputs; see the module docstring for the weights."""

    groups: dict[tuple[bool, tuple[str, ...]], _Group] = field(default_factory=dict)
    updates: int = 0

    def add(self, outputs: Mapping[str, object], default_weight: float = 1.0) -> None:
        """Add one micro-batch's outputs; non-scalar outputs are ignored."""
        counts: dict[str, torch.Tensor] = {}
        plain: list[str] = []
        for key, value in outputs.items():
            if not is_scalar(value) or key.rpartition("/")[2] == COUNT:
                continue
            prefix = key.rpartition("/")[0]
            count = outputs.get(f"{prefix}/{COUNT}") if prefix else None
            if is_scalar(count):
                counts[key] = count
            else:
                plain.append(key)
        if counts:
            keys = tuple(counts)
            weights = _stacked(counts, keys)
            self._add((True, keys), _stacked(outputs, keys) * weights, weights)
        if plain:
            keys = tuple(plain)
            self._add((False, keys), _stacked(outputs, keys) * default_weight, default_weight)
        self.updates += 1

    def _add(
        self, signature: tuple[bool, tuple[str, ...]], sums: torch.Tensor, weights: torch.Tensor | float
    ) -> None:
        group = self.groups.get(signature)
        if group is None:
            self.groups[signature] = _Group(signature[1], sums, weights)
        else:
            group.sums = group.sums + sums
            group.weights = group.weights + weights

    def keys(self) -> list[str]:
        """The metrics seen so far, sorted."""
        return sorted({k for group in self.groups.values() for k in group.keys})

    def vector(self, keys: Iterable[str]) -> list[float]:
        """Sums then weights of ``keys`` (0 for keys never seen here), for one cross-process sum."""
        totals = {k: [0.0, 0.0] for k in keys}
        groups = list(self.groups.values())
        if groups:  # one read of every group together: the only wait for the device
            values = iter(torch.cat([t.reshape(-1) for g in groups for t in g.tensors()]).tolist())
            for group in groups:
                for key, key_sum, key_weight in group.read(values):
                    if key in totals:
                        totals[key][0] += key_sum
                        totals[key][1] += key_weight
        return [s for s, _ in totals.values()] + [w for _, w in totals.values()]


def _stacked(outputs: Mapping[str, object], keys: tuple[str, ...]) -> torch.Tensor:
    """The scalar tensors of ``keys`` as one float64 vector: one stack and one cast."""
    return torch.stack([outputs[k].detach().reshape(()) for k in keys]).double()  # type: ignore[union-attr]


def means_from_vector(keys: list[str], vector: list[float]) -> dict[str, float]:
    """Undo :meth:`WeightedMeans.vector` after summing it over processes; a key whose total
    weight is 0 (say MLM over batches without one masked token) comes out NaN, not 0."""
    n = len(keys)
    return {k: s / w if w > 0 else float("nan") for k, s, w in zip(keys, vector[:n], vector[n:], strict=True)}
