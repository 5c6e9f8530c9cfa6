"""IPOT (`ipot_distance`) against exact optimal transport (POT's network simplex)."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from vilt_lab.objectives.wpa import ipot_distance


def cosine_cost_problem(m: int, n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(m, n) float64 cost 1 - cos between random Gaussian vectors, as WPA builds it."""
    x = F.normalize(torch.randn(m, dim, generator=generator, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=-1)
    return 1.0 - x @ y.T


def random_problems(count: int, dim: int, seed: int) -> list[torch.Tensor]:
    """Costs of sizes m in [5, 20] x n in [8, 30]."""
    g = torch.Generator().manual_seed(seed)
    sizes = [
        (int(torch.randint(5, 21, (1,), generator=g)), int(torch.randint(8, 31, (1,), generator=g)))
        for _ in range(count)
    ]
    return [cosine_cost_problem(m, n, dim, g) for m, n in sizes]


def exact_distance(cost: torch.Tensor) -> float:
    m, n = cost.shape
    return float(ot.emd2(np.full(m, 1.0 / m), np.full(n, 1.0 / n), cost.numpy()))


def pad_batch(costs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack problems of different sizes into one batch, padding at the end with garbage costs."""
    M = max(c.shape[0] for c in costs)
    N = max(c.shape[1] for c in costs)
    batch = torch.full((len(costs), M, N), 123.0, dtype=torch.float64)
    text_mask = torch.zeros(len(costs), M, dtype=torch.bool)
    image_mask = torch.zeros(len(costs), N, dtype=torch.bool)
    for i, c in enumerate(costs):
        batch[i, : c.shape[0], : c.shape[1]] = c
        text_mask[i, : c.shape[0]] = True
        image_mask[i, : c.shape[1]] = True
    return batch, text_mask, image_mask


# Low dimensions are left out on purpose: see test_low_dimensional_costs_converge_slowly.
@pytest.mark.parametrize("dim", [4, 16, 64])
def test_ipot_matches_exact_ot(dim: int) -> None:
    costs = random_problems(8, dim, seed=dim)
    exact = torch.tensor([exact_distance(c) for c in costs], dtype=torch.float64)
    batch, text_mask, image_mask = pad_batch(costs)

    converged, _ = ipot_distance(batch, text_mask, image_mask, iterations=1000)
    default, _ = ipot_distance(batch, text_mask, image_mask)  # beta 0.5, 50 iterations, k 1

    assert ((converged - exact).abs() / exact).max() < 1e-4
    assert ((default - exact).abs() / exact).max() < 1e-2
    # IPOT's plan is feasible, so it never beats the optimum (up to the column-marginal slack).
    assert (default >= exact * (1 - 1e-3)).all()


def test_low_dimensional_costs_converge_slowly() -> None:
    """In 2-d, many costs are near 0 and the optimum is small (about 0.08), so the relative error
    of 50 iterations reaches several percent; more iterations still converge to the exact value."""
    costs = random_problems(8, 2, seed=0)
    exact = torch.tensor([exact_distance(c) for c in costs], dtype=torch.float64)
    distance, _ = ipot_distance(*pad_batch(costs), iterations=5000)
    assert ((distance - exact).abs() / exact).max() < 1e-4


def test_padding_changes_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    alone = cosine_cost_problem(7, 11, 16, g)
    others = [cosine_cost_problem(15, 9, 16, g), cosine_cost_problem(5, 30, 16, g)]
    d_alone, plan_alone = ipot_distance(
        alone[None], torch.ones(1, 7, dtype=torch.bool), torch.ones(1, 11, dtype=torch.bool)
    )

    # The same problem with masked rows and columns scattered through it, batched with others.
    rows = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    cols = torch.tensor(
        [False, True, True, True, True, False, True, True, True, True, True, True, False, True]
    )
    scattered = torch.rand(len(rows), len(cols), generator=g, dtype=torch.float64) * 50
    scattered[rows.nonzero()[:, 0, None], cols.nonzero()[:, 0]] = alone
    batch, text_mask, image_mask = pad_batch([scattered, *others])
    text_mask[0, : len(rows)] = rows
    image_mask[0, : len(cols)] = cols

    distance, plan = ipot_distance(batch, text_mask, image_mask)
    assert abs(distance[0] - d_alone[0]) < 1e-6
    inside = plan[0][rows.nonzero()[:, 0, None], cols.nonzero()[:, 0]]
    assert torch.allclose(inside, plan_alone[0], atol=1e-9)
    joint = text_mask[:, :, None] & image_mask[:, None, :]
    assert (plan[~joint] == 0).all()  # padding is exactly zero, not 1e-4 as with the 1e4 trick


def test_marginals_are_uniform() -> None:
    costs = random_problems(4, 16, seed=3)
    batch, text_mask, image_mask = pad_batch(costs)
    _, plan = ipot_distance(batch, text_mask, image_mask)
    for i, c in enumerate(costs):
        m, n = c.shape
        p = plan[i, :m, :n]
        # The last update rescales rows, so they are exact; columns converge with iterations.
        torch.testing.assert_close(p.sum(1), torch.full((m,), 1.0 / m, dtype=torch.float64))
        torch.testing.assert_close(
            p.sum(0), torch.full((n,), 1.0 / n, dtype=torch.float64), rtol=1e-2, atol=0
        )
        assert (p >= 0).all()


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.bfloat16, torch.float32)],
)
def test_precision_is_at_least_float32(dtype: torch.dtype, expected: torch.dtype) -> None:
    cost = random_problems(1, 8, seed=4)[0][None].to(dtype)
    masks = torch.ones(1, cost.shape[1], dtype=torch.bool), torch.ones(1, cost.shape[2], dtype=torch.bool)
    distance, plan = ipot_distance(cost, *masks)
    assert distance.dtype == expected and plan.dtype == expected


def test_gradient_reaches_cost_only() -> None:
    cost = random_problems(1, 8, seed=5)[0][None].requires_grad_(True)
    masks = torch.ones(1, cost.shape[1], dtype=torch.bool), torch.ones(1, cost.shape[2], dtype=torch.bool)
    distance, plan = ipot_distance(cost, *masks)
    assert not plan.requires_grad
    distance.sum().backward()
    # d = sum(C * T) with T held constant: dd/dC = T.
    torch.testing.assert_close(cost.grad, plan)


def test_empty_side_gives_zero() -> None:
    cost = torch.rand(2, 4, 6, dtype=torch.float64)
    text_mask = torch.tensor([[False] * 4, [True] * 4])
    image_mask = torch.tensor([[True] * 6, [False] * 6])
    distance, plan = ipot_distance(cost, text_mask, image_mask)
    assert (distance == 0).all() and (plan == 0).all()


def test_compiled_iteration_is_one_graph_reused_by_every_iteration() -> None:
    """`trainer.compile` compiles WPA's IPOT iteration (`compile_loops`): one graph, traced once
    and run for all 50 iterations (about a dozen kernels each eager), the same plan as eager.
    The eager backend: the count is dynamo's, and inductor on 2 CPU cores takes minutes."""
    from torch._dynamo.utils import counters

    from vilt_lab.objectives.wpa import WPAObjective

    torch._dynamo.reset()
    counters.clear()
    objective = WPAObjective()
    objective.compile_loops(dynamic=False, backend="eager")
    cost, text_mask, image_mask = pad_batch(random_problems(4, 64, seed=3))
    compiled, compiled_plan = ipot_distance(cost, text_mask, image_mask, iteration=objective.iteration)
    eager, eager_plan = ipot_distance(cost, text_mask, image_mask)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    torch.testing.assert_close(compiled_plan, eager_plan, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


@pytest.mark.gpu
def test_inductor_iteration_matches_eager_on_the_gpu() -> None:
    """The compiled iteration as `trainer.compile` builds it (inductor) against eager, in fp32."""
    from vilt_lab.objectives.wpa import WPAObjective

    objective = WPAObjective()
    objective.compile_loops(dynamic=True)
    cost, text_mask, image_mask = (t.cuda() for t in pad_batch(random_problems(8, 64, seed=4)))
    cost = cost.float()
    compiled, _ = ipot_distance(cost, text_mask, image_mask, iteration=objective.iteration)
    eager, _ = ipot_distance(cost, text_mask, image_mask)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
