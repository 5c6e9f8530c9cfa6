"""VQA answers: the official normalisation on a table of cases, the vocabulary and the soft scores."""

from __future__ import annotations

import pytest

from vilt_lab.data.vqa_answers import answer_vocabulary, normalize_answer, soft_score, soft_targets

# (raw answer, what the official VQA evaluation / ViLT normalisation makes of it)
CASES = [
    # number words up to ten, and "none"
    ("Two", "2"),
    ("two dogs", "2 dogs"),
    ("none", "0"),
    ("ten", "10"),
    ("eleven", "eleven"),
    # articles, after the number mapping
    ("a dog", "dog"),
    ("The Dog", "dog"),
    ("an apple", "apple"),
    ("the one", "1"),
    ("a", ""),
    # punctuation: deleted next to a space, else replaced by one
    ("t-shirt", "t shirt"),
    ("black - white", "black white"),
    ("red, white", "red white"),
    ("red,white", "red white"),
    ("yes!", "yes"),
    ("1/2", "1 2"),
    ("hello@world", "hello world"),
    ("50%", "50%"),
    # a digit-comma-digit anywhere deletes every mark
    ("1,000", "1000"),
    ("1,000-2,000", "10002000"),
    ("2 dogs, 1 cat", "2 dogs 1 cat"),
    # periods: kept before a digit only, at most 32 deleted
    ("yes.", "yes"),
    ("3.5", "3.5"),
    ("5.", "5"),
    ("Mr. Smith", "mr smith"),
    ("a.m.", "am"),
    ("x" + "." * 33, "x."),
    # contractions, looked up after lower-casing
    ("dont", "don't"),
    ("isnt", "isn't"),
    ("whats up?", "what's up"),
    ("it's", "it's"),
    ("Im", "im"),
    ("somebody'd", "somebodyd"),
    # whitespace
    ("  Yes  ", "yes"),
]


@pytest.mark.parametrize(("raw", "normalised"), CASES)
def test_official_normalisation(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


def test_scores_follow_the_annotator_count_rule() -> None:
    assert [soft_score(n) for n in range(1, 11)] == [0.3, 0.6, 0.9] + [1.0] * 7
    with pytest.raises(ValueError):
        soft_score(0)


def test_soft_targets_match_raw_answers_only() -> None:
    labels = {"2": 0, "yes": 1, "red": 2}
    raw = ["2", "2", "two", "red", "2", "blue", "2", "2", "red", "Red"]
    assert soft_targets(raw, labels) == (["2", "red"], [0, 2], [1.0, 0.6])
    assert soft_targets(["blue"] * 10, labels) == ([], [], [])


def test_vocabulary_keeps_frequent_normalised_answers_in_first_seen_order() -> None:
    main = ["two", "yes", "2", "red", "Yes", "no", "red.", "blue"]
    assert answer_vocabulary(main, min_count=2) == ["2", "yes", "red"]
    assert answer_vocabulary(main, min_count=1) == ["2", "yes", "red", "no", "blue"]
