"""The VQA evaluation server's upload file: ``[{"question_id": int, "answer": str}, ...]``.

The server scores test-dev / test only from this file and rejects (or silently mis-scores) one
that lacks questions, so :func:`write_vqa_submission` checks everything it can before writing:
every question of the split exactly once, no prediction for a question outside it, and every
answer one the model can give (an entry of the answer vocabulary).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vilt_lab.data.shards import write_json_atomic

SHOWN = 5  # ids quoted in an error message


def _question_id(value: int | str, where: str) -> int:
    """A question id as the server wants it (an int), whether it came as one or as the string the
    shards store (``"458752000"``)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: question id {value!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: question id {value!r} is not an integer") from None


def _some(ids: Iterable[int]) -> str:
    """The first few of ``ids``, for an error message."""
    listed = list(ids)
    return ", ".join(map(str, listed[:SHOWN])) + (", ..." if len(listed) > SHOWN else "")


def write_vqa_submission(
    path: str | Path,
    predictions: Mapping[int | str, str],
    question_ids: Sequence[int | str],
    vocabulary: Sequence[str],
) -> Path:
    """Write the submission of ``predictions`` (question id -> answer) for the split whose
    questions are ``question_ids``, in that order, to ``path`` (atomically: a ``.partial`` file
    renamed into place, so an interrupted run leaves no file that looks complete).

    Ids may be ints or their strings; both are written as ints. Returns the path written.

    Raises:
        ValueError: naming what is wrong: an id that is not an integer, a duplicate in
            ``question_ids`` (or two keys of ``predictions`` for one id), questions without a
            prediction (how many, the first few), predictions for questions not in
            ``question_ids``, or an answer not in ``vocabulary``.
    """
    order: list[int] = []
    seen: set[int] = set()
    for value in question_ids:
        question_id = _question_id(value, "question_ids")
        if question_id in seen:
            raise ValueError(f"question_ids lists question {question_id} more than once")
        seen.add(question_id)
        order.append(question_id)
    answers: dict[int, str] = {}
    for key, answer in predictions.items():
        question_id = _question_id(key, "predictions")
        if question_id in answers:
            raise ValueError(f"predictions holds two keys for question {question_id}")
        answers[question_id] = answer
    if missing := [q for q in order if q not in answers]:
        raise ValueError(
            f"{len(missing)} of {len(order)} questions have no prediction (first: {_some(missing)})"
        )
    if unknown := [q for q in answers if q not in seen]:
        raise ValueError(
            f"{len(unknown)} predictions are for questions not in question_ids: {_some(unknown)}"
        )
    known = set(vocabulary)
    if outside := [q for q in order if answers[q] not in known]:
        raise ValueError(
            f"{len(outside)} answers are not in the vocabulary, e.g. question {outside[0]}: "
            f"{answers[outside[0]]!r}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, [{"question_id": q, "answer": answers[q]} for q in order])
    return path


def read_vqa_submission(path: str | Path) -> dict[int, str]:
    """A submission file read back as ``{question id: answer}``, in file order.

    Raises:
        ValueError: naming the file and entry, when it is not a list of ``{"question_id": int,
            "answer": str}`` objects with distinct ids.
    """
    data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{question_id, answer}} objects")
    answers: dict[int, str] = {}
    for index, entry in enumerate(data):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"question_id", "answer"}
            or isinstance(entry["question_id"], bool)
            or not isinstance(entry["question_id"], int)
            or not isinstance(entry["answer"], str)
        ):
            raise ValueError(f"{path}: entry {index} is not {{question_id: int, answer: str}}: {entry!r}")
        if entry["question_id"] in answers:
            raise ValueError(f"{path}: entry {index} repeats question {entry['question_id']}")
        answers[entry["question_id"]] = entry["answer"]
    return answers
