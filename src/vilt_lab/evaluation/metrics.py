"""Metric functions: VQA accuracy and score, retrieval recall, NLVR2 accuracy. Pure, no I/O.

:func:`vqa_accuracy` follows the official VQA evaluation (``vqaEval.py`` of GT-Vision-Lab/VQA,
as fixed in March 2021), the number the evaluation server and the paper's VQAv2 tables report:

* every answer, the annotators' and the prediction, has newlines and tabs turned into spaces and
  is stripped, always; this comes *before* the normalisation, whose punctuation rule looks at
  spaces, so "x-y\\n-" normalises as "x-y -" does ("xy"), not as the raw string would ("x y");
* the answers are normalised (:func:`~vilt_lab.data.vqa_answers.normalize_answer`, the script's
  own processing) only when the annotators do not all agree: when they do, their answer and the
  prediction are compared as given, so ten "Yes" against a predicted "yes" scores 0;
* each annotator in turn is left out and the prediction scores min(1, matches among the others /
  3); the accuracy is the mean over annotators (1 / 2 / 3 / 4+ matches of ten: 0.3 / 0.6 / 0.9 /
  1.0). The script leaves out an annotator by comparing whole answer records, which the
  annotators' distinct ``answer_id`` make unique; here each position is one annotator.

:func:`vqa_score` is ViLT's training-time ``VQAScore``: the converter's soft score of the
predicted class. It scores the prediction against the raw answers kept in the vocabulary, so it
differs from the accuracy (it is what ViLT's ``val/the_metric`` is for VQA).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vilt_lab.data.vqa_answers import normalize_answer

MATCHES_FOR_FULL_CREDIT = 3  # an answer given by this many other annotators counts as fully right
RECALL_KS = (1, 5, 10)
INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _clean(answer: str) -> str:
    """The evaluation script's whitespace handling, applied whether or not it normalises."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The official VQA accuracy of ``prediction`` for one question whose annotators gave
    ``answers`` (ten on VQAv2; fewer take the same leave-one-out rule), in [0, 1]. See the module
    docstring for the rule and its quirks.

    Raises:
        TypeError: ``answers`` is one string (it would be read as one answer per character).
        ValueError: ``answers`` is empty.
    """
    if isinstance(answers, str):
        raise TypeError(f"vqa_accuracy: answers must be a sequence of strings, got the string {answers!r}")
    if not answers:
        raise ValueError("vqa_accuracy: the question has no annotator answers to score against")
    truth = [_clean(answer) for answer in answers]
    guess = _clean(prediction)
    if len(set(truth)) > 1:
        truth = [normalize_answer(answer) for answer in truth]
        guess = normalize_answer(guess)
    matches = sum(answer == guess for answer in truth)
    # Integer credit in thirds, one division: 0.3 comes out as 0.3, not a float sum's 0.29999...
    credit = sum(min(MATCHES_FOR_FULL_CREDIT, matches - (answer == guess)) for answer in truth)
    return credit / (MATCHES_FOR_FULL_CREDIT * len(truth))


def vqa_score(predicted_label: int, labels: Sequence[int], scores: Sequence[float]) -> float:
    """ViLT's VQA score of one question: the soft score of ``predicted_label`` among the
    question's ``labels`` (with their ``scores``), 0 when it is not one of them.

    Raises:
        ValueError: ``labels`` and ``scores`` differ in length.
    """
    if len(labels) != len(scores):
        raise ValueError(f"vqa_score: {len(labels)} labels but {len(scores)} scores")
    # A dict keeps the last score of a repeated label, as ViLT's dense target vector does.
    return float(dict(zip(labels, scores, strict=True)).get(predicted_label, 0.0))


def _check_retrieval_inputs(scores: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int]) -> None:
    """Shapes, dtypes, indices and cut-offs, so that a mis-indexed evaluation fails instead of
    reporting a plausible but wrong recall."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be one or more positive integers, got {list(ks)}")
    if scores.dim() != 2 or 0 in scores.shape:
        raise ValueError(f"scores must be (N_images, N_texts), both > 0, got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores holds NaN")
    n_images, n_texts = scores.shape
    if text_image.shape != (n_texts,):
        raise ValueError(
            f"text_image must be ({n_texts},), one image index per text (column of scores), "
            f"got shape {tuple(text_image.shape)}"
        )
    if text_image.dtype not in INDEX_DTYPES:
        raise ValueError(f"text_image must hold integer image indices, got dtype {text_image.dtype}")
    if text_image.min() < 0 or text_image.max() >= n_images:
        raise ValueError(
            f"text_image holds image indices outside [0, {n_images}): "
            f"min {int(text_image.min())}, max {int(text_image.max())}"
        )
    uncaptioned = (torch.bincount(text_image.long(), minlength=n_images) == 0).nonzero().flatten()
    if len(uncaptioned):
        raise ValueError(
            f"{len(uncaptioned)} of {n_images} images have no text in text_image (first: image "
            f"{int(uncaptioned[0])}); text retrieval could never find one for them"
        )


