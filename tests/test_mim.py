"""Masked image modelling (`objective=[...,mim]`): targets, mask, loss, gradients, composition."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

from helpers.batches import IMAGE_SIZES, make_batch
from helpers.configs import TASK_OVERRIDES, fast_config
from helpers.models import tiny_backbone
from vilt_lab.build.data import build_streams, build_tokenizer
from vilt_lab.build.task import build_task
from vilt_lab.build.trainer import build_trainer
from vilt_lab.config.validation import ConfigError, validate_train_config
from vilt_lab.objectives import MIMObjective, Passes, patch_mean_rgb
from vilt_lab.objectives import mpp as mpp_module
from vilt_lab.tasks.module import build_task_module
from vilt_lab.training.tracking import reset_accelerate_state
from vilt_lab.weights.with_heads import ViltWithHeads

PATCH = 16
TINY_WIDTH = 64  # the tiny preset's hidden size
# A decoder small enough for the tiny backbone: one block of two 32-channel heads.
TINY_DECODER = {"decoder_depth": 1, "decoder_width": 64}


def tiny_mim(target: str = "normalized", ratio: float = 0.6) -> MIMObjective:
    return MIMObjective(TINY_WIDTH, PATCH, ratio=ratio, target=target, **TINY_DECODER)


def valid_patches(h: int, w: int) -> int:
    return (h // PATCH) * (w // PATCH)


# ----------------------------------------------------------------------------- targets


def mae_patchify(imgs: np.ndarray, p: int) -> np.ndarray:
    """MAE's `patchify` (models_mae.py), in numpy: (N, 3, H, W) -> (N, L, p * p * 3)."""
    h, w = imgs.shape[2] // p, imgs.shape[3] // p
    x = imgs.reshape(imgs.shape[0], 3, h, p, w, p)
    x = np.einsum("nchpwq->nhwpqc", x)
    return x.reshape(imgs.shape[0], h * w, p * p * 3)


def whole_image_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two unpadded 48 x 64 uint8 images (12 patches each)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (2, 3, 48, 64), generator=g, dtype=torch.uint8)
    return {"image": image, "pixel_mask": torch.ones(2, 48, 64, dtype=torch.long)}


@pytest.mark.parametrize("target", ["normalized", "raw"])
def test_pixel_targets_are_maes(target: str) -> None:
    """raw: the pixels the model sees ((x / 255 - 0.5) / 0.5); normalized: MAE's norm_pix_loss
    target on them, mean and unbiased variance per patch, eps 1e-6 (models_mae.py)."""
    batch = whole_image_batch()
    imgs = (batch["image"].numpy().astype(np.float64) / 255 - 0.5) / 0.5
    expected = mae_patchify(imgs, PATCH)
    if target == "normalized":
        mean = expected.mean(axis=-1, keepdims=True)
        var = expected.var(axis=-1, ddof=1, keepdims=True)
        expected = (expected - mean) / (var + 1e-6) ** 0.5
    index = torch.arange(12).expand(2, -1)
    got = tiny_mim(target).pixel_targets(batch, Passes(), index)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The pass's positions pick their own patches: reversed positions, reversed targets.
    reversed_targets = tiny_mim(target).pixel_targets(batch, Passes(), index.flip(1))
    assert torch.equal(reversed_targets, got.flip(1))


