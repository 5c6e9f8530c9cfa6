"""How well can anything retrieve on a shapes-world split? Captions true of several images.

A shapes caption is true of every scene it describes, and "there is a red circle" describes many.
Exact retrieval counts only the caption's own image as right, so even a model that knows which
captions are true of which images is capped: it must guess among the images a text is true of
(IR@1), and among the texts true of an image (TR@1). This measures those caps on a split by
drawing every scene's captions many times (the templates' random choices), which finds its true
captions, and assuming a perfect model ranks true pairs first with ties broken at random.

    python -m vilt_lab.data.sources.shapes_ceiling data/shapes/retrieval/test
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from vilt_lab.data.shards import iter_samples
from vilt_lab.data.sources.shapes import Scene, captions

DRAWS = 300  # caption draws per scene: enough to find every caption its templates can produce


def true_captions(scene: Scene, draws: int = DRAWS, seed: int = 0) -> set[str]:
    """Every caption the templates produce for ``scene`` over ``draws`` random draws."""
    found: set[str] = set()
    for draw in range(draws):
        found.update(captions(scene, random.Random(f"ceiling/{seed}/{draw}"), k=len(found) + 8))
    return found


def retrieval_ceiling(split: str | Path, draws: int = DRAWS) -> dict[str, float]:
    """The split's texts that are true of several of its images, and the recall@1 a perfect
    model would expect: IR@1 = mean over texts of 1 / (images it is true of); TR@1 = mean over
    images of (its captions) / (the split's texts true of it)."""
    items = [(meta["captions"], Scene.from_json(meta["scene"])) for _, _, meta in iter_samples(split)]
    # An image's own captions are true of it whatever the draws found.
    truth = [true_captions(scene, draws) | set(texts) for texts, scene in items]
    texts = [text for texts, _ in items for text in texts]
    true_of = [sum(text in found for found in truth) for text in texts]
    true_texts = [sum(text in found for text in texts) for found in truth]
    return {
        "images": len(items),
        "texts": len(texts),
        "texts_true_of_several_images": sum(n > 1 for n in true_of) / len(texts),
        "ir_r1_ceiling": sum(1 / n for n in true_of) / len(texts),
        "tr_r1_ceiling": sum(min(1.0, len(t) / n) for (t, _), n in zip(items, true_texts, strict=True))
        / len(items),
    }


if __name__ == "__main__":
    print(json.dumps(retrieval_ceiling(sys.argv[1]), indent=1))
