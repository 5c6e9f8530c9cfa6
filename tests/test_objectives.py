"""Pre-training objectives and the task module on a tiny backbone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers.batches import IMAGE_SIZES, TEXT_LENGTHS, make_batch
from helpers.models import tiny_backbone
from vilt_lab.objectives import (
    DEFAULT_WEIGHTS,
    OBJECTIVES,
    MPPObjective,
    Objective,
    Passes,
    build_objective,
    itm_pass,
    patch_mean_rgb,
    sample_negatives,
)
from vilt_lab.objectives import mpp as mpp_module
from vilt_lab.objectives import wpa as wpa_module
from vilt_lab.tasks.module import TaskModule, build_task_module

PATCH = 16


# ITM negatives


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_itm_negatives_are_a_derangement(batch_size: int) -> None:
    for seed in range(50):
        image_index, labels = sample_negatives(batch_size, torch.Generator().manual_seed(seed))
        negatives = labels == 0
        own = torch.arange(batch_size)
        assert int(negatives.sum()) == batch_size // 2
        assert set(labels.tolist()) <= {0, 1}
        assert (image_index[~negatives] == own[~negatives]).all()
        assert (image_index[negatives] != own[negatives]).all()
        if batch_size // 2 >= 2:  # negatives swap among themselves: every image used once
            assert sorted(image_index[negatives].tolist()) == own[negatives].tolist()


def test_itm_negatives_are_deterministic_and_random() -> None:
    draws = [sample_negatives(8, torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1], strict=True))
    distinct = {tuple(sample_negatives(8, torch.Generator().manual_seed(s))[0].tolist()) for s in range(20)}
    assert len(distinct) > 10


# Gradients: DDP without find_unused_parameters needs every trainable parameter in the loss.


@pytest.mark.parametrize(
    "names", [["itm"], ["mlm"], ["itm", "mlm"], ["itm", "mlm", "wpa"], ["itm", "mlm", "mpp"]]
)
def test_every_trainable_parameter_gets_a_finite_gradient(names: list[str]) -> None:
    task = build_task_module(tiny_backbone(), names, max_image_len=20)
    out = task(make_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    trainable = [(n, p) for n, p in task.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # Only ITM reads the pooler; without it the pooler is frozen rather than left without a gradient.
    frozen = {n for n, p in task.named_parameters() if not p.requires_grad}
    assert frozen == (
        set() if "itm" in names else {"backbone.pooler.dense.weight", "backbone.pooler.dense.bias"}
    )


def test_mlm_without_masked_tokens_is_zero_not_nan() -> None:
    batch = make_batch(mlm_probability=0.0)
    assert (batch["mlm_labels"] == -100).all()
    task = build_task_module(tiny_backbone(), ["mlm"])
    out = task(batch)
    assert out["loss"].item() == 0.0 and out["mlm/accuracy"].item() == 0.0
    assert out["mlm/count"].item() == 0
    out["loss"].backward()
    head = task.objectives["mlm"].head
    assert all(p.grad is not None and (p.grad == 0).all() for p in head.parameters())


# Passes are shared and reproducible


def count_passes(task: TaskModule, batch: dict[str, torch.Tensor]) -> int:
    calls = []
    handle = task.backbone.register_forward_hook(lambda *_: calls.append(1))
    task(batch, generator=torch.Generator().manual_seed(0))
    handle.remove()
    return len(calls)


@pytest.mark.parametrize(
    ("names", "passes"),
    [(["itm", "wpa"], 1), (["wpa"], 1), (["itm", "mlm", "wpa"], 2), (["itm", "mlm", "mpp"], 3)],
)
def test_itm_pass_is_shared(names: list[str], passes: int) -> None:
    assert count_passes(build_task_module(tiny_backbone(), names), make_batch()) == passes


def test_task_is_deterministic_given_a_generator() -> None:
    task = build_task_module(tiny_backbone(), ["itm", "mlm", "wpa", "mpp"], max_image_len=10).eval()
    batch = make_batch()
    first, second = (task(batch, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_max_image_len_applies_in_training_only() -> None:
    task = build_task_module(tiny_backbone(), ["itm"], max_image_len=10)
    lengths = []
    task.backbone.register_forward_hook(lambda _m, _i, out: lengths.append(out.patches.index.shape[1]))
    task(make_batch())
    task.eval()
    task(make_batch())
    most_patches = max((h // PATCH) * (w // PATCH) for h, w in IMAGE_SIZES)
    assert lengths == [10, most_patches]


# Task: weights, names, registry


def test_task_loss_is_the_weighted_sum() -> None:
    weights = {"itm": 0.7, "mlm": 1.3, "wpa": 0.1}
    task = build_task_module(tiny_backbone(), list(weights), weights=weights)
    out = task(make_batch(), generator=torch.Generator().manual_seed(0))
    expected = sum(w * out[f"{name}/loss"] for name, w in weights.items())
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert {"itm/loss", "itm/accuracy", "mlm/loss", "mlm/accuracy", "wpa/loss"} <= out.keys()
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    # MLM says how many tokens its metrics average over, so evaluation can weight them per token.
    assert out["mlm/count"].item() == (make_batch()["mlm_labels"] != -100).sum().item() > 0


def test_default_weights_and_registry() -> None:
    assert DEFAULT_WEIGHTS == {"itm": 1.0, "mlm": 1.0, "wpa": 0.1, "mpp": 1.0, "mim": 1.0}
    assert set(DEFAULT_WEIGHTS) <= set(OBJECTIVES)  # every pre-training objective has a default weight
    task = build_task_module(tiny_backbone(), ["itm", "wpa"])
    assert task.weights == {"itm": 1.0, "wpa": 0.1}
    with pytest.raises(KeyError, match=r"'itc'.*'irtr', 'itm', 'mim', 'mlm', 'mpp', 'nlvr2', 'vqa', 'wpa'"):
        build_objective("itc", task.backbone.config)
    with pytest.raises(KeyError, match="mlm"):
        TaskModule(task.backbone, {"itm": task.objectives["itm"]}, weights={"mlm": 1.0})
    assert build_objective("wpa", task.backbone.config, iterations=7).iterations == 7


def test_objectives_follow_the_contract() -> None:
    """Every registered objective is an `Objective`; the task module reads its declarations: heads
    where an objective has one (WPA has none), and no predictions from pre-training's objectives."""
    assert all(issubclass(objective, Objective) for objective in OBJECTIVES.values())
    task = build_task_module(tiny_backbone(), ["itm", "mlm", "wpa", "mpp"]).eval()
    assert task.heads() == {name: task.objectives[name].head for name in ("itm", "mlm", "mpp")}
    assert task.head_specs() == {"itm": {}, "mlm": {}, "mpp": {"bins": 256}}
    assert task.predict(make_batch()) == {}