def top_ranked(scores: torch.Tensor, k: int = max(RECALL_KS)) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best texts of each image, (N_images, k), and the k best images of each text,
    (k, N_texts), best first (k clamped to each axis). Recall@k reads prefixes of these lists, and
    an analysis of top-1 picks their first entries: one ranking, so ties fall the same way in both.

    Tied scores rank by index, lowest first (a stable sort): a split's duplicate captions tie
    exactly, and `torch.topk` orders ties as its algorithm happens to meet them, which changed
    TR@1 between a one- and a two-process evaluation of the same weights (whose other scores
    differ in the last bit), and may between devices.
    """
    n_images, n_texts = scores.shape
    texts = scores.sort(dim=1, descending=True, stable=True).indices[:, : min(k, n_texts)]
    images = scores.sort(dim=0, descending=True, stable=True).indices[: min(k, n_images)]
    return texts, images


def retrieval_recall(
    scores: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recall@k of image retrieval (``ir_r{k}``) and text retrieval (``tr_r{k}``), fractions in
    [0, 1], as ViLT's ``compute_irtr_recall`` defines them (vilt-paper-and-official-code.md §4.4).

    Args:
        scores: (N_images, N_texts), higher is a better match.
        text_image: (N_texts,) integers, the index (row of ``scores``) of each text's image;
            every image needs at least one text.
        ks: the cut-offs; one larger than an axis is clamped to its length.

    TR@k is the share of images whose k best texts hold at least one of their captions, IR@k the
    share of texts whose k best images hold their image. Tied scores rank by index, lowest
    first (:func:`top_ranked`).

    Raises:
        ValueError: for a shape, dtype, index or cut-off that does not fit (the message says which).
    """
    _check_retrieval_inputs(scores, text_image, ks)
    text_image = text_image.to(device=scores.device, dtype=torch.long)
    # Sorted top lists once, at the largest k: each smaller k's list is a prefix.
    top_texts, top_images = top_ranked(scores, max(ks))
    tr_hits = text_image[top_texts] == torch.arange(scores.shape[0], device=scores.device)[:, None]
    ir_hits = top_images == text_image[None, :]
    recall = {f"ir_r{k}": ir_hits[:k].any(dim=0).double().mean().item() for k in ks}
    recall.update({f"tr_r{k}": tr_hits[:, :k].any(dim=1).double().mean().item() for k in ks})
    return recall


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """The share of ``predictions`` equal to their ``labels`` (NLVR2: bools or 0/1).

    Raises:
        ValueError: the two differ in length, or are empty (an accuracy of nothing is no number).
    """
    if len(predictions) != len(labels):
        raise ValueError(f"accuracy: {len(predictions)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("accuracy: no predictions to score")
    return sum(bool(p == t) for p, t in zip(predictions, labels, strict=True)) / len(labels)


def _field(record: Mapping[str, Any], name: str, index: int) -> Any:
    """``record[name]``, failing with the record's position and fields rather than a bare key."""
    try:
        return record[name]
    except KeyError:
        raise KeyError(f"VQA record {index} has no '{name}' (it has {sorted(record)})") from None


def vqa_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """VQA metrics over per-question ``records``.

    Each record has ``pred_label`` (int), ``labels`` and ``scores`` (the question's soft targets),
    and, to be counted in the accuracy, ``pred_answer`` (str) and a non-empty
    ``annotator_answers`` (test splits have none); an optional ``answer_type`` ("yes/no",
    "number", "other" on VQAv2) splits the accuracy.

    Returns:
        ``questions`` (the records' count), ``score`` (mean :func:`vqa_score` over the records with
        soft targets; absent on test splits, where a 0 would read as a result) and, when
        any record has annotator answers, ``accuracy`` (mean :func:`vqa_accuracy` over those) and
        ``accuracy/<answer_type>`` per answer type they carry.

    Raises:
        ValueError: no records. KeyError: a record lacks a field it needs (named).
    """
    if not records:
        raise ValueError("vqa_metrics: no records")
    scores: list[float] = []
    accuracies: list[float] = []
    by_type: dict[str, list[float]] = defaultdict(list)
    for index, record in enumerate(records):
        labels, soft = _field(record, "labels", index), _field(record, "scores", index)
        if labels:
            scores.append(vqa_score(_field(record, "pred_label", index), labels, soft))
        if not record.get("annotator_answers"):
            continue
        value = vqa_accuracy(_field(record, "pred_answer", index), record["annotator_answers"])
        accuracies.append(value)
        if "answer_type" in record:
            by_type[record["answer_type"]].append(value)
    metrics: dict[str, float] = {"questions": len(records)}
    if scores:
        metrics["score"] = sum(scores) / len(scores)
    if accuracies:
        metrics["accuracy"] = sum(accuracies) / len(accuracies)
        metrics.update({f"accuracy/{kind}": sum(v) / len(v) for kind, v in by_type.items()})
    return metrics
