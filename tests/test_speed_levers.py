"""Speed levers keep the eager fp32 numerics: each lever against the path it
replaces, on the CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from helpers.batches import make_batch
from helpers.configs import fast_config, train_settings
from helpers.models import tiny_backbone
from vilt_lab.config.schema import OptimSchema
from vilt_lab.data.collate import TEXT_BUCKET, ItemCollator
from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.model import create_backbone
from vilt_lab.tasks.module import build_task_module
from vilt_lab.train import run


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

    batches = [make_batch(seed) for seed in range(2)]

    def trained(fused: bool, resume_from: dict | None = None):
        monkeypatch.setattr(
            optim, "implementation", lambda model: {"fused": True if fused else None, "foreach": None}
        )
        task = build_task_module(tiny_backbone(), ["mlm"]).eval()
        optimizer = optim.build_optimizer(
            task, OptimSchema(lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-8)
        )
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
    # A fused run's checkpoint resumes into both, and both continue alike (deep copies: a restored
    # optimizer may keep the given tensors and update them in place).
    resumed = {"model": fused_task.state_dict(), "optimizer": fused_state}
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
    batch = {**make_batch(), "source": [0, 1, 0, 1]}
    outputs, gradients = [], []
    for fuse in (False, True):
        task = build_task_module(no_dropout_backbone(), names, max_image_len=10, fuse_passes=fuse)
        assert (task.fused_negatives is not None) == fuse
        calls: list[int] = []
        task.backbone.register_forward_hook(lambda *_, calls=calls: calls.append(1))
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


# ------------------------------------------------------------------ last block on the rows read
def test_the_last_block_on_the_rows_read_equals_the_full_pass() -> None:
    """rows=1 (pooled heads) and rows=T (MLM) give the full pass's values and gradients."""
    batch = make_batch()
    backbone = no_dropout_backbone()
    inputs = (batch["input_ids"], batch["attention_mask"], *_pixels(batch))
    T = batch["input_ids"].shape[1]
    full = backbone(*inputs)
    full.pooled.square().sum().backward()
    full_grads = grads(backbone)
    backbone.zero_grad(set_to_none=True)
    pooled_only = backbone(*inputs, rows=1)
    assert pooled_only.text_feats is None and pooled_only.image_feats is None
    torch.testing.assert_close(pooled_only.pooled, full.pooled, atol=1e-6, rtol=0)
    pooled_only.pooled.square().sum().backward()
    assert_close_grads(grads(backbone), full_grads, atol=1e-5)
    text_only = backbone(*inputs, rows=T)
    assert text_only.image_feats is None and text_only.image_mask is None
    torch.testing.assert_close(text_only.text_feats, full.text_feats, atol=1e-6, rtol=0)
    assert torch.equal(text_only.text_mask, full.text_mask)
    with pytest.raises(ValueError, match="rows=0 must be in"):
        backbone(*inputs, rows=0)


