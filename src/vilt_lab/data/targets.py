"""Collate steps that turn the items of a downstream task into its targets (see `ItemCollator`).

Items of VQA and NLVR2 are one question / statement of a sample each (the pipeline expands them
before the shuffle), carried as ``item["entry"]``: the question or statement record of the shard
schema (:mod:`vilt_lab.data.shards`). Besides tensors, each step passes on the per-item facts that
evaluation needs (ids, raw answers) as plain lists, which stay on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class VQATargets:
    """``vqa_targets`` (B, num_labels) float: each question's soft scores at its labels, 0
    elsewhere (all 0 on test splits, which carry no answers); plus ``question_ids``,
    ``vqa_labels``, ``vqa_scores``, ``annotator_answers`` and ``answer_types`` lists."""

    num_labels: int

    def __call__(self, samples: Sequence[dict[str, Any]], encoding: Any, generator: Any) -> dict[str, Any]:
        targets = torch.zeros(len(samples), self.num_labels)
        entries = [sample["entry"] for sample in samples]
        for row, entry in enumerate(entries):
            labels, scores = entry.get("labels", []), entry.get("scores", [])
            if len(labels) != len(scores):
                raise ValueError(f"question {entry.get('id')}: {len(labels)} labels but {len(scores)} scores")
            if labels and max(labels) >= self.num_labels:
                raise ValueError(
                    f"question {entry.get('id')}: label {max(labels)} is outside the {self.num_labels} "
                    "answers of data.answers (shards and answers.json from different conversions?)"
                )
            targets[row, labels] = torch.tensor(scores, dtype=torch.float32)
        return {
            "vqa_targets": targets,
            "question_ids": [entry["id"] for entry in entries],
            "vqa_labels": [list(entry.get("labels", [])) for entry in entries],
            "vqa_scores": [list(entry.get("scores", [])) for entry in entries],
            "annotator_answers": [list(entry.get("annotator_answers", [])) for entry in entries],
            "answer_types": [entry.get("answer_type") for entry in entries],
        }


def nlvr2_targets(samples: Sequence[dict[str, Any]], encoding: Any, generator: Any) -> dict[str, Any]:
    """``nlvr2_labels`` (B,) long (1 = the statement is true of the pair) and ``statement_ids``."""
    entries = [sample["entry"] for sample in samples]
    for entry in entries:
        if not isinstance(entry.get("label"), bool):
            raise ValueError(f"statement {entry.get('id')}: label {entry.get('label')!r} is not true/false")
    return {
        "nlvr2_labels": torch.tensor([int(entry["label"]) for entry in entries], dtype=torch.long),
        "statement_ids": [entry["id"] for entry in entries],
    }


@dataclass(frozen=True)
class PoolImageIndex:
    """``pool_image`` (B,) long: each sample's image index in the retrieval negative pool
    (:class:`vilt_lab.data.caption_pool.CaptionPool`), found by the sample's shard key."""

    image_of_key: Mapping[str, int]

    def __call__(self, samples: Sequence[dict[str, Any]], encoding: Any, generator: Any) -> dict[str, Any]:
        try:
            index = [self.image_of_key[sample["key"]] for sample in samples]
        except KeyError as err:
            raise KeyError(f"sample {err} is not in the caption pool of the training split") from None
        return {"pool_image": torch.tensor(index, dtype=torch.long)}