def test_mpp_target_is_the_mean_colour_bins(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def spy(logits, labels, **kwargs):
        seen.update(logits=logits, labels=labels)
        return F.cross_entropy(logits, labels, **kwargs)

    monkeypatch.setattr(mpp_module, "F", SimpleNamespace(cross_entropy=spy))
    backbone, batch = tiny_backbone(), make_batch()
    mim = tiny_mim("mpp", ratio=0.5)
    passes = Passes(max_image_len=20, generator=torch.Generator().manual_seed(0))
    out = mim(batch, backbone, passes)
    output, masked_patches = passes.get("mim", lambda: None)
    B, L = output.patches.index.shape
    assert seen["logits"].shape == (B * L * 3, 256)
    labels = seen["labels"].view(B, L, 3)
    selected = masked_patches.flatten(1).gather(1, output.patches.index) & output.patches.valid
    targets = patch_mean_rgb(batch["image"], PATCH)
    expected = targets.gather(1, output.patches.index.unsqueeze(-1).expand(-1, -1, 3))
    assert torch.equal(labels[selected], expected[selected])
    assert (labels[~selected] == -100).all()
    assert out["count"] == 3 * selected.sum() and torch.isfinite(out["loss"])


# ----------------------------------------------------------------------------- mask


@pytest.mark.parametrize("ratio", [0.6, 0.15, 0.5, 0.75, 0.01])
def test_the_mask_takes_exactly_the_ratio_of_valid_patches(ratio: float) -> None:
    batch = make_batch()
    grid = (batch["image"].shape[2] // PATCH, batch["image"].shape[3] // PATCH)
    valid = batch["pixel_mask"][:, ::PATCH, ::PATCH].bool()
    mim = tiny_mim(ratio=ratio)
    for seed in range(5):
        masked = mim.sample_mask(
            batch["pixel_mask"], grid, Passes(generator=torch.Generator().manual_seed(seed))
        )
        assert not (masked & ~valid).any()  # never padding
        for i, (h, w) in enumerate(IMAGE_SIZES):
            n = valid_patches(h, w)
            assert int(masked[i].sum()) == max(1, int(n * ratio + 0.5)), (ratio, n)
    draws = {
        tuple(
            mim.sample_mask(batch["pixel_mask"], grid, Passes(generator=torch.Generator().manual_seed(s)))
            .flatten()
            .tolist()
        )
        for s in (0, 0, 1, 2)
    }
    assert len(draws) == 3  # the step's generator decides: same seed, same mask


# ----------------------------------------------------------------------------- loss


@pytest.mark.parametrize("masked_position", [False, True])
def test_the_loss_reads_masked_patches_only(monkeypatch: pytest.MonkeyPatch, masked_position: bool) -> None:
    """Changing the target of unmasked positions (and fill) leaves the loss as it was; changing
    a masked one's changes it."""
    backbone, batch = tiny_backbone().eval(), make_batch()  # eval: no dropout between the two
    mim = tiny_mim()
    reference = mim(batch, backbone, Passes(max_image_len=20, generator=torch.Generator().manual_seed(0)))
    original = MIMObjective.pixel_targets
    chosen = {}

    def changed_targets(self, batch, passes, index):
        targets = original(self, batch, passes, index)
        output, masked_patches = passes.get("mim", lambda: None)
        selected = masked_patches.flatten(1).gather(1, index) & output.patches.valid
        chosen["selected"] = selected
        where = selected if masked_position else ~selected
        return torch.where(where.unsqueeze(-1), targets + 5.0, targets)

    monkeypatch.setattr(MIMObjective, "pixel_targets", changed_targets)
    out = mim(batch, backbone, Passes(max_image_len=20, generator=torch.Generator().manual_seed(0)))
    assert chosen["selected"].any() and (~chosen["selected"]).any()
    assert torch.equal(out["count"], reference["count"])
    assert torch.equal(out["loss"], reference["loss"]) != masked_position


@pytest.mark.parametrize("target", ["normalized", "raw", "mpp"])
def test_nothing_masked_gives_zero_loss_and_zero_gradients(
    monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setattr(
        MIMObjective,
        "sample_mask",
        lambda self, pixel_mask, grid, passes: torch.zeros(pixel_mask.shape[0], *grid, dtype=torch.bool),
    )
    task = build_task_module(
        tiny_backbone(), ["mim"], objective_kwargs={"mim": {"target": target, **TINY_DECODER}}
    )
    out = task(make_batch(), generator=torch.Generator().manual_seed(0))
    assert out["loss"].item() == 0.0 and out["mim/count"].item() == 0
    out["loss"].backward()
    mim = task.objectives["mim"]
    assert all(p.grad is not None and (p.grad == 0).all() for p in [*mim.head.parameters(), mim.mask_token])


@pytest.mark.parametrize("target", ["normalized", "raw", "mpp"])
@pytest.mark.parametrize("names", [["mim"], ["itm", "mlm", "mim"], ["itm", "mlm", "wpa", "mpp", "mim"]])
def test_every_trainable_parameter_gets_a_finite_gradient(names: list[str], target: str) -> None:
    task = build_task_module(
        tiny_backbone(), names, max_image_len=20, objective_kwargs={"mim": {"target": target, **TINY_DECODER}}
    )
    out = task(make_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["mim/loss"] > 0
    out["loss"].backward()
    trainable = [(n, p) for n, p in task.named_parameters() if p.requires_grad]
    assert any(n == "objectives.mim.mask_token" for n, _ in trainable)
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    still = [n for n, p in trainable if n.startswith("objectives.mim.") and not p.grad.abs().sum() > 0]
    assert not still  # the mask token and every decoder weight take part


def test_the_decoder_is_stored_and_rebuilt_from_its_head_spec() -> None:
    task = build_task_module(
        tiny_backbone(), ["itm", "mim"], objective_kwargs={"mim": {"target": "raw", **TINY_DECODER}}
    )
    assert task.head_specs()["mim"] == {"width": 64, "depth": 1, "outputs": PATCH * PATCH * 3}
    checkpoint = ViltWithHeads(task.backbone, task.heads(), task.head_specs()).to_checkpoint()
    model = ViltWithHeads.from_checkpoint(checkpoint).eval()
    batch = make_batch()
    pixels = (batch["image"].float() / 255 - 0.5) / 0.5 * batch["pixel_mask"].unsqueeze(1)
    out = model("mim", batch["input_ids"], batch["attention_mask"], pixels, batch["pixel_mask"])
    assert out.shape == (4, 36, PATCH * PATCH * 3)  # every patch: the most of an image is 6 x 6
    # Keys the checkpoint holds: the decoder's, under heads.mim (the mask token stays in training).
    assert any(k.startswith("heads.mim.blocks.0.attn.qkv") for k in checkpoint.state)


# ----------------------------------------------------------------------------- composition


@pytest.mark.parametrize("objectives", ["[itm,mlm,mim]", "[itm,mlm,wpa,mim]"])
def test_a_step_runs_through_the_builders(objectives: str, shapes_world, tmp_path) -> None:
    cfg = fast_config(
        shapes_world,
        tmp_path / "runs",
        f"objective={objectives}",
        "objective.mim.decoder_width=64",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=4",
        "evaluate=false",
        "schedule.max_steps=2",
    )
    settings = validate_train_config(cfg, world_size=1)
    assert settings.objective.mim.ratio == 0.6 and settings.objective.mim.target == "normalized"
    accelerator = Accelerator(cpu=True)
    try:
        set_seed(settings.seed)
        tokenizer = build_tokenizer(settings)
        task = build_task(settings, tokenizer)
        assert sorted(task.objectives) == sorted(objectives.strip("[]").split(","))
        stream, evaluators = build_streams(settings, tokenizer, accelerator, task)
        trainer = build_trainer(settings, accelerator, task, stream, evaluators, run_dir=None)
        trainer.model.train()
        result = trainer.train_step(iter(stream(0)))
    finally:
        reset_accelerate_state()
    outputs = result.outputs[-1]
    assert torch.isfinite(outputs["loss"]) and outputs["mim/count"] > 0


@pytest.mark.parametrize("task", sorted(TASK_OVERRIDES))
def test_mim_selected_validates_with_every_task(task: str, shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path / "runs", "objective=[itm,mlm,wpa,mim]", *TASK_OVERRIDES[task])
    validate_train_config(cfg, world_size=1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "objective.mim.target=foo",
            r"objective\.mim\.target='foo': expected one of 'normalized', 'raw', 'mpp'",
        ),
        ("objective.mim.ratio=1.5", r"objective\.mim\.ratio=1\.5: expected a number > 0 and < 1"),
        (
            "objective.mim.decoder_width=100",
            r"objective\.mim\.decoder_width=100: expected .*a multiple of 32",
        ),
    ],
)
def test_a_bad_mim_setting_is_refused(override: str, message: str, shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path / "runs", "objective=[itm,mlm,mim]", override)
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg, world_size=1)
