"""Metric functions: the official VQA accuracy on hand-derived cases, VQA score and metrics,
retrieval recall on hand-made score matrices, NLVR2 accuracy."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from vilt_lab.data.sources.shapes import questions, sample_scene
from vilt_lab.data.vqa_answers import normalize_answer
from vilt_lab.evaluation.metrics import accuracy, retrieval_recall, vqa_accuracy, vqa_metrics, vqa_score


def ten(answer: str, n: int, other: str = "blue") -> list[str]:
    """Ten annotator answers, ``n`` of them ``answer`` and the rest ``other``."""
    return [answer] * n + [other] * (10 - n)


# (prediction, annotator answers, official accuracy). With m of ten matching, the m matching
# annotators left out see m - 1 matches, the 10 - m others see m; each scores min(1, seen / 3):
# m = 1: (1 * 0 + 9 * 1/3) / 10 = 0.3; m = 2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6;
# m = 3: (3 * 2/3 + 7 * 1) / 10 = 0.9; m = 4: (4 * 1 + 6 * 1) / 10 = 1.0.
ACCURACY_CASES = [
    ("red", ten("red", 0), 0.0),
    ("red", ten("red", 1), 0.3),
    ("red", ten("red", 2), 0.6),
    ("red", ten("red", 3), 0.9),
    ("red", ten("red", 4), 1.0),
    ("red", ten("red", 7), 1.0),
    # all ten agree: compared as given, nothing normalised (the official quirk)
    ("yes", ["yes"] * 10, 1.0),
    ("yes", ["Yes"] * 10, 0.0),
    ("Yes", ["yes"] * 10, 0.0),
    ("yes.", ["yes"] * 10, 0.0),
    ("2", ["two"] * 10, 0.0),
    # ... but newlines, tabs and outer spaces go, always
    (" yes\n", ["yes"] * 10, 1.0),
    ("yes", ["\tyes "] * 10, 1.0),
    # they disagree: everything normalised, the prediction too
    ("yes", ["Yes"] * 5 + ["yes"] * 5, 1.0),  # ten matches after lower-casing
    ("red", ten("Red", 2), 0.6),  # case
    ("2", ten("two", 3, other="three"), 0.9),  # number words: "three" -> "3" does not match
    ("two", ten("2", 3), 0.9),  # ... the prediction's too
    ("dog", ["a dog", "the dog"] + ["cat"] * 8, 0.6),  # articles
    ("don't", ["dont", "don't", "don't"] + ["no"] * 7, 0.9),  # contractions
    ("yes", ten("yes.", 2, other="no"), 0.6),  # trailing period
    ("t shirt", ten("t-shirt", 4, other="shirt"), 1.0),  # a mark between letters: a space
    ("1000", ["1,000"] * 3 + ["1000"] + ["many"] * 6, 1.0),  # digit-comma-digit: marks deleted
    ("3.5", ten("3.5", 1, other="3"), 0.3),  # a period before a digit stays
    # "x-y\n-" is cleaned to "x-y -" first, so its "-" touches a space: all deleted, "xy"
    ("xy", ten("x-y\n-", 3, other="z"), 0.9),
    ("x y", ten("x-y\n-", 3, other="z"), 0.0),
    # fewer than ten annotators, the same rule: red left out sees 1 match (1/3), twice; blue
    # left out sees 2 (2/3): (1/3 + 1/3 + 2/3) / 3 = 4/9
    ("red", ["red", "red", "blue"], 4 / 9),
    ("red", ["red"], 0.0),  # one annotator: left out, no one is left to agree with
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), ACCURACY_CASES)
def test_vqa_accuracy_follows_the_official_evaluation(
    prediction: str, answers: list[str], expected: float
) -> None:
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("matches", "expected"), [(1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0)])
def test_vqa_accuracy_steps_are_exact_floats(matches: int, expected: float) -> None:
    assert vqa_accuracy("red", ten("red", matches)) == expected


def test_vqa_accuracy_rejects_no_answers_and_a_bare_string() -> None:
    with pytest.raises(ValueError, match="no annotator answers"):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError, match="sequence of strings"):
        vqa_accuracy("yes", "yes")


@pytest.mark.parametrize("answer", ["red,white", "1,000", "a , b", ",", "2 dogs, 1 cat", "x,,y"])
def test_normalisation_leaves_no_comma(answer: str) -> None:
    # Why ViLT's extra comma removal is left out of normalize_answer: nothing is left to remove.
    assert "," not in normalize_answer(answer)


def test_shapes_questions_carry_ten_agreeing_annotators_and_an_answer_type() -> None:
    rng = random.Random(0)
    kinds = set()
    for index in range(40):
        for q in questions(sample_scene(rng), rng, str(index)):
            answer = q["answers"][0]
            assert q["annotator_answers"] == [answer] * 10
            assert vqa_accuracy(answer, q["annotator_answers"]) == 1.0
            # the type from the question, independently of the answer-type helper
            counting = q["text"].startswith("how many")
            expected = "yes/no" if answer in ("yes", "no") else "number" if counting else "other"
            assert q["answer_type"] == expected
            kinds.add(q["answer_type"])
    assert kinds == {"yes/no", "number", "other"}


def test_vqa_score_is_the_soft_score_of_the_predicted_class() -> None:
    assert vqa_score(3, [1, 3], [0.3, 0.9]) == 0.9
    assert vqa_score(2, [1, 3], [0.3, 0.9]) == 0.0
    assert vqa_score(0, [], []) == 0.0
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        vqa_score(1, [1, 3], [0.3])


def _record(
    answer: str,
    label: int,
    labels: list[int],
    scores: list[float],
    annotators: list[str],
    kind: str | None = None,
) -> dict[str, Any]:
    """One question's record as an evaluation loop collects it, with ``answer_type`` if ``kind``."""
    record = {
        "pred_answer": answer,
        "pred_label": label,
        "labels": labels,
        "scores": scores,
        "annotator_answers": annotators,
    }
    return record if kind is None else {**record, "answer_type": kind}


