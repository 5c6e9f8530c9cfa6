"""The contract every objective follows (`Objective`), and the pass rows its declarations decide.

Call sites (the task module, the pass cache, checkpoints) read only what `Objective` declares,
directly: each capability has one default, here, and an objective overrides it where it differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vilt_lab.model import ViltBackbone, ViltConfig

from .passes import ALL, POOLED, ROW_NEEDS, Passes, widest


class Objective(nn.Module):
    """One loss of a task with the head it trains: the task module sums the losses, and the heads
    are what a checkpoint stores beside the backbone.

    Required of every objective:

    ``from_config(config, **kwargs)`` (classmethod): the objective sized for the backbone's
        `ViltConfig`; kwargs are its settings (`build_objective`).
    ``forward(batch, backbone, passes) -> dict[str, Tensor]``: one step on a collated ``batch``
        (with the keys its data pipeline adds, e.g. ``mlm_input_ids``) through ``backbone``.
        ``passes`` is the step's `Passes`: the backbone passes objectives share, the step's
        ``max_image_len`` and its ``generator``, which every random draw must come from so that a
        seeded step is reproducible. Returns ``"loss"``, a scalar that gradients flow from (the
        task module weights and sums it), and scalar metrics under any other key, ``"count"``
        being reserved for what loss and metrics average over where that varies by batch (masked
        tokens, patch entries), so evaluation can weight their means. The task module reports
        each key detached as ``"<name>/<key>"``, name being the objective's key in `OBJECTIVES`.

    Optional, each declared here with its default:

    ``uses_pooler`` (True): whether the loss reads `BackboneOutput.pooled`. When no objective of
        a task does, the task module freezes the pooler: DDP without `find_unused_parameters`
        rejects a trainable parameter without gradient. True by default because wrongly freezing
        would go unnoticed, wrongly training would not.
    ``reads_pass`` (None): the `Passes` cache key of the shared pass it reads (`ITM_PASS`,
        `MLM_PASS`, ...), computed once for every objective naming it; None when it runs only
        passes of its own (NLVR2's image pair, MPP's masked images).
    ``reads_rows`` (`ALL`): how much of that pass it reads, one of `ROW_NEEDS`: `POOLED` (the
        text [CLS]), `TEXT` (the text positions) or `ALL`. The pass's last block computes the
        widest its readers read (`pass_rows`); what it leaves out is None, so the default is
        every row.
    ``head`` (None): the module a checkpoint stores as ``heads.<name>``, assigned in
        ``__init__``; None for an objective without parameters to keep (WPA).
    ``head_spec()`` ({}): the head's build arguments beyond the backbone config (and its label
        names), as a checkpoint's head list stores them; read only where ``head`` is set.
    ``compile_loops(**options)`` (nothing): compile the objective's own loops for
        ``trainer.compile`` (WPA's IPOT iteration).
    ``predict(batch, backbone, passes)`` ({}): per-sample predictions ``{key: (B, ...)}``,
        reported as ``"<name>/<key>"``; called without gradients, with every patch and no random
        draw. Empty for objectives that predict nothing (pre-training's).
    """

    uses_pooler: bool = True
    reads_pass: str | None = None
    reads_rows: str = ALL
    head: nn.Module | None

    def __init__(self) -> None:
        super().__init__()
        # An instance attribute, not a class one: nn.Module keeps an assigned head in `_modules`,
        # which a class attribute of the same name would shadow.
        self.head = None

    @classmethod
    def from_config(cls, config: ViltConfig, **kwargs: Any) -> Objective:
        raise NotImplementedError(f"{cls.__name__} does not define from_config")

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def head_spec(self) -> dict[str, Any]:
        return {}

    def compile_loops(self, **options: Any) -> None:
        """`trainer.compile` beside the backbone's blocks: `torch.compile` (with ``options``)
        the objective's own iterative code, where launching many small kernels is its cost
        (WPA's IPOT). Nothing by default."""

    def predict(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        return {}


def pass_rows(objectives: Iterable[Objective]) -> dict[str, str]:
    """Pass key -> the widest `reads_rows` among the objectives naming it in `reads_pass`."""
    needs: dict[str, str] = {}
    for objective in objectives:
        if objective.reads_pass is None:
            continue
        if objective.reads_rows not in ROW_NEEDS:
            raise ValueError(
                f"{type(objective).__name__}.reads_rows={objective.reads_rows!r}: expected one of {ROW_NEEDS}"
            )
        needs[objective.reads_pass] = widest((needs.get(objective.reads_pass, POOLED), objective.reads_rows))
    return needs
