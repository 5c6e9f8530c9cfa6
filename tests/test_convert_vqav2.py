"""VQAv2 converter on a tiny real-format copy: vocabulary, labels, soft scores, annotator answers and
answer types, val split, test files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.raw_datasets import manifest, read_split, run_cli, skipped, write_vqav2
from vilt_lab.data.sources.vqav2 import rest_val_ids
from vilt_lab.data.vqa_answers import answer_vocabulary

SCORE = {1: 0.3, 2: 0.6, 3: 0.9}  # 4 or more annotators: 1.0
TYPE_FIELDS = ("answer_type", "question_type")  # optional in an annotation: kept when there
IMAGES = {"train2014": 8, "val2014": 7, "test2015": 2, "test-dev2015": 2}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("vqav2")
    raw = write_vqav2(root / "raw", IMAGES)
    run_cli(
        "vqav2", root / "raw", root / "out", "--min-answer-count", "2", "--rest-val-images", "3", workers=2
    )
    return root / "out" / "vqa", raw


def test_vocabulary_from_train_and_val_main_answers(converted) -> None:
    out, raw = converted
    mains = [q["main"] for subset in ("train2014", "val2014") for q in raw[subset].values()]
    vocabulary = json.loads((out / "answers.json").read_text())
    assert vocabulary == answer_vocabulary(mains, min_count=2)
    assert "2" in vocabulary and "two" not in vocabulary  # number words are normalised


@pytest.mark.parametrize(("split", "subset"), [("train", "train2014"), ("val", "val2014")])
def test_questions_answers_labels_and_scores_round_trip(converted, split: str, subset: str) -> None:
    out, raw = converted
    vocabulary = json.loads((out / "answers.json").read_text())
    samples = read_split(out / split)
    found = {
        q["id"]: (int(image_id), q) for image_id, (_, meta) in samples.items() for q in meta["questions"]
    }
    reasons = skipped(out / split)
    for question_id, expected in raw[subset].items():
        counts = Counter(expected["answers"])
        in_vocabulary = [a for a in counts if a in vocabulary]
        if not in_vocabulary:
            assert reasons[str(question_id)] == "no answer in the vocabulary"
            continue
        image_id, question = found.pop(str(question_id))
        assert image_id == expected["image_id"] and question["text"] == expected["text"]
        assert question["answers"] == in_vocabulary
        assert question["labels"] == [vocabulary.index(a) for a in in_vocabulary]
        assert question["scores"] == [SCORE.get(counts[a], 1.0) for a in in_vocabulary]
        assert question["annotator_answers"] == expected["answers"]  # all ten, raw, in order
        assert {f: question[f] for f in TYPE_FIELDS if f in question} == expected["types"]
    assert not found  # nothing written that was not asked
    assert manifest(out / split)["num_texts"] == sum(len(m["questions"]) for _, m in samples.values())


def test_rest_val_is_a_seeded_hold_out_of_val(converted) -> None:
    out, _ = converted
    val = set(read_split(out / "val"))
    trainable, rest = set(read_split(out / "trainable_val")), set(read_split(out / "rest_val"))
    assert len(rest) == 3 and trainable | rest == val and not trainable & rest
    assert rest == {str(i) for i in rest_val_ids([int(i) for i in val], 3, seed=0)}
    assert manifest(out / "rest_val")["seed"] == 0


@pytest.mark.parametrize(("split", "subset"), [("test", "test2015"), ("test-dev", "test-dev2015")])
def test_test_splits_carry_questions_without_answers(converted, split: str, subset: str) -> None:
    out, raw = converted
    questions = {q["id"]: q for _, meta in read_split(out / split).values() for q in meta["questions"]}
    assert set(questions) == {str(q) for q in raw[subset]}
    for question_id, question in questions.items():
        assert question["text"] == raw[subset][int(question_id)]["text"]
        assert question["answers"] == question["labels"] == question["scores"] == []
        assert question["annotator_answers"] == [] and not set(TYPE_FIELDS) & set(question)


def test_unusable_questions_and_images_left_without_any_are_skipped(tmp_path: Path) -> None:
    raw = write_vqav2(tmp_path / "raw", {"train2014": 2, "val2014": 1})
    path = tmp_path / "raw" / "v2_OpenEnded_mscoco_val2014_questions.json"
    data = json.loads(path.read_text())
    (image_id,) = {q["image_id"] for q in data["questions"]}
    data["questions"] += [
        {"image_id": image_id, "question": " ", "question_id": 1},  # empty
        {"image_id": image_id, "question": "is it there?", "question_id": 2},  # not annotated
        {"image_id": 999, "question": "", "question_id": 3},  # its image's only question
    ]
    path.write_text(json.dumps(data))
    run_cli("vqav2", tmp_path / "raw", tmp_path / "out", "--split", "vqa/val", "--min-answer-count", "1")
    split = tmp_path / "out" / "vqa" / "val"
    assert skipped(split) == {
        "1": "empty question",
        "2": "question has no annotation",
        "3": "empty question",
        "999": "no question left",
    }
    (meta,) = [m for _, m in read_split(split).values()]
    assert [q["id"] for q in meta["questions"]] == [str(q) for q in raw["val2014"]]
