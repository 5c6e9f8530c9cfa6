"""Retrieval fine-tuning's loss against single-pair scores, and its image-side negatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.batches import make_batch
from helpers.models import tiny_backbone
from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.objectives import Passes
from vilt_lab.objectives.irtr import IRTRObjective

POOL_CAPTIONS, POOL_IMAGES, POOL_LEN = 3, 6, 9  # captions per pool image, pool images, tokens


def make_pool(seed: int = 1) -> CaptionPool:
    """A pool of random captions of different lengths, [CLS] first and [SEP] last."""
    g = torch.Generator().manual_seed(seed)
    n = POOL_CAPTIONS * POOL_IMAGES
    lengths = torch.randint(3, POOL_LEN + 1, (n,), generator=g)
    token_ids = torch.zeros(n, POOL_LEN, dtype=torch.int32)
    for row, length in enumerate(lengths.tolist()):
        token_ids[row, :length] = torch.randint(5, 1000, (length,), generator=g, dtype=torch.int32)
        token_ids[row, 0], token_ids[row, length - 1] = 2, 3
    text_image = torch.arange(POOL_IMAGES).repeat_interleave(POOL_CAPTIONS)
    return CaptionPool(token_ids, lengths, text_image, [f"img{i}" for i in range(POOL_IMAGES)])


def pair_score(backbone, objective, batch, input_ids: torch.Tensor, image: int) -> torch.Tensor:
    """The rank score of one unpadded text with batch image ``image``, in a pass of its own."""
    passes = Passes()
    one = {
        "image": batch["image"][image : image + 1],
        "pixel_mask": batch["pixel_mask"][image : image + 1],
        "attention_mask": torch.ones(1, len(input_ids), dtype=torch.long),
    }
    return objective.score(passes.run(backbone, one, input_ids[None]).pooled)[0]


# [0, 0, 4, 5]: the first two items claim one pool image (a resampled stream can repeat one), so
# each is masked out of the other's image-side negatives.
@pytest.mark.parametrize(
    "image_negatives, pool_images", [(0, [0, 2, 4, 5]), (2, [0, 2, 4, 5]), (2, [0, 0, 4, 5])]
)
def test_the_loss_is_cross_entropy_over_single_pair_scores(image_negatives: int, pool_images) -> None:
    backbone, pool = tiny_backbone(), make_pool()
    objective = IRTRObjective(backbone.config.hidden_size, pool, negatives=3, image_negatives=image_negatives)
    backbone.eval()
    objective.eval()
    batch = make_batch()
    batch["pool_image"] = torch.tensor(pool_images)
    losses = objective(batch, backbone, Passes(generator=torch.Generator().manual_seed(11)))

    # The same draws, in the objective's order, from a generator in the same state.
    generator = torch.Generator().manual_seed(11)
    drawn = pool.draw_negatives(batch["pool_image"], 3, generator)
    others, same = objective.draw_other_images(batch["pool_image"], generator)
    assert bool(same.any()) == (pool_images[0] == pool_images[1])  # the seed draws the duplicate
    own_texts = [
        ids[mask.bool()] for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    pool_texts = [torch.tensor(t) for t in pool.texts()]
    text_loss = image_loss = 0.0
    for i, own in enumerate(own_texts):
        texts = [own, *(pool_texts[j] for j in drawn[i].tolist())]
        text_scores = torch.stack([pair_score(backbone, objective, batch, t, i) for t in texts])
        text_loss += F.cross_entropy(text_scores[None], torch.tensor([0])) / len(own_texts)
        images = [i, *(j for j, dup in zip(others[i].tolist(), same[i].tolist(), strict=True) if not dup)]
        image_scores = torch.stack([pair_score(backbone, objective, batch, own, j) for j in images])
        image_loss += F.cross_entropy(image_scores[None], torch.tensor([0])) / len(own_texts)
    expected = (text_loss + image_loss) / 2 if image_negatives else text_loss
    torch.testing.assert_close(losses["loss"], expected, atol=1e-5, rtol=1e-5)
    assert ("image_accuracy" in losses) == bool(image_negatives)
    losses["loss"].backward()
    assert objective.head.fc.weight.grad is not None


def test_other_images_are_other_positions_without_repeats_and_follow_the_generator() -> None:
    objective = IRTRObjective(64, make_pool(), image_negatives=5)
    images = torch.arange(8) + 10
    picks, same = objective.draw_other_images(images, torch.Generator().manual_seed(3))
    assert picks.shape == same.shape == (8, 5) and not same.any()
    for row, chosen in enumerate(picks.tolist()):
        assert row not in chosen and len(set(chosen)) == 5
    again, _ = objective.draw_other_images(images, torch.Generator().manual_seed(3))
    other, _ = objective.draw_other_images(images, torch.Generator().manual_seed(4))
    assert torch.equal(picks, again) and not torch.equal(picks, other)
    # Every other position is drawn about equally often (uniform without replacement).
    counts = torch.zeros(8)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        counts += torch.bincount(objective.draw_other_images(images, generator)[0].flatten(), minlength=8)
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


def test_a_duplicate_image_is_flagged_and_a_short_batch_draws_fewer() -> None:
    objective = IRTRObjective(64, make_pool(), image_negatives=5)
    images = torch.tensor([7, 7, 3])  # a resampled stream can repeat an image within a batch
    picks, same = objective.draw_other_images(images, torch.Generator().manual_seed(0))
    assert picks.shape == (3, 2)  # two others at most
    assert torch.equal(same, images[picks] == images[:, None]) and same[0].any() and same[1].any()
    assert not same[2].any()
    alone, flags = objective.draw_other_images(torch.tensor([1]), None)
    assert alone.shape == flags.shape == (1, 0)


def test_negative_image_negatives_are_refused() -> None:
    with pytest.raises(ValueError, match=r"task\.image_negatives=-1"):
        IRTRObjective(64, make_pool(), image_negatives=-1)