def test_vqa_metrics_score_accuracy_and_accuracy_per_answer_type() -> None:
    records = [
        _record("yes", 0, [0], [1.0], ["yes"] * 10, "yes/no"),  # score 1.0, accuracy 1.0
        _record("2", 1, [1, 2], [0.6, 0.3], ten("2", 2, other="3"), "number"),  # 0.6, 0.6
        _record("red", 2, [3], [1.0], ["blue"] * 10, "other"),  # 0.0, 0.0
        _record("blue", 3, [3], [1.0], ["blue"] * 9 + ["Blue"], "other"),  # 1.0, 1.0 (normalised)
        _record("blue", 3, [], [], []),  # a test question: neither score nor accuracy
    ]
    metrics = vqa_metrics(records)
    assert metrics == pytest.approx(
        {
            "score": (1.0 + 0.6 + 0.0 + 1.0) / 4,
            "accuracy": (1.0 + 0.6 + 0.0 + 1.0) / 4,
            "accuracy/yes/no": 1.0,
            "accuracy/number": 0.6,
            "accuracy/other": 0.5,
            "questions": 5,
        }
    )


def test_vqa_metrics_without_annotator_answers_has_no_accuracy() -> None:
    records = [_record("yes", 0, [], [], []), {"pred_label": 0, "labels": [0], "scores": [0.3]}]
    assert vqa_metrics(records) == pytest.approx({"score": 0.3, "questions": 2})
    assert vqa_metrics(records[:1]) == {"questions": 1}  # a test split: no score to report


def test_vqa_metrics_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="no records"):
        vqa_metrics([])
    with pytest.raises(KeyError, match="record 1 has no 'pred_answer'"):
        vqa_metrics(
            [
                _record("yes", 0, [0], [1.0], ["yes"]),
                {"pred_label": 0, "labels": [], "scores": [], "annotator_answers": ["a"]},
            ]
        )


# 3 images, 5 texts: texts 0, 1 show image 0, texts 2, 3 image 1, text 4 image 2. No ties.
SCORES = torch.tensor(
    [
        [0.90, 0.10, 0.80, 0.15, 0.30],  # image 0: texts 0, 2, 4, 3, 1 -> its text 0 first
        [0.50, 0.40, 0.30, 0.20, 0.10],  # image 1: texts 0, 1, 2, ... -> its text 2 third
        [0.10, 0.20, 0.25, 0.40, 0.95],  # image 2: text 4 first
    ]
)
TEXT_IMAGE = torch.tensor([0, 0, 1, 1, 2])
# Image ranks of each text's image (columns): text 0: 1st; text 1 (0.1, 0.4, 0.2): 3rd;
# text 2 (0.8, 0.3, 0.25): 2nd; text 3 (0.15, 0.2, 0.4): 2nd; text 4: 1st.
# IR@1 = 2/5, IR@2 = 4/5, IR@3 = 5/5. TR@1 = 2/3 (images 0, 2), TR@2 = 2/3, TR@3 = 3/3.


