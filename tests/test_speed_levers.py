"""Speed levers keep the eager fp32 numerics (issue 13, "Levers"): each lever against the path it
replaces, on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from test_objectives import make_batch, tiny_backbone
from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.model import create_backbone
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


# ------------------------------------------------------------------ fused AdamW
def adamw_steps(task, batches, optimizer) -> None:
    for batch in batches:
        task(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_fused_adamw_matches_the_default_and_their_states_interchange(monkeypatch) -> None:
    """Fused AdamW (what CUDA gets) against PyTorch's default on the CPU, where the fused kernel
    exists too; a checkpoint of one resumes into the other (same state keys, the restoring
    optimizer keeps its own implementation)."""
    from vilt_lab.training import optim

    batches = [make_batch(seed) for seed in range(3)]

    def trained(fused: bool, resume_from: dict | None = None):
        monkeypatch.setattr(
            optim, "implementation", lambda model: {"fused": True if fused else None, "foreach": None}
        )
        task = build_task_module(tiny_backbone(), ["itm", "mlm"]).eval()
        optimizer = optim.build_optimizer(task, lr=1e-3)
        if resume_from is not None:
            task.load_state_dict(resume_from["model"])
            optimizer.load_state_dict(resume_from["optimizer"])
            assert all(g["fused"] is (True if fused else None) for g in optimizer.param_groups)
        adamw_steps(task, batches, optimizer)
        return task, optimizer

    fused_task, fused_opt = trained(True)
    plain_task, plain_opt = trained(False)
    for (name, a), b in zip(fused_task.state_dict().items(), plain_task.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    fused_state, plain_state = fused_opt.state_dict(), plain_opt.state_dict()
    assert fused_state["state"].keys() == plain_state["state"].keys()
    for index, state in fused_state["state"].items():
        assert state.keys() == plain_state["state"][index].keys()
    # A checkpoint of either resumes into both, and both continue alike.
    for state, model in ((fused_state, fused_task), (plain_state, plain_task)):
        # Deep copies: a restored optimizer may keep the given tensors and update them in place.
        resumed = {"model": model.state_dict(), "optimizer": state}
        a, b = (trained(fused, copy.deepcopy(resumed))[0] for fused in (False, True))
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=name)


# ------------------------------------------------------------------ ITM and MLM as one pass of 2B
def no_dropout_backbone():
    torch.manual_seed(0)
    return create_backbone("tiny", drop_rate=0.0, attn_drop_rate=0.0)


@pytest.mark.parametrize("names", [["itm", "mlm", "wpa"], ["wpa", "mlm"]])
def test_one_pass_of_2b_equals_the_itm_and_mlm_passes(names: list[str]) -> None:
    """In training (patch sampling at max_image_len=10 of up to 48 patches) on a CPU generator,
    losses, metrics and gradients of the fused pass equal two separate passes run ITM first
    (what the fused pass draws in that order); dropout off, as it draws other masks."""
    batch = {**make_batch(), "source": torch.tensor([0, 1, 0, 1])}
    outputs, gradients = [], []
    for fuse in (False, True):
        task = build_task_module(no_dropout_backbone(), names, max_image_len=10, fuse_passes=fuse)
        assert (task.fused_negatives is not None) == fuse
        calls = []
        task.backbone.register_forward_hook(lambda *_: calls.append(1))
        out = task(batch, generator=torch.Generator().manual_seed(3))
        out["loss"].backward()
        assert len(calls) == (1 if fuse else 2)
        outputs.append(out)
        gradients.append(grads(task))
    separate, fused = outputs
    assert separate.keys() == fused.keys()
    for key in separate:
        torch.testing.assert_close(fused[key], separate[key], atol=1e-5, rtol=1e-5, msg=key)
    assert_close_grads(gradients[1], gradients[0], atol=1e-5)


def test_fuse_passes_is_ignored_without_both_passes() -> None:
    for names in (["itm"], ["mlm"], ["itm", "mpp"]):
        assert build_task_module(tiny_backbone(), names, fuse_passes=True).fused_negatives is None
