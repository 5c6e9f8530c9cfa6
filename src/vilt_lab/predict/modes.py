"""What each prediction is: the one place that dispatches on the task (`MODES`).

A mode names the head it needs, checks its arguments before anything is loaded, turns the head's
logits into records (what `--json` prints) and the records into table rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .predictor import Predictor

# How a text asks for a word to be filled in, as in the official demo and BERT's vocabularies
# (the released checkpoints' and the shapes world's).
MASK = "[MASK]"

Record = dict[str, Any]


class ArgumentError(ValueError):
    """An argument that cannot give a prediction; the message names it."""


@dataclass(frozen=True)
class Inputs:
    """What one prediction reads: the image (NLVR2: the pair) and the texts."""

    image: Path
    texts: tuple[str, ...]
    image2: Path | None = None
    top_k: int = 5


@dataclass(frozen=True)
class Mode:
    """One task: its head, its argument check, its predictions and how they read as a table."""

    head: str
    summary: str
    check: Callable[[Inputs], None]
    predict: Callable[[Predictor, Inputs], list[Record]]
    columns: tuple[str, ...]
    rows: Callable[[list[Record]], list[tuple[str, ...]]]


def _one_image(task: str) -> Callable[[Inputs], None]:
    def check(inputs: Inputs) -> None:
        if inputs.image2 is not None:
            raise ArgumentError(f"--image2 is read by --task nlvr2 only, not by --task {task}")

    return check


# ITM ------------------------------------------------------------------------------------------


def _itm(predictor: Predictor, inputs: Inputs) -> list[Record]:
    batch = predictor.batch(inputs.texts, [predictor.image(inputs.image)])
    match = predictor.logits("itm", batch).softmax(-1)[:, 1]  # class 1 = match
    order = match.argsort(descending=True).tolist()
    return [
        {"rank": rank, "text": inputs.texts[i], "match_probability": match[i].item()}
        for rank, i in enumerate(order, 1)
    ]


def _itm_rows(records: list[Record]) -> list[tuple[str, ...]]:
    return [(str(r["rank"]), f"{r['match_probability']:.3f}", r["text"]) for r in records]


# MLM ------------------------------------------------------------------------------------------


def _check_masks(inputs: Inputs) -> None:
    _one_image("mlm")(inputs)
    for text in inputs.texts:
        if MASK not in text:
            raise ArgumentError(f"--text {text!r} has no {MASK} to fill in (--task mlm)")


def _fill(predictor: Predictor, image: torch.Tensor, text: str, top_k: int) -> Record:
    """Fill `text`'s [MASK]s as the official demo does: one pass per mask, each time fixing the
    mask the model is surest of, so a word split over several pieces is read in context of the
    pieces already chosen. Each mask's record: its token position ([CLS] is 0) and the top-k
    pieces of the pass that fixed it."""
    tokenizer = predictor.tokenizer
    batch = predictor.batch([text], [image])
    input_ids = batch["input_ids"]
    masked = (input_ids[0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not masked:
        raise ArgumentError(
            f"--text {text!r}: no {MASK} left after tokenization (cut at "
            f"{predictor.model.backbone.config.max_text_len} tokens?)"
        )
    # A special token ([PAD], [CLS], [MASK], ...) is never a word of the filled-in text.
    never = torch.tensor(tokenizer.all_special_ids)
    masks = []
    while masked:
        logits = predictor.logits("mlm", batch)[0]
        logits[:, never] = float("-inf")
        probs = logits.softmax(-1)
        position = max(masked, key=lambda p: probs[p].max().item())
        top = probs[position].topk(min(top_k, probs.shape[-1]))
        ids = top.indices.tolist()
        masks.append(
            {
                "position": position,
                "predictions": [
                    {"token": token, "probability": p}
                    for token, p in zip(
                        tokenizer.convert_ids_to_tokens(ids), top.values.tolist(), strict=True
                    )
                ],
            }
        )
        input_ids[0, position] = ids[0]
        masked.remove(position)
    # decode joins word pieces ("squ" "##ares" -> "squares"): the filled text reads as words.
    filled = tokenizer.decode(input_ids[0], skip_special_tokens=True)
    return {"text": text, "filled": filled, "masks": sorted(masks, key=lambda m: m["position"])}


def _mlm(predictor: Predictor, inputs: Inputs) -> list[Record]:
    image = predictor.image(inputs.image)
    return [_fill(predictor, image, text, inputs.top_k) for text in inputs.texts]


def _mlm_rows(records: list[Record]) -> list[tuple[str, ...]]:
    rows = []
    for record in records:
        for i, mask in enumerate(record["masks"]):
            top = ", ".join(f"{p['token']} {p['probability']:.3f}" for p in mask["predictions"])
            first = i == 0
            rows.append((record["text"] if first else "", record["filled"] if first else "", top))
    return rows


# VQA ------------------------------------------------------------------------------------------


def _vqa(predictor: Predictor, inputs: Inputs) -> list[Record]:
    answers = predictor.model.head_specs["vqa"].get("labels")
    if not answers:
        raise ArgumentError(
            f"checkpoint {predictor.source}: its vqa head has no answer list (convert an official "
            "checkpoint with `vilt-convert official ... --vqa-labels vqa_dict.json`)"
        )
    batch = predictor.batch(inputs.texts, [predictor.image(inputs.image)])
    # Each answer is scored on its own (sigmoid): VQA's targets are soft scores, not one class.
    scores = torch.sigmoid(predictor.logits("vqa", batch))
    top = scores.topk(min(inputs.top_k, scores.shape[-1]), dim=-1)
    return [
        {
            "question": question,
            "answer": answers[ids[0]],
            "top": [{"answer": answers[i], "score": s} for i, s in zip(ids, values, strict=True)],
        }
        for question, ids, values in zip(inputs.texts, top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def _vqa_rows(records: list[Record]) -> list[tuple[str, ...]]:
    return [
        (record["question"] if rank == 1 else "", str(rank), entry["answer"], f"{entry['score']:.3f}")
        for record in records
        for rank, entry in enumerate(record["top"], 1)
    ]


# NLVR2 ----------------------------------------------------------------------------------------


def _check_pair(inputs: Inputs) -> None:
    if inputs.image2 is None:
        raise ArgumentError("--task nlvr2 judges a statement about two images: give the second with --image2")


def _nlvr2(predictor: Predictor, inputs: Inputs) -> list[Record]:
    assert inputs.image2 is not None  # _check_pair
    pair = [predictor.image(inputs.image), predictor.image(inputs.image2)]
    true = predictor.logits("nlvr2", predictor.batch(inputs.texts, pair)).softmax(-1)[:, 1]  # 1 = true
    return [
        {"statement": text, "verdict": bool(p > 0.5), "probability_true": p.item()}
        for text, p in zip(inputs.texts, true, strict=True)
    ]


def _nlvr2_rows(records: list[Record]) -> list[tuple[str, ...]]:
    return [(str(r["verdict"]).lower(), f"{r['probability_true']:.3f}", r["statement"]) for r in records]


MODES: dict[str, Mode] = {
    "itm": Mode(
        "itm", "rank the texts by ITM match probability", _one_image("itm"), _itm,
        ("rank", "p(match)", "text"), _itm_rows,
    ),
    "mlm": Mode(
        "mlm", "fill in each text's [MASK] words", _check_masks, _mlm,
        ("text", "filled in", "each [MASK]: top predictions"), _mlm_rows,
    ),
    "vqa": Mode(
        "vqa", "answer each text as a question", _one_image("vqa"), _vqa,
        ("question", "rank", "answer", "score"), _vqa_rows,
    ),
    "nlvr2": Mode(
        "nlvr2", "judge each text as a statement about --image and --image2", _check_pair, _nlvr2,
        ("verdict", "p(true)", "statement"), _nlvr2_rows,
    ),
}  # fmt: skip


def infer_task(inputs: Inputs, heads: Collection[str] | None) -> str | None:
    """The task the inputs ask for when --task is not given: a second image is NLVR2, a [MASK]
    is MLM; otherwise ITM, or VQA for a checkpoint with a VQA head and no ITM head. None while
    that needs the checkpoint's `heads` and they are not known yet."""
    if inputs.image2 is not None:
        return "nlvr2"
    if any(MASK in text for text in inputs.texts):
        return "mlm"
    if heads is None:
        return None
    return "vqa" if "vqa" in heads and "itm" not in heads else "itm"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last one is left unpadded (free text)."""
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns) - 1)]
    lines = []
    for row in [columns, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