def test_retrieval_recall_on_a_hand_made_matrix() -> None:
    recall = retrieval_recall(SCORES, TEXT_IMAGE, ks=(1, 2, 3))
    assert recall == pytest.approx(
        {"ir_r1": 0.4, "ir_r2": 0.8, "ir_r3": 1.0, "tr_r1": 2 / 3, "tr_r2": 2 / 3, "tr_r3": 1.0}
    )
    assert list(recall) == ["ir_r1", "ir_r2", "ir_r3", "tr_r1", "tr_r2", "tr_r3"]
    assert retrieval_recall(SCORES, TEXT_IMAGE.to(torch.uint8), ks=(1, 2, 3)) == recall  # any int dtype


def test_retrieval_recall_clamps_k_to_the_axis() -> None:
    # Default ks (1, 5, 10): 5 and 10 exceed the 3 images (IR) and 10 the 5 texts (TR): all found.
    recall = retrieval_recall(SCORES, TEXT_IMAGE)
    assert recall == pytest.approx(
        {"ir_r1": 0.4, "ir_r5": 1.0, "ir_r10": 1.0, "tr_r1": 2 / 3, "tr_r5": 1.0, "tr_r10": 1.0}
    )


def test_retrieval_recall_matches_a_loop_over_images_and_texts() -> None:
    generator = torch.Generator().manual_seed(0)
    n_images, per_image = 20, 5
    text_image = torch.arange(n_images).repeat_interleave(per_image)[
        torch.randperm(n_images * per_image, generator=generator)
    ]
    scores = torch.rand(n_images, n_images * per_image, generator=generator)
    scores[text_image, torch.arange(len(text_image))] += 0.3  # better than chance, not perfect
    recall = retrieval_recall(scores, text_image)
    for k in (1, 5, 10):
        ir = [text_image[t] in scores[:, t].argsort(descending=True)[:k] for t in range(len(text_image))]
        tr = [bool((text_image[scores[i].argsort(descending=True)[:k]] == i).any()) for i in range(n_images)]
        assert recall[f"ir_r{k}"] == pytest.approx(sum(ir) / len(ir))
        assert recall[f"tr_r{k}"] == pytest.approx(sum(tr) / len(tr))
    assert 0 < recall["ir_r1"] < recall["ir_r10"] <= 1


def test_tied_scores_rank_by_index_whatever_the_other_scores() -> None:
    """Duplicate captions score exactly alike: the lower index ranks first, whatever the other
    scores are (topk's order of ties changed with them)."""
    torch.manual_seed(0)
    text_image = torch.tensor([0, 1, 1, 0])  # texts 0 and 3 are image 0's, 1 and 2 image 1's
    for _ in range(20):
        scores = torch.rand(2, 4)
        scores[:, 3] = scores[:, 1]  # text 3 (image 0's) duplicates text 1 (image 1's)
        scores[0, 1] = scores[0, 3] = 2.0  # both are image 0's best: text 1 ranks first, a miss
        image1_hit = float(int(scores[1].argmax()) in (1, 2))
        assert retrieval_recall(scores, text_image, ks=(1,))["tr_r1"] == image1_hit / 2


@pytest.mark.parametrize(
    ("scores", "text_image", "ks", "message"),
    [
        (SCORES[0], TEXT_IMAGE, (1,), "scores must be"),
        (SCORES, TEXT_IMAGE[:4], (1,), r"text_image must be \(5,\)"),
        (SCORES, TEXT_IMAGE.float(), (1,), "integer image indices"),
        (SCORES, torch.tensor([0, 0, 1, 1, 3]), (1,), r"outside \[0, 3\)"),
        (SCORES, torch.tensor([0, 0, 1, 1, 1]), (1,), "1 of 3 images have no text .* image 2"),
        (SCORES, TEXT_IMAGE, (0, 1), "positive integers"),
        (SCORES, TEXT_IMAGE, (), "positive integers"),
        (torch.full((3, 5), float("nan")), TEXT_IMAGE, (1,), "NaN"),
    ],
)
def test_retrieval_recall_rejects_what_does_not_fit(
    scores: torch.Tensor, text_image: torch.Tensor, ks: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_recall(scores, text_image, ks)


def test_accuracy() -> None:
    assert accuracy([True, False, True], [True, True, True]) == pytest.approx(2 / 3)
    assert accuracy([1, 0], [1, 0]) == 1.0
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        accuracy([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no predictions"):
        accuracy([], [])