# WPA


def test_wpa_aligns_words_and_patches_only(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    real_ipot = wpa_module.ipot_distance

    def spy(cost, text_mask, image_mask, **kwargs):
        seen.update(cost=cost, text_mask=text_mask, image_mask=image_mask, kwargs=kwargs)
        return real_ipot(cost, text_mask, image_mask, **kwargs)

    monkeypatch.setattr(wpa_module, "ipot_distance", spy)
    backbone, batch = tiny_backbone(), make_batch()
    passes = Passes()
    # Autocast would run the cost matmul in bfloat16; the cost and IPOT must stay in float32.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = build_objective("wpa", backbone.config)(batch, backbone, passes)
    assert torch.isfinite(out["loss"])

    B, T = batch["input_ids"].shape
    expected_text = torch.zeros(B, T, dtype=torch.bool)
    for i, n in enumerate(TEXT_LENGTHS):
        expected_text[i, 1 : n - 1] = True  # no [CLS], no [SEP], no padding
    assert torch.equal(seen["text_mask"], expected_text)

    # Patches of the image each pair actually saw (the ITM pass mixes images), no image [CLS].
    image_index = itm_pass(batch, backbone, passes).image_index
    patch_counts = torch.tensor([(h // PATCH) * (w // PATCH) for h, w in IMAGE_SIZES])[image_index]
    assert torch.equal(seen["image_mask"].sum(1), patch_counts)
    assert seen["cost"].shape == (B, T, int(patch_counts.max()))
    assert seen["cost"].dtype == torch.float32
    assert seen["kwargs"] == {"beta": 0.5, "iterations": 50, "k": 1, "iteration": wpa_module.ipot_iteration}


def test_wpa_loss_is_positives_minus_negatives(monkeypatch: pytest.MonkeyPatch) -> None:
    distances = torch.tensor([1.0, 2.0, 4.0, 8.0])
    monkeypatch.setattr(wpa_module, "wpa_distance", lambda *args: distances)
    backbone, batch = tiny_backbone(), make_batch()
    passes = Passes(generator=torch.Generator().manual_seed(0))
    out = build_objective("wpa", backbone.config)(batch, backbone, passes)
    labels = itm_pass(batch, backbone, passes).labels
    expected = (distances[labels == 1].sum() - distances[labels == 0].sum()) / len(labels)
    torch.testing.assert_close(out["loss"], expected)


# MPP


def test_patch_mean_rgb_targets() -> None:
    g = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (2, 3, 3), generator=g, dtype=torch.uint8)  # (Hp, Wp, RGB)
    image = colours.permute(2, 0, 1).repeat_interleave(PATCH, 1).repeat_interleave(PATCH, 2)[None].clone()
    # Patch (0, 1): red alternates 10 and 11 (mean 10.5 -> bin 10); green all 255; blue mostly 0.
    image[0, 0, :PATCH, PATCH : 2 * PATCH] = 10
    image[0, 0, :PATCH, PATCH : 2 * PATCH : 2] = 11
    image[0, 1, :PATCH, PATCH : 2 * PATCH] = 255
    image[0, 2, :PATCH, PATCH : 2 * PATCH] = 0
    image[0, 2, 0, PATCH] = 255  # 255 / 256 pixels -> mean 0.996 -> bin 0
    expected = colours.reshape(6, 3).long()
    expected[1] = torch.tensor([10, 255, 0])
    # Extra pixels beyond the last whole patch are ignored, as the patch conv does.
    padded = torch.cat([image, torch.full((1, 3, 5, 3 * PATCH), 200, dtype=torch.uint8)], dim=2)
    for img in (image, padded):
        assert torch.equal(patch_mean_rgb(img, PATCH), expected[None])


def test_mpp_targets_and_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def spy(logits, labels, **kwargs):
        seen.update(logits=logits, labels=labels)
        return F.cross_entropy(logits, labels, **kwargs)

    monkeypatch.setattr(mpp_module, "F", SimpleNamespace(cross_entropy=spy))
    backbone, batch = tiny_backbone(), make_batch()
    mpp = MPPObjective(backbone.config.hidden_size, probability=1.0)  # mask every valid patch
    passes = Passes(max_image_len=20, generator=torch.Generator().manual_seed(0))
    out = mpp(batch, backbone, passes)
    assert torch.isfinite(out["loss"])

    output, masked_patches = passes.get("mpp", lambda: None)
    grid_valid = batch["pixel_mask"][:, ::PATCH, ::PATCH].bool()
    assert torch.equal(masked_patches, grid_valid)  # all valid patches, never padding

    B, L = output.patches.index.shape
    labels = seen["labels"].view(B, L, 3)
    assert seen["logits"].shape == (B * L * 3, 256)
    targets = patch_mean_rgb(batch["image"], PATCH)
    kept = output.patches.valid
    expected = targets.gather(1, output.patches.index.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(labels[kept], expected[kept])
    assert (labels[~kept] == -100).all()


def test_mpp_masks_about_fifteen_percent_of_valid_patches() -> None:
    backbone = tiny_backbone()
    mpp = build_objective("mpp", backbone.config)
    pixel_mask = make_batch()["pixel_mask"].repeat(50, 1, 1)
    valid = pixel_mask[:, ::PATCH, ::PATCH].bool()
    masked = mpp.sample_mask(pixel_mask, valid.shape[1:], Passes(generator=torch.Generator().manual_seed(0)))
    assert not (masked & ~valid).any()
    assert abs(masked.sum() / valid.sum() - 0.15) < 0.02
