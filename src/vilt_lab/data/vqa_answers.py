"""VQA answers: the official normalisation, the answer vocabulary, and soft scores.

:func:`normalize_answer` is the VQA evaluation script's answer processing (``vqaEval.py``:
``processPunctuation`` then ``processDigitArticle``), quirks included. The one function serves
both its users: ViLT's converter, whose vocabulary (3,129 answers on VQAv2) and hence every
label id depend on it, and the accuracy of :mod:`vilt_lab.evaluation.metrics`. ViLT's copy
(``normalize_word``) ends with a removal of commas that can never find one, since the comma is
one of the punctuation marks every one of which is deleted or replaced first; it is left out.
The quirks kept:

* whether a punctuation mark is deleted or replaced by a space is decided on the *original*
  answer: deleted when it touches a space there, or when the answer holds a digit-comma-digit
  anywhere (then every mark is deleted: "1,000-2,000" -> "10002000");
* a period is deleted unless a digit follows ("3.5" stays; the official pattern's ``(?!<=\\d)``
  is a mistyped lookbehind that matches everything), and the official call passes ``re.UNICODE``
  as the *count*, so at most 32 periods are deleted;
* number words only up to ten, and "none" -> "0"; articles are dropped after that mapping;
* contractions are looked up after lower-casing, so the table's capitalised keys ("Im", "Ive",
  "Id've", "I'dve") never match and are left out here; "somebody'd" -> "somebodyd" is official.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')  # not the apostrophe, colon or period
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
MAX_PERIODS_DELETED = 32  # re.UNICODE == 32, passed as `count` by the official script

# VQA soft score of an answer given by n of the 10 annotators (n >= 4 counts as fully right).
SCORE_BY_COUNT = {1: 0.3, 2: 0.6, 3: 0.9}
MIN_ANSWER_COUNT = 9  # vocabulary: answers that are a question's main answer at least this often


def _punctuation(answer: str) -> str:
    delete_all = _DIGIT_COMMA.search(answer) is not None
    out = answer
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in answer or f" {mark}" in answer
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD.sub("", out, count=MAX_PERIODS_DELETED)


def normalize_answer(answer: str) -> str:
    """The official VQA normalisation of one answer (see the module docstring): the evaluation
    script's and the converter's, so that labels and accuracy agree on what counts as one answer."""
    words = [NUMBER_WORDS.get(word, word) for word in _punctuation(answer).lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def answer_vocabulary(main_answers: Iterable[str], min_count: int = MIN_ANSWER_COUNT) -> list[str]:
    """Normalised main answers (``multiple_choice_answer``) seen at least ``min_count`` times, in
    order of first appearance: the label of an answer is its index. On VQAv2 train + val with the
    default this is the 3,129 answers of the paper."""
    counts = Counter(normalize_answer(answer) for answer in main_answers)
    return [answer for answer, count in counts.items() if count >= min_count]


def soft_score(count: int) -> float:
    """Score of an answer given by ``count`` annotators: 0.3 / 0.6 / 0.9, 1.0 from 4 on."""
    if count < 1:
        raise ValueError(f"an answer given by {count} annotators has no score")
    return SCORE_BY_COUNT.get(count, 1.0)


def soft_targets(
    raw_answers: Iterable[str], labels: dict[str, int]
) -> tuple[list[str], list[int], list[float]]:
    """One question's ``(answers, labels, scores)``: each distinct *raw* annotator answer that is in
    the vocabulary (``labels``: answer -> label), in order of first appearance, with its soft score.

    As in the official converter the annotators' answers are matched as given, not normalised.
    """
    counts = Counter(raw_answers)
    kept = [answer for answer in counts if answer in labels]
    return kept, [labels[a] for a in kept], [soft_score(counts[a]) for a in kept]
