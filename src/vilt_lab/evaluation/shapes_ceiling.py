"""How well can anything retrieve on a shapes-world split? Captions true of several images.

A shapes caption is true of every scene it describes, and "there is a red circle" describes many.
Exact retrieval counts only the caption's own image as right, so even a model that knows which
captions are true of which images is capped: it must guess among the images a text is true of
(IR@1), and among the texts true of an image (TR@1). This measures those caps on a split by
drawing every scene's captions many times (the templates' random choices), which finds its true
captions, and assuming a perfect model ranks true pairs first with ties broken at random.

    python -m vilt_lab.evaluation.shapes_ceiling data/shapes/retrieval/test

Given a model's score matrix on the split (``vilt-eval task=irtr ... save_scores=true`` writes
scores.pt), it also says what the model's top-1 picks are: the right one, one that is true but
another image's (what the ceiling counts), or a false one (the model's own error), and how much
of image retrieval a few "hub" images take:

    python -m vilt_lab.evaluation.shapes_ceiling data/shapes/retrieval/test runs/eval/.../scores.pt
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from vilt_lab.data.shards import iter_samples
from vilt_lab.data.sources.shapes import Scene, captions
from vilt_lab.evaluation.metrics import top_ranked

DRAWS = 300  # caption draws per scene: enough to find every caption its templates can produce


def true_captions(scene: Scene, draws: int = DRAWS, seed: int = 0) -> set[str]:
    """Every caption the templates produce for ``scene`` over ``draws`` random draws."""
    found: set[str] = set()
    for draw in range(draws):
        found.update(captions(scene, random.Random(f"ceiling/{seed}/{draw}"), k=len(found) + 8))
    return found


HUB_SHARE = 0.05  # the most-picked 5% of images are the "hubs" of image retrieval


class SplitTruth(NamedTuple):
    """A split's (captions, scene, key) per image, its texts in order, and each image's true
    captions (its own ones included, whatever the draws found)."""

    items: list[tuple[list[str], Scene, str]]
    texts: list[str]
    truth: list[set[str]]


def split_truth(split: str | Path, draws: int = DRAWS) -> SplitTruth:
    """The `SplitTruth` of ``split`` (the costly part: every scene's captions drawn ``draws`` times)."""
    items = [(meta["captions"], Scene.from_json(meta["scene"]), key) for key, _, meta in iter_samples(split)]
    truth = [true_captions(scene, draws) | set(texts) for texts, scene, _ in items]
    return SplitTruth(items, [text for texts, _, _ in items for text in texts], truth)


def retrieval_ceiling(
    split: str | Path, draws: int = DRAWS, known: SplitTruth | None = None
) -> dict[str, float]:
    """The split's texts that are true of several of its images, and the recall@1 a perfect
    model would expect: IR@1 = mean over texts of 1 / (images it is true of); TR@1 = mean over
    images of (its captions) / (the split's texts true of it). ``known``: the split's
    `split_truth`, when the caller has it already."""
    items, texts, truth = known or split_truth(split, draws)
    true_of = [sum(text in found for found in truth) for text in texts]
    true_texts = [sum(text in found for text in texts) for found in truth]
    return {
        "images": len(items),
        "texts": len(texts),
        "texts_true_of_several_images": sum(n > 1 for n in true_of) / len(texts),
        "ir_r1_ceiling": sum(1 / n for n in true_of) / len(texts),
        "tr_r1_ceiling": sum(min(1.0, len(t) / n) for (t, _, _), n in zip(items, true_texts, strict=True))
        / len(items),
    }


def top1_breakdown(
    split: str | Path, scores_file: str | Path, draws: int = DRAWS, known: SplitTruth | None = None
) -> dict[str, float]:
    """What a model's top-1 picks on ``split`` are, from its score matrix (vilt-eval's scores.pt).

    ``tr_top1_{own,true_other,false}``: per image, its best-scored text is one of its captions,
    a caption of another image that is true of it too, or a false one (fractions, summing to 1;
    ``own`` is TR@1); ``ir_top1_*`` the same per text (``own`` is IR@1). ``truth_order``: over
    images, the chance a true text outscores a false one. ``ir_top1_to_hubs``: the share of texts
    whose best image is one of the 5% of images picked most often (0.05 for a model without
    hubs). ``known``: the split's `split_truth`, when the caller has it already.
    """
    record = torch.load(scores_file, weights_only=True)  # tensors and strings only: no code runs
    items, texts, truth = known or split_truth(split, draws)
    keys = [key for _, _, key in items]
    if list(record["image_keys"]) != keys or record["scores"].shape != (len(items), len(texts)):
        raise ValueError(
            f"{scores_file}: its images or texts are not those of {split} "
            f"(scores {tuple(record['scores'].shape)}, split {len(items)} x {len(texts)})"
        )
    scores, text_image = record["scores"], record["text_image"]
    true = torch.tensor([[text in found for text in texts] for found in truth])  # (images, texts)
    images = torch.arange(len(items))

    def shares(own: torch.Tensor, picked_true: torch.Tensor, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_own": own.float().mean().item(),
            f"{prefix}_true_other": (picked_true & ~own).float().mean().item(),
            f"{prefix}_false": (~picked_true).float().mean().item(),
        }

    # The ranking `retrieval_recall` reads: a split's duplicate captions tie, ranked by index, so
    # the first picks of the same lists are what the recall counted ("own" is R@1).
    top_texts, top_images = top_ranked(scores)
    best_text, best_image = top_texts[:, 0], top_images[0]
    order = [(scores[i, true[i]][:, None] > scores[i, ~true[i]][None, :]).float().mean() for i in images]
    picks = torch.bincount(best_image, minlength=len(items)).sort(descending=True).values
    hubs = max(1, round(HUB_SHARE * len(items)))
    return {
        **shares(text_image[best_text] == images, true[images, best_text], "tr_top1"),
        **shares(best_image == text_image, true[best_image, torch.arange(len(texts))], "ir_top1"),
        "truth_order": torch.stack(order).mean().item(),
        "ir_top1_to_hubs": picks[:hubs].sum().item() / len(texts),
    }


if __name__ == "__main__":
    known = split_truth(sys.argv[1])  # the costly part, shared by both reports
    report = retrieval_ceiling(sys.argv[1], known=known)
    if len(sys.argv) > 2:
        report.update(top1_breakdown(sys.argv[1], sys.argv[2], known=known))
    print(json.dumps(report, indent=1))
