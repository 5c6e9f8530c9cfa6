"""VQAv2 fine-tuning: every question of an image is an item; soft-score BCE; VQA score and accuracy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vilt_lab.config.schema import RunConfig
from vilt_lab.data.pipeline import ItemSpec
from vilt_lab.data.shards import iter_samples
from vilt_lab.data.targets import VQATargets
from vilt_lab.evaluation.evaluators import VQAEvaluator
from vilt_lab.evaluation.submission import write_vqa_submission
from vilt_lab.utils.progress import progress_style

from .base import Task, require_file


def read_answers(cfg: RunConfig) -> list[str]:
    """The answer vocabulary (`data.answers`, answers.json: label -> answer)."""
    path = require_file(cfg.data.answers, "data.answers (the answers.json the labels index)", "vqa")
    answers = json.loads(path.read_text())
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"data.answers={path}: expected a non-empty JSON list of answer strings")
    return answers


class VQATask(Task):
    name = "vqa"
    provides = "questions"
    epoch_counts = "texts"  # one epoch = every question once
    select_key = "vqa/score"

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        read_answers(cfg)

    def objectives(
        self, cfg: RunConfig, tokenizer, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        answers = read_answers(cfg)
        return {"vqa": (1.0, {"num_labels": len(answers), "labels": answers})}

    def items(self, cfg: RunConfig, tokenizer, module) -> ItemSpec:
        return ItemSpec("questions", 1, (VQATargets(module.objectives["vqa"].head.fc2.out_features),))

    def evaluator(self, cfg: RunConfig, tokenizer, module, loader, urls) -> VQAEvaluator:
        return VQAEvaluator(
            self.eval_loader(cfg, tokenizer, module, loader, urls),
            module.objectives["vqa"].labels or read_answers(cfg),
            progress=progress_style(cfg.trainer),
        )

    def write_submission(self, evaluator: VQAEvaluator, urls: str | Sequence[str], path: Path) -> Path:
        """The evaluation server's file: every question of the split once (its ids read from the
        shards themselves, so a question the evaluation missed is an error, not a gap)."""
        question_ids = [q["id"] for _, _, meta in iter_samples(urls) for q in meta.get("questions", [])]
        predictions = {r["question_id"]: r["pred_answer"] for r in evaluator.records}
        return write_vqa_submission(path, predictions, question_ids, evaluator.vocabulary)
