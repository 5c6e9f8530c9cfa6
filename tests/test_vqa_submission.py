"""The VQA submission file: written in the server's format, every question exactly once, and
refused with a message naming the problem when the predictions do not cover the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vilt_lab.evaluation.submission import read_vqa_submission, write_vqa_submission

VOCABULARY = ["yes", "no", "2", "red"]
QUESTION_IDS = [458752000, 458752001, 262148000, 7]


def test_written_in_the_server_format_in_question_order(tmp_path: Path) -> None:
    predictions = {7: "red", 262148000: "2", 458752001: "no", 458752000: "yes"}
    path = write_vqa_submission(tmp_path / "sub" / "vqa_submit.json", predictions, QUESTION_IDS, VOCABULARY)
    assert path == tmp_path / "sub" / "vqa_submit.json"
    assert json.loads(path.read_text()) == [
        {"question_id": 458752000, "answer": "yes"},
        {"question_id": 458752001, "answer": "no"},
        {"question_id": 262148000, "answer": "2"},
        {"question_id": 7, "answer": "red"},
    ]
    assert read_vqa_submission(path) == {q: predictions[q] for q in QUESTION_IDS}
    assert list(read_vqa_submission(path)) == QUESTION_IDS
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .partial left behind


def test_string_ids_from_the_shards_are_written_as_ints(tmp_path: Path) -> None:
    predictions = {str(q): "yes" for q in QUESTION_IDS}
    path = write_vqa_submission(tmp_path / "s.json", predictions, [str(q) for q in QUESTION_IDS], VOCABULARY)
    assert read_vqa_submission(path) == dict.fromkeys(QUESTION_IDS, "yes")


@pytest.mark.parametrize(
    ("predictions", "question_ids", "message"),
    [
        (
            {458752000: "yes"},
            QUESTION_IDS,
            "3 of 4 questions have no prediction .first: 458752001, 262148000, 7",
        ),
        (dict.fromkeys(QUESTION_IDS, "yes"), [*QUESTION_IDS, 7], "lists question 7 more than once"),
        (
            dict.fromkeys([*QUESTION_IDS, 99], "yes"),
            QUESTION_IDS,
            "1 predictions are for questions not in question_ids: 99",
        ),
        (
            {**dict.fromkeys(QUESTION_IDS, "yes"), 7: "two"},
            QUESTION_IDS,
            "not in the vocabulary, e.g. question 7: 'two'",
        ),
        ({**dict.fromkeys(QUESTION_IDS, "yes"), "7": "yes"}, QUESTION_IDS, "two keys for question 7"),
        (dict.fromkeys(QUESTION_IDS, "yes"), [*QUESTION_IDS, "q8"], "question id 'q8' is not an integer"),
    ],
)
def test_refuses_predictions_that_do_not_cover_the_split(
    tmp_path: Path, predictions: dict[int | str, str], question_ids: list[int | str], message: str
) -> None:
    path = tmp_path / "s.json"
    with pytest.raises(ValueError, match=message):
        write_vqa_submission(path, predictions, question_ids, VOCABULARY)
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"question_id": 1, "answer": "yes"}, "expected a JSON list"),
        ([{"question_id": "1", "answer": "yes"}], "entry 0 is not"),
        ([{"question_id": 1}], "entry 0 is not"),
        (
            [{"question_id": 1, "answer": "yes"}, {"question_id": 1, "answer": "no"}],
            "entry 1 repeats question 1",
        ),
    ],
)
def test_reading_refuses_a_malformed_file(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        read_vqa_submission(path)