# ------------------------------------------------------------------ one patch projection per image
@pytest.mark.parametrize("max_image_len", [-1, 10])
def test_pairs_that_share_an_image_share_its_patch_projection(max_image_len: int) -> None:
    """`image_index` projects each image once and gives what indexing the pixels gives: outputs
    and gradients, in training with dropout, patch sampling and masked patches, under the same
    seeds (every draw after the projection is per pair, in the same order)."""
    batch = make_batch()
    pixel_values, pixel_mask = _pixels(batch)
    B = batch["input_ids"].shape[0]
    image_index = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 0, 1])
    ids = batch["input_ids"][torch.arange(len(image_index)) % B]
    text_mask = batch["attention_mask"][torch.arange(len(image_index)) % B]
    grid = (pixel_values.shape[-2] // 16, pixel_values.shape[-1] // 16)  # the tiny model's patches
    masked = torch.rand(len(image_index), *grid, generator=torch.Generator().manual_seed(1)) < 0.3
    torch.manual_seed(0)
    backbone = create_backbone("tiny", drop_rate=0.1)
    mask_token = torch.nn.Parameter(torch.randn(backbone.config.hidden_size))
    projected: list[int] = []
    backbone.patch_embed.register_forward_hook(lambda _m, inputs, _out: projected.append(inputs[0].shape[0]))

    def step(**images) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        backbone.zero_grad(set_to_none=True)
        mask_token.grad = None
        torch.manual_seed(3)  # dropout
        out = backbone(
            ids,
            text_mask,
            max_image_len=max_image_len,
            generator=torch.Generator().manual_seed(2),  # patch sampling
            masked_patches=masked,
            mask_token=mask_token,
            **images,
        )
        (out.pooled.square().sum() + out.image_feats.square().mean()).backward()
        return torch.cat([out.pooled, out.image_feats.flatten(1)], 1), {
            **grads(backbone),
            "mask": mask_token.grad,
        }

    indexed, indexed_grads = step(pixel_values=pixel_values[image_index], pixel_mask=pixel_mask[image_index])
    shared, shared_grads = step(pixel_values=pixel_values, pixel_mask=pixel_mask, image_index=image_index)
    assert projected == [len(image_index), B], "the shared pass projects each of the B images once"
    torch.testing.assert_close(shared, indexed, atol=1e-5, rtol=0)
    assert_close_grads(shared_grads, indexed_grads, atol=1e-4)


def last_block_rows(task) -> list[int]:
    """Rows the last block computes in each pass of the task's step."""
    seen: list[int] = []
    task.backbone.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    return seen


@pytest.mark.parametrize(
    ("names", "fuse", "needs"),
    [
        (["itm", "mlm"], False, {"itm": "pooled", "mlm": "text"}),
        (["itm", "mlm"], True, {"itm": "pooled", "mlm": "text"}),
        (["itm", "mlm", "wpa"], False, {"itm": "all", "mlm": "text"}),
        (["itm", "mlm", "wpa"], True, {"itm": "all", "mlm": "text"}),
        (["itm", "mpp"], False, {"itm": "pooled"}),
    ],
)
def test_each_pass_computes_what_its_readers_read(names, fuse, needs) -> None:
    """Losses and gradients equal those of passes that compute every row (rows={}); the last
    block of each pass computes 1 row (ITM alone), T (MLM, the fused pass without WPA) or all."""
    batch = {**make_batch(), "source": [0, 1, 0, 1]}
    T, S = batch["input_ids"].shape[1], None
    results = []
    for narrow in (True, False):
        task = build_task_module(no_dropout_backbone(), names, max_image_len=10, fuse_passes=fuse)
        assert task.pass_rows == needs
        if not narrow:
            task.pass_rows = {}
        seen = last_block_rows(task)
        out = task(batch, generator=torch.Generator().manual_seed(3))
        out["loss"].backward()
        results.append((out, grads(task), seen))
    (narrow_out, narrow_grads, narrow_rows), (full_out, full_grads, full_rows) = results
    S = full_rows[0]
    expected = {"pooled": 1, "text": T, "all": S}
    if fuse:
        assert narrow_rows == [max((expected[n] for n in needs.values()), key=int)]
    else:
        order = [key for key in ("itm", "mlm", "mpp") if key in needs or key in names]
        assert narrow_rows == [expected[needs.get(key, "all")] for key in order]
    assert all(rows == S for rows in full_rows)
    for key in full_out:
        torch.testing.assert_close(narrow_out[key], full_out[key], atol=1e-5, rtol=1e-5, msg=key)
    assert_close_grads(narrow_grads, full_grads, atol=1e-5)


def test_fine_tuning_objectives_read_only_the_pooled_row() -> None:
    from vilt_lab.objectives.base import Objective, pass_rows
    from vilt_lab.objectives.irtr import IRTRObjective
    from vilt_lab.objectives.vqa import VQAObjective

    assert pass_rows([VQAObjective(32, 3), IRTRObjective(32)]) == {"plain": "pooled", "irtr": "pooled"}

    class Unsure(Objective):  # reads a pass without saying how much: gets every row
        reads_pass = "itm"

    class Wrong(Objective):
        reads_pass, reads_rows = "itm", "half"

    assert pass_rows([Unsure()]) == {"itm": "all"}
    with pytest.raises(ValueError, match="reads_rows='half'"):
        pass_rows([Wrong()])


# ------------------------------------------------------------------ text lengths in buckets
CAPTIONS = [
    "a red circle",
    "a small blue square left of a big green triangle",
    "there is one yellow circle above two red squares and a blue triangle " * 3,
    "two",
]


def pad_text(batch: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """`batch` with its texts padded to `length` (padding: id 0, attention 0, label ignored)."""
    extra = length - batch["input_ids"].shape[1]
    padded = dict(batch)
    for key, fill in (("input_ids", 0), ("mlm_input_ids", 0), ("attention_mask", 0), ("mlm_labels", -100)):
        padded[key] = F.pad(batch[key], (0, extra), value=fill)
    return padded


def test_bucket_padding_rounds_the_longest_text_up_to_a_multiple_of_8(shapes_tokenizer) -> None:
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    for texts in (CAPTIONS, CAPTIONS[:2], CAPTIONS[3:], CAPTIONS[:1]):
        samples = [{"image": image, "text": t} for t in texts]
        longest = ItemCollator(shapes_tokenizer, 40, "longest")(samples)
        bucket = ItemCollator(shapes_tokenizer, 40, "bucket")(samples)
        T, Tb = longest["input_ids"].shape[1], bucket["input_ids"].shape[1]
        assert Tb % TEXT_BUCKET == 0 and T <= Tb < T + TEXT_BUCKET and Tb <= 40
        for key in ("input_ids", "attention_mask"):
            assert torch.equal(bucket[key][:, :T], longest[key])
            assert not bucket[key][:, T:].any()
    with pytest.raises(ValueError, match="multiples of 8 up to data.max_text_len"):
        ItemCollator(shapes_tokenizer, 30, "bucket")


def test_padding_to_a_bucket_keeps_losses_and_gradients() -> None:
    batch = make_batch()  # texts of 12 tokens at most
    results = []
    for length in (12, 16, 40):
        task = build_task_module(tiny_backbone(), ["itm", "mlm", "wpa"]).eval()
        out = task(pad_text(batch, length), generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        results.append((out, grads(task)))
    (reference, reference_grads), *others = results
    for out, gradients in others:
        for key in reference:
            torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-5, msg=key)
        assert_close_grads(gradients, reference_grads, atol=1e-5)


@pytest.mark.slow
def test_static_compile_makes_one_graph_per_bucket(shapes_tokenizer) -> None:
    """trainer.compile_dynamic=false on bucketed texts: graphs bounded by the buckets, outputs
    those of the eager model. The eager backend: the count is dynamo's (a graph per shape),
    whichever backend then compiles each graph, and inductor on 2 CPU cores takes minutes."""
    from torch._dynamo.utils import counters

    from vilt_lab.training.speed_levers import compile_backbone

    torch._dynamo.reset()
    counters.clear()
    eager = build_task_module(tiny_backbone(), ["itm", "mlm"]).eval()
    compiled = build_task_module(tiny_backbone(), ["itm", "mlm"]).eval()
    compile_backbone(compiled.backbone, dynamic=False, backend="eager")
    lengths, buckets = set(), set()
    for n in range(1, 12):
        batch = make_batch(seed=n)
        T = max(3, 2 * n)  # 11 lengths from 3 to 22
        bucket = -(-T // TEXT_BUCKET) * TEXT_BUCKET
        padded = pad_text(
            {
                **batch,
                **{
                    k: batch[k][:, :T] for k in ("input_ids", "mlm_input_ids", "attention_mask", "mlm_labels")
                },
            },
            bucket,
        )
        lengths.add(T)
        buckets.add(bucket)
        out = compiled(padded, generator=torch.Generator().manual_seed(0))
        reference = eager(padded, generator=torch.Generator().manual_seed(0))
        for key in reference:
            torch.testing.assert_close(out[key], reference[key], atol=1e-6, rtol=1e-6, msg=key)
    graphs = counters["stats"]["unique_graphs"]
    # One graph per shape: per bucket (patch counts are the batch's, fixed here), at most once per
    # distinct block call of a step: the blocks before the last on every row (PyTorch 2.14 shares
    # one graph between blocks of one class), the last block on the ITM pass's [CLS] row and on
    # the MLM pass's text rows (`reads_rows`). Unbucketed, the 11 lengths would make 11 times that.
    # Besides, whatever the text length, the visual embedding's two graphs: the ITM pass's rows
    # index the images (`image_index`), the MLM pass's do not.
    assert compiled.pass_rows == {"itm": "pooled", "mlm": "text"}
    block_calls = (len(compiled.backbone.blocks) - 1) + 2
    image_graphs = 2
    assert len(buckets) == 3 < len(lengths)
    assert 0 < graphs <= len(buckets) * block_calls + image_graphs
    torch._dynamo.reset()


# ------------------------------------------------------------------ bf16 autocast
def train_losses(world, runs, precision: str) -> tuple[list[dict[str, float]], dict]:
    cfg = fast_config(
        world,
        runs,
        "evaluate=false",
        f"trainer.precision={precision}",
        "schedule.max_steps=6",
        "trainer.global_batch_size=8",
        "trainer.micro_batch_size=8",
        "trainer.ckpt_every=100",
        "optim.lr=1e-4",  # the paper's (the demo's 2e-3: see the test's docstring)
    )
    summary = run(cfg)
    lines = [json.loads(line) for line in (runs / "demo" / "metrics.jsonl").read_text().splitlines()]
    kept = ("loss", "distance")
    return [{k: v for k, v in line.items() if k.endswith(kept)} for line in lines], summary


@pytest.mark.slow
def test_bf16_autocast_tracks_fp32(shapes_world, tmp_path) -> None:
    """Six shapes-world steps of the demo's model (ITM, MLM, WPA) in bf16 autocast and in fp32,
    from the same weights and batches, at the paper's lr 1e-4.

    The losses (ITM, MLM, the weighted total) agree within 2e-3 relative at every step. Why 2e-3:
    it is bf16's unit roundoff (2^-9), the relative error of one rounding; a loss is a mean over
    many pairs and tokens whose rounding errors are independent and partly cancel, and softmax,
    norms and losses run in fp32 under autocast, so a sound bf16 path stays well inside it
    (measured: at most 2.4e-4), while a loss or a reduction computed in bf16 carries up to 2e-3 from
    its own last rounding alone.
    WPA's mean distances agree within 2e-3 at step 1 (the same weights; measured 3.4e-4), then
    within 1e-2: a transport optimum over the near-isotropic features of a fresh model moves about
    ten times more than the losses for the same weight difference (measured: 3e-3 by step 5; 1.4%
    at the demo's lr 2e-3, where Adam's first, sign-like steps turn rounding noise into lr-sized
    weight differences). WPA's loss, positives minus negatives, mostly cancels and is left to the
    total it is part of."""
    fp32, summary32 = train_losses(shapes_world, tmp_path / "fp32", "no")
    bf16, summary16 = train_losses(shapes_world, tmp_path / "bf16", "bf16")
    assert (summary32["precision"], summary16["precision"]) == ("no", "bf16")
    assert len(fp32) == len(bf16) == 6
    for step, (a, b) in enumerate(zip(fp32, bf16, strict=True), start=1):
        assert a.keys() == b.keys() and {"train/mlm/loss", "train/wpa/positive_distance"} <= a.keys()
        for key in a:
            if key == "train/wpa/loss":
                continue
            tolerance = 1e-2 if key.endswith("distance") and step > 1 else 2e-3
            assert abs(b[key] - a[key]) <= tolerance * abs(a[key]), (step, key, a[key], b[key])
    # Not bit-identical: autocast really ran the matrix products in bf16.
    assert any(a != b for a, b in zip(fp32, bf16, strict=True))


# ------------------------------------------------------------------ GPU-only levers
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_inference_matches_eager() -> None:
    """trainer.compile_mode=reduce-overhead with static shapes: replayed CUDA graphs give the
    eager model's outputs on a fixed-shape inference batch."""
    from vilt_lab.training.speed_levers import compile_backbone

    batch = {k: v.cuda() for k, v in make_batch().items()}
    eager = build_task_module(tiny_backbone(), ["itm", "mlm"]).cuda().eval()
    compiled = build_task_module(tiny_backbone(), ["itm", "mlm"]).cuda().eval()
    compile_backbone(compiled.backbone, dynamic=False, mode="reduce-overhead")
    with torch.no_grad():
        reference = eager(batch, generator=torch.Generator("cuda").manual_seed(0))
        for _ in range(3):  # record, then replay
            out = compiled(batch, generator=torch.Generator("cuda").manual_seed(0))
    for key in reference:
        torch.testing.assert_close(out[key], reference[key], atol=1e-4, rtol=1e-4, msg=key)


def test_fp8_without_torchao_names_the_key(shapes_world, tmp_path) -> None:
    try:
        import torchao  # noqa: F401

        pytest.skip("torchao is importable: trainer.fp8 builds (its numerics are a GPU check)")
    except ImportError:
        pass
    from vilt_lab.build.task import build_task

    cfg = train_settings(fast_config(shapes_world, tmp_path, "trainer.fp8=true"))
    with pytest.raises(ImportError, match=r"trainer.fp8=true needs torchao"):
        build_task(cfg, vocab_size=100)


@pytest.mark.slow
def test_a_run_with_the_cpu_levers_on(shapes_world, tmp_path) -> None:
    """The switches reach the run: fused passes and bucketed texts train end to end."""
    cfg = fast_config(
        shapes_world, tmp_path, "evaluate=false", "trainer.fuse_passes=true", "data.text_padding=bucket"
    )
    summary = run(cfg)
    assert summary["steps"] == 4
    lines = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < line["train/loss"] < 100 for line in lines if "train/loss" in line)


@pytest.mark.slow
def test_nonfinite_stop_between_log_steps_names_the_first_bad_step(shapes_world, tmp_path, monkeypatch):
    """trainer.nonfinite=stop without a host read per step: a NaN from step 2 on is found at
    step 5, the first step that logs or saves, which then neither logs nor saves."""
    from helpers.faults import poison_loss_from_call
    from vilt_lab.training.nonfinite import NonFiniteError

    poison_loss_from_call(monkeypatch, first_bad_call=2, objective="mlm")
    cfg = fast_config(
        shapes_world,
        tmp_path,
        "evaluate=false",
        "schedule.max_steps=10",
        "trainer.log_every=5",
        "trainer.ckpt_every=5",
    )
    with pytest.raises(
        NonFiniteError, match=r"step 2: non-finite mlm/loss, gradient norm; found at step 5"
    ) as err:
        run(cfg)
    assert "no checkpoint written since" in str(err.value)
    assert not list((tmp_path / "demo" / "checkpoints").glob("step_*"))
    metrics = tmp_path / "demo" / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()
