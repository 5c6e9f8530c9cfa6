"""NLVR2 fine-tuning: every statement of an image pair is an item; the pair method; accuracy."""

from __future__ import annotations

from typing import Any

from vilt_lab.config.schema import RunConfig
from vilt_lab.data.pipeline import ItemSpec
from vilt_lab.data.targets import nlvr2_targets
from vilt_lab.evaluation.evaluators import NLVR2Evaluator
from vilt_lab.objectives.nlvr2 import NUM_IMAGES
from vilt_lab.utils.progress import progress_style

from .base import Task


class NLVR2Task(Task):
    name = "nlvr2"
    provides = "statements"
    epoch_counts = "texts"  # one epoch = every statement once
    select_key = "nlvr2/accuracy"

    def objectives(
        self, cfg: RunConfig, tokenizer, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        return {"nlvr2": (1.0, {})}

    def items(self, cfg: RunConfig, tokenizer, module) -> ItemSpec:
        return ItemSpec("statements", NUM_IMAGES, (nlvr2_targets,))

    def evaluator(self, cfg: RunConfig, tokenizer, module, loader, urls) -> NLVR2Evaluator:
        return NLVR2Evaluator(
            self.eval_loader(cfg, tokenizer, module, loader, urls), progress=progress_style(cfg.trainer)
        )
