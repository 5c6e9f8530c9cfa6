"""VQAv2: one sample per COCO image with its questions, answers, labels and soft scores.

Raw layout: ``ROOT/{train2014,val2014,test2015}/COCO_<dir>_<id, 12 digits>.jpg``,
``ROOT/v2_OpenEnded_mscoco_{train2014,val2014,test2015,test-dev2015}_questions.json`` and
``ROOT/v2_mscoco_{train2014,val2014}_annotations.json``.

As the official converter (vilt-paper-and-official-code.md §4.2):

* ``vqa/answers.json``: the normalised ``multiple_choice_answer`` of train + val kept at
  ``--min-answer-count`` (9) occurrences, in order of first appearance; labels index it;
* a question's answers are its annotators' raw answers that are in the vocabulary, scored
  0.3 / 0.6 / 0.9 / 1.0 by how many gave them; a question with none is skipped, and so is an
  image left with no question (train and val);
* ``vqa/rest_val`` is the last ``--rest-val-images`` (1000) val images after a shuffle seeded by
  ``--seed`` (the official shuffle is unseeded), ``vqa/trainable_val`` the rest; the paper trains
  on train + trainable_val and validates on rest_val;
* ``vqa/test-dev`` and ``vqa/test`` carry questions with empty answers, labels and scores (for the
  evaluation server's submission file).

Beyond the official converter, a question of train / val also keeps what the official
*evaluation* needs (:func:`vilt_lab.evaluation.metrics.vqa_accuracy`): ``annotator_answers``, the
ten raw annotator answers in the annotation file's order, and the annotation's ``answer_type``
("yes/no", "number", "other") and ``question_type`` ("what color is the", ...) when it has them,
for accuracy per type. Test questions have ``annotator_answers: []`` and no types.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from vilt_lab.data.shards import write_json_atomic
from vilt_lab.data.sources import runner
from vilt_lab.data.sources.images import RawImage
from vilt_lab.data.sources.raw import check_text, read_json
from vilt_lab.data.vqa_answers import MIN_ANSWER_COUNT, answer_vocabulary, soft_targets

ANSWERS_FILE = "vqa/answers.json"
NO_ANNOTATION = "question has no annotation"
NO_ANSWER = "no answer in the vocabulary"
NO_QUESTION = "no question left"
TYPE_FIELDS = ("answer_type", "question_type")  # copied from an annotation when it has them


@dataclass(frozen=True)
class Subset:
    """One question file and where its images are (``annotated``: it has an annotation file)."""

    questions: str
    image_dir: str
    annotated: bool


TRAIN = Subset("train2014", "train2014", annotated=True)
VAL = Subset("val2014", "val2014", annotated=True)
SUBSETS = {
    "vqa/train": TRAIN,
    "vqa/val": VAL,
    "vqa/trainable_val": VAL,
    "vqa/rest_val": VAL,
    "vqa/test-dev": Subset("test-dev2015", "test2015", annotated=False),
    "vqa/test": Subset("test2015", "test2015", annotated=False),
}
VAL_PARTS = ("vqa/trainable_val", "vqa/rest_val")


def questions_path(root: Path, subset: Subset) -> Path:
    """The question file of ``subset``."""
    return root / f"v2_OpenEnded_mscoco_{subset.questions}_questions.json"


def annotations_path(root: Path, subset: Subset) -> Path:
    """The annotation file of an annotated ``subset``."""
    return root / f"v2_mscoco_{subset.questions}_annotations.json"


def _records(path: Path, field: str) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise ValueError(f"{path}: expected an object with a '{field}' list")
    return data[field]


def rest_val_ids(image_ids: list[int], count: int, seed: int) -> set[int]:
    """The val images held out as ``rest_val``: the last ``count`` of the sorted ids after a
    shuffle seeded by ``seed`` (reproducible, unlike the official unseeded shuffle)."""
    order = sorted(image_ids)
    random.Random(seed).shuffle(order)
    return set(order[len(order) - count :]) if count else set()


class VQAv2Reader:
    """Reads the raw files once and plans every split from them."""

    def __init__(self, root: Path, min_answer_count: int, rest_val_images: int, seed: int) -> None:
        """``root``: the raw dataset; the rest as the ``vilt-shards vqav2`` options."""
        self.root = root
        self.min_answer_count = min_answer_count
        self.rest_val_images = rest_val_images
        self.seed = seed
        self._annotations: dict[str, list[dict[str, Any]]] = {}

    def annotations(self, subset: Subset) -> list[dict[str, Any]]:
        """The annotation records of ``subset`` (read once)."""
        if subset.questions not in self._annotations:
            path = annotations_path(self.root, subset)
            self._annotations[subset.questions] = _records(path, "annotations")
        return self._annotations[subset.questions]

    @cached_property
    def vocabulary(self) -> list[str]:
        """The answer vocabulary of train + val (index = label)."""
        main = [a["multiple_choice_answer"] for s in (TRAIN, VAL) for a in self.annotations(s)]
        return answer_vocabulary(main, self.min_answer_count)

    def plan(self, split: str) -> runner.SplitPlan:
        """The plan of output ``split`` (one of :data:`SUBSETS`)."""
        if split in VAL_PARTS:
            return self._val_part(split)
        return self._val if split == "vqa/val" else self._plan_subset(split)

    def _plan_subset(self, split: str) -> runner.SplitPlan:
        subset = SUBSETS[split]
        plan = runner.SplitPlan(split, extra={"questions": str(questions_path(self.root, subset))})
        if subset.annotated:
            labels = {answer: i for i, answer in enumerate(self.vocabulary)}
            by_question = {a["question_id"]: a for a in self.annotations(subset)}
            plan.extra["num_answers"] = len(labels)

            def targets(question_id: Any) -> dict[str, Any] | None:
                if question_id not in by_question:
                    plan.skip(str(question_id), NO_ANNOTATION)
                    return None
                annotation = by_question[question_id]
                raw_answers = [a["answer"] for a in annotation["answers"]]
                answers, ids, scores = soft_targets(raw_answers, labels)
                if not ids:
                    plan.skip(str(question_id), NO_ANSWER)
                    return None
                types = {field: annotation[field] for field in TYPE_FIELDS if field in annotation}
                return {
                    "answers": answers,
                    "labels": ids,
                    "scores": scores,
                    "annotator_answers": raw_answers,
                    **types,
                }

            self._add_images(plan, subset, targets)
        else:
            self._add_images(
                plan, subset, lambda _: {"answers": [], "labels": [], "scores": [], "annotator_answers": []}
            )
        return plan

    def _add_images(
        self,
        plan: runner.SplitPlan,
        subset: Subset,
        targets: Callable[[Any], dict[str, Any] | None],
    ) -> None:
        """One item per image, in order of first appearance, with its usable questions."""
        by_image: dict[int, list[dict[str, Any]]] = {}
        for record in _records(questions_path(self.root, subset), "questions"):
            question_id = record["question_id"]
            questions = by_image.setdefault(int(record["image_id"]), [])
            try:
                text = check_text(record.get("question"), "question")
            except ValueError as err:
                plan.skip(str(question_id), str(err))
                continue
            if (answer := targets(question_id)) is not None:
                questions.append({"id": str(question_id), "text": text, **answer})
        image_dir = self.root / subset.image_dir
        for image_id, questions in by_image.items():
            if not questions:
                plan.skip(str(image_id), NO_QUESTION)
                continue
            image = image_dir / f"COCO_{subset.image_dir}_{image_id:012d}.jpg"
            plan.add(
                str(image_id),
                str(image_id),
                [RawImage(str(image))],
                {"id": str(image_id), "questions": questions},
            )

    @cached_property
    def _val(self) -> runner.SplitPlan:
        """The whole val split, planned once: trainable_val and rest_val are parts of it."""
        return self._plan_subset("vqa/val")

    def _val_part(self, split: str) -> runner.SplitPlan:
        val = self._val
        held_out = rest_val_ids([int(item.id) for item in val.items], self.rest_val_images, self.seed)
        keep = (lambda i: i in held_out) if split == "vqa/rest_val" else (lambda i: i not in held_out)
        extra = {
            **val.extra,
            "subset_of": "vqa/val (its manifest lists what reading the annotations skipped)",
            "rest_val_images": self.rest_val_images,
            "seed": self.seed,
        }
        return runner.SplitPlan(split, [item for item in val.items if keep(int(item.id))], [], extra)

    def write_vocabulary(self, out: Path, overwrite: bool) -> None:
        """Write ``OUT/vqa/answers.json``; refuse to change an existing one without ``overwrite``
        (converted splits hold labels that index it)."""
        path = out / ANSWERS_FILE
        if path.exists() and not overwrite and json.loads(path.read_text()) != self.vocabulary:
            raise FileExistsError(
                f"{path} holds another answer vocabulary than this conversion makes; pass --overwrite "
                "and convert every vqa split again"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.vocabulary)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vilt-shards vqav2``."""
    runner.add_arguments(parser, list(SUBSETS))
    parser.add_argument(
        "--min-answer-count",
        type=int,
        default=MIN_ANSWER_COUNT,
        help="answers kept in the vocabulary: main answers at least this often in train + val",
    )
    parser.add_argument(
        "--rest-val-images", type=int, default=1000, help="val images held out as vqa/rest_val"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the rest_val draw")


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards vqav2``."""
    options = runner.options_from_args(args, "vqav2")
    reader = VQAv2Reader(options.raw_root, args.min_answer_count, args.rest_val_images, args.seed)
    splits = runner.selected(args, SUBSETS)
    if any(SUBSETS[split].annotated for split in splits):
        reader.write_vocabulary(options.out, options.overwrite)
    runner.report(runner.convert_splits(options, splits, reader.plan))
