"""Exact retrieval scoring: image tokens once per image and length-bucketed texts change nothing."""

import pytest
import torch
from torch import nn

from vilt_lab.data.normalize import normalize_images
from vilt_lab.evaluation.retrieval import gather_scores, score_images
from vilt_lab.model import ViltBackbone, get_config

VOCAB = 100
# Lengths out of order and repeated, so that sorting, uneven buckets (4, 4, 3) and the scatter
# back to the original columns are all exercised.
TEXT_LENGTHS = [5, 2, 9, 3, 12, 5, 7, 2, 15, 4, 8]


def make_inputs():
    g = torch.Generator().manual_seed(0)
    texts = [[1, *torch.randint(5, VOCAB, (n - 2,), generator=g).tolist(), 2] for n in TEXT_LENGTHS]
    sizes = [(32, 48), (64, 32), (48, 80)]
    images = [
        (idx, torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        for idx, (h, w) in zip([4, 0, 2], sizes, strict=True)
    ]
    return texts, images


def brute_force(backbone, score_fn, images, texts):
    """One full backbone pass per (image, text) pair, no padding anywhere."""
    backbone.eval()
    rows = []
    with torch.no_grad():
        for _, image in images:
            pixel_mask = torch.ones(image.shape[1:], dtype=torch.bool)
            pixels = normalize_images(image[None], pixel_mask[None])
            row = []
            for ids in texts:
                ids = torch.tensor(ids)
                out = backbone(ids[None], torch.ones_like(ids)[None], pixels, pixel_mask[None])
                row.append(score_fn(out.pooled))
            rows.append(torch.cat(row))
    return torch.stack(rows)


def test_score_images_matches_every_pair_run_alone():
    torch.manual_seed(0)
    backbone = ViltBackbone(get_config("tiny", vocab_size=VOCAB))  # dropout 0.1: eval must be on
    head = nn.Linear(backbone.config.hidden_size, 1)

    def score_fn(pooled):
        return head(pooled).squeeze(-1)

    texts, images = make_inputs()
    index, scores = score_images(backbone, score_fn, images, texts, text_batch_size=4, progress=False)
    assert backbone.training, "the caller's train mode is restored"
    assert index.tolist() == [4, 0, 2]
    assert scores.dtype == torch.float32 and scores.shape == (3, len(texts))
    torch.testing.assert_close(scores, brute_force(backbone, score_fn, images, texts), atol=1e-5, rtol=0)

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    _, low = score_images(backbone, score_fn, images, texts, text_batch_size=4, autocast=bf16, progress=False)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, scores, atol=5e-2, rtol=0)


def test_score_fn_must_return_one_score_per_pair():
    backbone = ViltBackbone(get_config("tiny", vocab_size=VOCAB))
    texts, images = make_inputs()
    with pytest.raises(ValueError, match="one score per pair"):
        score_images(backbone, lambda pooled: pooled[:, :2], images[:1], texts, progress=False)


def test_gather_scores_reassembles_uneven_shares():
    full = torch.randn(5, 7)
    mine = torch.tensor([4, 1, 2])
    other = (torch.tensor([3, 0]), full[[3, 0]])
    got = gather_scores(mine, full[mine], 5, gather=lambda share: [other, share])
    assert torch.equal(got, full)
    assert torch.equal(gather_scores(torch.tensor([1, 0]), full[[1, 0]], 2), full[:2])

    with pytest.raises(RuntimeError, match="1 missing"):
        gather_scores(mine, full[mine], 6, gather=lambda share: [other, share])
    repeated = (torch.tensor([3, 0, 1]), full[[3, 0, 1]])
    with pytest.raises(RuntimeError, match="1 scored twice"):
        gather_scores(mine, full[mine], 5, gather=lambda share: [repeated, share])
    with pytest.raises(RuntimeError, match="outside"):
        gather_scores(torch.tensor([0, 5]), full[:2], 5)
