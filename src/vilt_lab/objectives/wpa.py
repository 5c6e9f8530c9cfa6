"""Word-patch alignment (WPA): an optimal-transport distance between words and patches.

The distance is approximated with IPOT (Xie et al. 2020) as in UNITER and ViLT (beta 0.5,
50 iterations, k 1), batched over pairs of different lengths with validity masks instead of the
official code's `1e4 * pad` trick, so padding rows and columns of the plan are exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from vilt_lab.model import BackboneOutput, ViltBackbone, ViltConfig

from .base import Objective
from .itm import SAME_SOURCE, itm_pass
from .passes import ALL, ITM_PASS, Passes


def ipot_distance(
    cost: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
    k: int = 1,
    iteration: IPOTIteration | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched IPOT with uniform marginals over the valid entries.

    Args:
        cost: (B, M, N) transport cost between text positions (rows) and image positions (columns).
        text_mask, image_mask: (B, M) and (B, N) bool, True on entries that take part.
        beta: proximal parameter (the kernel is exp(-C / beta)). Every beta converges to the exact
            transport; with k = 1, beta 0.1 needed more iterations than 0.5 on random costs.
        iterations: outer proximal-point iterations (>= 1); k: Sinkhorn steps per iteration (>= 1).
        iteration: what runs one of them (`ipot_iteration`, or its compiled form:
            `WPAObjective.compile_loops`); None: `ipot_iteration`.

    Returns:
        distance: (B,) sum(C * T); differentiable with respect to `cost` only.
        plan: (B, M, N) transport plan T, without gradient; rows sum to exactly 1/m, columns to
            about 1/n; padding rows and columns are exactly 0. A pair with no valid text or no
            valid image gets an all-zero plan and distance 0.

    Computed in `promote_types(cost.dtype, float32)`: half-precision exp(-C/beta) and the
    repeated rescaling lose the marginals after a few iterations.
    """
    if iterations < 1 or k < 1:
        raise ValueError(f"IPOT needs iterations >= 1 and k >= 1, got {iterations} and {k}")
    dtype = torch.promote_types(cost.dtype, torch.float32)
    text_mask, image_mask = text_mask.bool(), image_mask.bool()
    # An empty side would make the other side's scaling 1/0 on valid entries (inf * 0 = NaN):
    # drop such pairs entirely so they get a zero plan.
    m = text_mask.sum(1, keepdim=True)
    n = image_mask.sum(1, keepdim=True)
    text_mask = text_mask & (n > 0)
    image_mask = image_mask & (m > 0)
    joint = text_mask.unsqueeze(2) & image_mask.unsqueeze(1)
    cost = torch.where(joint, cost.to(dtype), 0.0)
    # Autocast would run the plan's einsums (batched matmuls) in half precision, against the
    # float32 promised above (they did, under bf16 autocast, until the speed levers' bf16 check).
    with torch.no_grad(), torch.autocast(device_type=cost.device.type, enabled=False):
        plan = _ipot_plan(
            cost.detach(), text_mask, image_mask, joint, beta, iterations, k, iteration or ipot_iteration
        )
    return (cost * plan).sum((1, 2)), plan


