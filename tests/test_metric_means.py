"""Weighted means of task outputs: MLM metrics per masked token, the rest per pair."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vilt_lab.utils.metric_means import WeightedMeans, means_from_vector


def _t(x: float) -> torch.Tensor:
    return torch.tensor(x)


def test_metrics_with_a_count_are_weighted_by_it() -> None:
    means = WeightedMeans()
    # Batch 1: 8 pairs, 10 masked tokens, 9 right. Batch 2: 2 pairs, 1 masked token, wrong.
    means.add({"loss": _t(1.0), "mlm/accuracy": _t(0.9), "mlm/count": _t(10), "itm/accuracy": _t(0.5)}, 8)
    means.add({"loss": _t(3.0), "mlm/accuracy": _t(0.0), "mlm/count": _t(1), "itm/accuracy": _t(1.0)}, 2)
    keys = means.keys()
    assert keys == ["itm/accuracy", "loss", "mlm/accuracy"]  # counts are weights, not metrics
    values = means_from_vector(keys, means.vector(keys))
    assert values["mlm/accuracy"] == pytest.approx(9 / 11)  # per token; per batch: 0.72
    assert values["itm/accuracy"] == pytest.approx((0.5 * 8 + 1.0 * 2) / 10)
    assert values["loss"] == pytest.approx((1.0 * 8 + 3.0 * 2) / 10)
    assert means.updates == 2


def test_sums_from_several_processes_add_up_and_empty_weights_give_nan() -> None:
    a, b = WeightedMeans(), WeightedMeans()
    a.add({"mlm/accuracy": _t(1.0), "mlm/count": _t(3)}, 4)
    b.add({"mlm/accuracy": _t(0.0), "mlm/count": _t(1), "itm/accuracy": _t(1.0)}, 4)
    keys = ["itm/accuracy", "mlm/accuracy"]
    summed = [x + y for x, y in zip(a.vector(keys), b.vector(keys), strict=True)]
    values = means_from_vector(keys, summed)
    assert values == {"itm/accuracy": 1.0, "mlm/accuracy": 0.75}
    empty = WeightedMeans()
    empty.add({"mlm/accuracy": _t(0.0), "mlm/count": _t(0)}, 4)
    assert math.isnan(means_from_vector(["mlm/accuracy"], empty.vector(["mlm/accuracy"]))["mlm/accuracy"])


class _KernelCount(TorchDispatchMode):
    """Counts the ATen ops that compute (views, detach included, launch no kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))


def _add_cost(metrics: int) -> int:
    """Ops of adding a micro-batch's outputs to running means that already hold one."""
    outputs = {"loss": _t(1.0), "mlm/count": _t(7)}
    outputs.update({f"mlm/metric{i}": _t(0.5) for i in range(metrics)})
    outputs.update({f"itm/metric{i}": _t(0.5) for i in range(metrics)})
    means = WeightedMeans()
    means.add(outputs)
    with _KernelCount() as count:
        means.add(outputs)
    return count.ops


def test_adding_a_micro_batch_costs_the_same_few_kernels_however_many_metrics() -> None:
    # On a GPU each op is a kernel launch; one per metric per operation was ~40 per micro-step.
    assert _add_cost(2) == _add_cost(20) <= 12
