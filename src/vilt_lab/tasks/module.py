"""The task module: the backbone plus a task's objectives, one weighted loss (what DDP wraps).

Every task trains one of these: pre-training with its selected objectives (itm, mlm, wpa, mpp, mim),
fine-tuning with its own (vqa, nlvr2, irtr). Every trainable parameter has to take part in every
step's loss (no `find_unused_parameters`): parameters that no objective uses are frozen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vilt_lab.model import ViltBackbone
from vilt_lab.objectives import DEFAULT_WEIGHTS, Objective, Passes, build_objective, pass_rows
from vilt_lab.objectives.itm import fused_pass_negatives, run_itm_and_mlm_passes


class TaskModule(nn.Module):
    """Runs the selected objectives on one batch and sums their weighted losses.

    Args:
        backbone: the shared ViLT backbone.
        objectives: name -> objective module (see `vilt_lab.objectives.build_objective`).
        weights: name -> loss weight; None, or a missing name, takes `DEFAULT_WEIGHTS`.
        max_image_len: patches sampled per image in training passes (-1: all); evaluation
            (`task.eval()`) always uses all patches, so it is deterministic.
        fuse_passes: run the ITM and MLM passes as one backbone pass over 2B pairs when both
            are read (`trainer.fuse_passes`, `run_itm_and_mlm_passes`); otherwise ignored.
    """

    def __init__(
        self,
        backbone: ViltBackbone,
        objectives: Mapping[str, Objective],
        weights: Mapping[str, float] | None = None,
        max_image_len: int = -1,
        fuse_passes: bool = False,
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("TaskModule needs at least one objective")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(objectives))
        if unknown:
            raise KeyError(
                f"weights given for objective(s) {unknown} that are not selected: {sorted(objectives)}"
            )
        missing = sorted(name for name in objectives if name not in weights and name not in DEFAULT_WEIGHTS)
        if missing:
            raise KeyError(f"no weight for objective(s) {missing} and no default for them")
        self.backbone = backbone
        self.objectives = nn.ModuleDict(objectives)
        self.weights = {
            name: float(weights[name] if name in weights else DEFAULT_WEIGHTS[name]) for name in objectives
        }
        self.max_image_len = max_image_len
        self.fused_negatives = fused_pass_negatives(self.objectives) if fuse_passes else None
        # Each pass's last block computes only the rows its readers read (ITM: the pooled [CLS],
        # MLM: the text), unless a reader needs more (WPA reads all of the ITM pass).
        self.pass_rows = pass_rows(self.objectives.values())
        # Of pre-training's objectives only ITM reads the pooled vector. Without it the pooler would
        # get no gradient, which DDP (without find_unused_parameters) reports as an error.
        if not any(objective.uses_pooler for objective in self.objectives.values()):
            self.backbone.pooler.requires_grad_(False)

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """{"loss": sum of weight * loss, "{name}/{key}": each objective's detached outputs}.

        generator: drives every random draw of the step (negatives, patch sampling, masks).
        """
        max_image_len = self.max_image_len if self.training else -1
        passes = Passes(max_image_len=max_image_len, generator=generator, rows=self.pass_rows)
        if self.fused_negatives is not None:
            run_itm_and_mlm_passes(batch, self.backbone, passes, self.fused_negatives)
        results: dict[str, torch.Tensor] = {}
        total = None
        for name, objective in self.objectives.items():
            out = objective(batch, self.backbone, passes)
            weighted = self.weights[name] * out["loss"]
            total = weighted if total is None else total + weighted
            results.update({f"{name}/{key}": value.detach() for key, value in out.items()})
        results["loss"] = total
        return results

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample predictions of the objectives that make them (VQA answers, NLVR2 verdicts),
        as ``{"{name}/{key}": (B, ...)}``, with all patches and no random draw."""
        passes = Passes(max_image_len=-1, rows=self.pass_rows)
        results: dict[str, torch.Tensor] = {}
        for name, objective in self.objectives.items():
            out = objective.predict(batch, self.backbone, passes)
            results.update({f"{name}/{key}": value for key, value in out.items()})
        return results

    def heads(self) -> dict[str, nn.Module]:
        """Objective name -> its head: a checkpoint's `heads.<name>` is `objectives.<name>.head`."""
        return {
            name: objective.head for name, objective in self.objectives.items() if objective.head is not None
        }

    def head_specs(self) -> dict[str, dict[str, Any]]:
        """Each head's build arguments (and label names), as a checkpoint's head list."""
        return {name: self.objectives[name].head_spec() for name in self.heads()}


def build_task_module(
    backbone: ViltBackbone,
    names: Sequence[str],
    weights: Mapping[str, float] | None = None,
    max_image_len: int = -1,
    objective_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    fuse_passes: bool = False,
) -> TaskModule:
    """A `TaskModule` with the objectives `names` built for `backbone`'s config.

    objective_kwargs: name -> constructor arguments, e.g. {"wpa": {"iterations": 100}}.
    """
    objective_kwargs = objective_kwargs or {}
    unknown = sorted(set(objective_kwargs) - set(names))
    if unknown:
        raise KeyError(f"arguments given for objective(s) {unknown} that are not selected: {list(names)}")
    objectives = {
        name: build_objective(name, backbone.config, **objective_kwargs.get(name, {})) for name in names
    }
    return TaskModule(backbone, objectives, weights, max_image_len, fuse_passes)