def ipot_iteration(
    kernel: torch.Tensor,
    plan: torch.Tensor,
    sigma: torch.Tensor,
    delta: torch.Tensor,
    m: torch.Tensor,
    n: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One proximal-point iteration of IPOT: (plan, sigma, delta) after it.

    About a dozen small kernels, run `iterations` times a step (50 in the paper's recipe): on a
    GPU the launches, not the arithmetic, are the cost. One function so `torch.compile` can fuse
    it once and every iteration reuse the graph.
    """
    q = kernel * plan
    for _ in range(k):
        delta = torch.where(image_mask, 1.0 / (n * torch.einsum("bmn,bm->bn", q, sigma)), 0.0)
        sigma = torch.where(text_mask, 1.0 / (m * torch.einsum("bmn,bn->bm", q, delta)), 0.0)
    return sigma.unsqueeze(2) * q * delta.unsqueeze(1), sigma, delta


IPOTIteration = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _ipot_plan(
    cost: torch.Tensor,
    text_mask: torch.Tensor,
    image_mask: torch.Tensor,
    joint: torch.Tensor,
    beta: float,
    iterations: int,
    k: int,
    iteration: IPOTIteration,
) -> torch.Tensor:
    """The IPOT transport plan (B, M, N); see `ipot_distance`."""
    m = text_mask.sum(1, keepdim=True).to(cost.dtype)  # (B, 1)
    n = image_mask.sum(1, keepdim=True).to(cost.dtype)
    # torch.where discards the 1/0 = inf that padding and empty pairs produce in the other branch.
    sigma = torch.where(text_mask, 1.0 / m, 0.0)  # (B, M)
    delta = torch.zeros_like(image_mask, dtype=cost.dtype)  # (B, N)
    plan = joint.to(cost.dtype)
    kernel = torch.where(joint, torch.exp(-cost / beta), 0.0)
    for _ in range(iterations):
        plan, sigma, delta = iteration(kernel, plan, sigma, delta, m, n, text_mask, image_mask, k)
    return plan


def alignment_masks(text_mask: torch.Tensor, image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions WPA aligns: (B, T) text and (B, L) patch masks.

    Text: valid tokens without [CLS] (position 0) and without the last valid token ([SEP]).
    Image: valid patches, i.e. the backbone's image mask without the image [CLS] (index 0).
    """
    positions = torch.arange(text_mask.shape[1], device=text_mask.device)
    text_mask = text_mask.bool()
    # The highest valid position, robust to masks that are not left-aligned.
    last = torch.where(text_mask, positions, 0).amax(1, keepdim=True)
    text = text_mask & (positions > 0) & (positions != last)
    return text, image_mask[:, 1:].bool()


def cosine_cost(text: torch.Tensor, image: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - cosine similarity, (B, M, D) x (B, N, D) -> (B, M, N), in float32 or better."""
    dtype = torch.promote_types(text.dtype, torch.float32)
    # Autocast would run the matmul in half precision again; the cost feeds exp(-C / beta).
    with torch.autocast(device_type=text.device.type, enabled=False):
        text = F.normalize(text.to(dtype), dim=-1, eps=eps)
        image = F.normalize(image.to(dtype), dim=-1, eps=eps)
        return 1.0 - text @ image.transpose(1, 2)


def wpa_distance(
    output: BackboneOutput,
    beta: float = 0.5,
    iterations: int = 50,
    k: int = 1,
    iteration: IPOTIteration | None = None,
) -> torch.Tensor:
    """IPOT distance (B,) between each pair's words and patches in one backbone pass."""
    text_mask, image_mask = alignment_masks(output.text_mask, output.image_mask)
    cost = cosine_cost(output.text_feats, output.image_feats[:, 1:])
    distance, _ = ipot_distance(
        cost, text_mask, image_mask, beta=beta, iterations=iterations, k=k, iteration=iteration
    )
    return distance


class WPAObjective(Objective):
    """WPA on the ITM pass: (sum of distances of matched pairs - sum over mismatched) / B.

    The paper's factor 0.1 is this objective's weight in the task, not part of the loss.
    Has no parameters of its own; it shares the ITM pass (and runs it if ITM is not selected),
    so ``negatives`` must be ITM's (`objective.itm.negatives`; the pre-training task passes it on).
    """

    uses_pooler = False
    reads_pass = ITM_PASS
    reads_rows = ALL  # every text and patch feature of the ITM pass

    def __init__(
        self, beta: float = 0.5, iterations: int = 50, k: int = 1, negatives: str = SAME_SOURCE
    ) -> None:
        super().__init__()
        self.beta = beta
        self.iterations = iterations
        self.k = k
        self.negatives = negatives
        self.iteration: IPOTIteration = ipot_iteration

    def compile_loops(self, **options: Any) -> None:
        """`trainer.compile`: IPOT's iteration as one compiled graph, reused by all 50."""
        self.iteration = torch.compile(ipot_iteration, **options)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, iterations={self.iterations}, k={self.k}, negatives={self.negatives}"

    @classmethod
    def from_config(cls, config: ViltConfig, **kwargs: float | str) -> WPAObjective:
        """WPA needs nothing from the backbone config; kwargs go to the constructor."""
        return cls(**kwargs)

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        result = itm_pass(batch, backbone, passes, self.negatives)
        distance = wpa_distance(result.output, self.beta, self.iterations, self.k, self.iteration)
        positive = result.labels == 1
        sign = torch.where(positive, 1.0, -1.0).to(distance.dtype)
        loss = (sign * distance).sum() / distance.shape[0]
        d = distance.detach()
        return {
            "loss": loss,
            "positive_distance": _masked_mean(d, positive),
            "negative_distance": _masked_mean(d, ~positive),
        }


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask`, 0 when nothing is selected (B = 1 has no negatives)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)
