"""Attention without a mask where nothing is padded: SDPA can only choose flash attention when it
gets no mask. `encode(unpadded=True)` drops the mask and is exact against the masked path, values
and gradients; callers that know it on the host (the latency benchmark) pass it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers.models import tiny_backbone
from vilt_lab.bench.latency import time_visual_embedding_and_transformer
from vilt_lab.evaluation.retrieval import score_images
from vilt_lab.measure.dummy_inputs import dummy_inputs


@pytest.fixture
def sdpa_masks(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor | None]:
    """The attn_mask of every scaled_dot_product_attention call, in order."""
    seen: list[torch.Tensor | None] = []
    sdpa = F.scaled_dot_product_attention

    def recording(*args, attn_mask=None, **kwargs):
        seen.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


def encoded(backbone, inputs, unpadded: bool, rows: int | None):
    """Features and the gradients of every parameter and of the text tokens."""
    backbone.zero_grad(set_to_none=True)
    text = backbone.embed_text(inputs.input_ids).detach().requires_grad_()
    image, image_mask, _ = backbone.image_tokens(inputs.pixel_values, inputs.pixel_mask)
    features, mask = backbone.encode(
        text, inputs.attention_mask, image, image_mask, rows=rows, unpadded=unpadded
    )
    (features * torch.linspace(-1, 1, features.shape[-1])).sum().backward()
    grads = {name: p.grad.clone() for name, p in backbone.named_parameters() if p.grad is not None}
    return features.detach(), mask, grads, text.grad


@pytest.mark.parametrize("rows", [None, 1])
def test_no_mask_when_nothing_is_padded_gives_the_masked_values_and_gradients(
    sdpa_masks: list[torch.Tensor | None], rows: int | None
) -> None:
    backbone = tiny_backbone().eval()  # no dropout: both paths see the same function
    inputs = dummy_inputs(backbone.config, (64, 96), text_len=12, batch_size=3)
    masked = encoded(backbone, inputs, unpadded=False, rows=rows)
    assert sdpa_masks and all(m is not None for m in sdpa_masks)
    sdpa_masks.clear()
    unmasked = encoded(backbone, inputs, unpadded=True, rows=rows)
    assert sdpa_masks and all(m is None for m in sdpa_masks)
    torch.testing.assert_close(unmasked[0], masked[0], atol=1e-6, rtol=1e-6)
    assert torch.equal(unmasked[1], masked[1]) and unmasked[1].all()  # the returned mask stays
    assert unmasked[2].keys() == masked[2].keys()
    for name, grad in masked[2].items():
        torch.testing.assert_close(unmasked[2][name], grad, atol=1e-6, rtol=1e-6, msg=name)
    torch.testing.assert_close(unmasked[3], masked[3], atol=1e-6, rtol=1e-6)


def test_unpadded_on_a_padded_batch_is_refused() -> None:
    backbone = tiny_backbone().eval()
    inputs = dummy_inputs(backbone.config, (64, 96), text_len=12, batch_size=2)
    inputs.attention_mask[1, 8:] = 0  # a shorter second caption
    image, image_mask, _ = backbone.image_tokens(inputs.pixel_values, inputs.pixel_mask)
    with pytest.raises(ValueError, match=r"encode\(unpadded=True\) on a batch with padding"):
        backbone.encode(
            backbone.embed_text(inputs.input_ids), inputs.attention_mask, image, image_mask, unpadded=True
        )


@pytest.mark.parametrize("padded_text", [False, True])
def test_the_latency_benchmark_masks_only_what_is_padded(
    sdpa_masks: list[torch.Tensor | None], padded_text: bool
) -> None:
    backbone = tiny_backbone().eval()
    inputs = dummy_inputs(backbone.config, (64, 96), text_len=12)
    if padded_text:
        inputs.attention_mask[0, 8:] = 0
    text = backbone.embed_text(inputs.input_ids)
    with torch.no_grad():
        time_visual_embedding_and_transformer(
            backbone, text, inputs.attention_mask, inputs.pixel_values, inputs.pixel_mask, warmup=0, repeats=1
        )
    assert len(sdpa_masks) == len(backbone.blocks)
    assert all((m is not None) == padded_text for m in sdpa_masks)


def test_retrieval_masks_only_the_text_batches_of_mixed_lengths(
    sdpa_masks: list[torch.Tensor | None],
) -> None:
    backbone = tiny_backbone()
    head = torch.nn.Linear(backbone.config.hidden_size, 1)
    texts = [[1, 7, 2], [1, 8, 9, 2], [1, 9, 2], [1, 7, 8, 9, 2], [1, 8, 2]]  # sorted: 3 3 3 | 4 5
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        score_images(
            backbone,
            lambda pooled: head(pooled)[:, 0],
            [(0, image)],
            texts,
            text_batch_size=3,
            progress=False,
        )
    blocks = len(backbone.blocks)
    assert len(sdpa_masks) == 2 * blocks
    assert all(m is None for m in sdpa_masks[:blocks])  # three texts of 3 tokens
    assert all(m is not None for m in sdpa_masks[blocks:])  # 4 and 5 tokens
