"""Speed levers keep the eager fp32 numerics (issue 13, "Levers"): each lever against the path it
replaces, on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_objectives import make_batch, tiny_backbone
from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.tasks.module import build_task_module


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def assert_close_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


# ------------------------------------------------------------------ MLM decoder on masked tokens
def full_decoding_mlm(task, batch) -> dict[str, torch.Tensor]:
    """The MLM loss as it was computed before the lever: the head on every text position."""
    output = task.backbone(batch["mlm_input_ids"], batch["attention_mask"], *_pixels(batch))
    labels = batch["mlm_labels"]
    logits = task.objectives["mlm"].head(output.text_feats)
    per_token = F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    masked = labels != IGNORE_INDEX
    count = masked.sum().clamp(min=1)
    correct = (logits.detach().argmax(-1) == labels) & masked
    return {"loss": per_token.sum() / count, "accuracy": correct.sum() / count}


def _pixels(batch):
    from vilt_lab.data.normalize import normalize_images

    return normalize_images(batch["image"], batch["pixel_mask"]), batch["pixel_mask"]


@pytest.mark.parametrize("probability", [0.3, 0.0])
def test_mlm_on_masked_tokens_equals_full_decoding(probability: float) -> None:
    batch = make_batch(mlm_probability=probability)
    assert bool((batch["mlm_labels"] != IGNORE_INDEX).any()) == (probability > 0)
    task = build_task_module(tiny_backbone(), ["mlm"]).eval()
    out = task(batch)
    out["loss"].backward()
    masked_only = grads(task)
    task.zero_grad(set_to_none=True)
    reference = full_decoding_mlm(task, batch)
    reference["loss"].backward()
    torch.testing.assert_close(out["mlm/loss"], reference["loss"].detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["mlm/accuracy"], reference["accuracy"].float(), atol=1e-6, rtol=0)
    assert out["mlm/count"].item() == (batch["mlm_labels"] != IGNORE_INDEX).sum().item()
    assert_close_grads(masked_only, grads(task), atol=1e-6)
