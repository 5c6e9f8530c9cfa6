"""A pre-training step makes no host-device sync between log steps.

On CUDA every op whose output shape or Python value depends on tensor data (`.item()`,
`nonzero`, `unique`, a boolean index, ...) drains the queue: the host waits for the GPU, and the
step cannot be captured as one CUDA graph. A CPU run shows the same ops at dispatch, so a
dispatch mode counts them here. What the step has to know on the host (patch counts, masked
tokens, the ITM negatives' sources) the collate knows already and hands over with the batch;
the step's own draws on the host use a CPU generator whose numbers are read in Python, never a
device tensor's.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.batches import make_batch
from helpers.configs import fast_config, train_settings
from helpers.models import tiny_backbone
from vilt_lab.build.data import build_streams, build_tokenizer
from vilt_lab.build.task import build_task
from vilt_lab.build.trainer import build_trainer
from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.data.masking import IGNORE_INDEX
from vilt_lab.model.embeddings import most_valid_patches, patch_validity
from vilt_lab.objectives import Passes, sample_negatives
from vilt_lab.objectives.passes import MLM_PASS
from vilt_lab.tasks.module import build_task_module
from vilt_lab.training.tracking import reset_accelerate_state

aten = torch.ops.aten

# Ops that read a device value on the host or size their output by tensor data.
SYNCING_OPS = {
    aten._local_scalar_dense.default,  # .item(), bool(), int(), float() of a tensor
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.nonzero.out,
    aten.argwhere.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.masked_select.default,
    aten.bincount.default,  # its length is the largest value + 1
}


def syncs(func, args, kwargs) -> bool:
    """Whether calling `func` on these arguments would wait for the device."""
    if func in SYNCING_OPS:
        return True
    flat = [*args, *kwargs.values()]
    if func in (
        aten.index.Tensor,
        aten.index_put.default,
        aten.index_put_.default,
        aten._index_put_impl_.default,
    ):
        # A mask index (bool, or uint8 as torch still reads it) sizes its output by the mask's count.
        return any(
            torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8) for i in flat[1] if i is not None
        )
    if func is aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    if func in (aten.repeat_interleave.self_Tensor, aten.repeat_interleave.self_int):
        return kwargs.get("output_size") is None and torch.is_tensor(flat[1])
    return False


class SyncCounter(TorchDispatchMode):
    """Counts the syncing ops called while active, by op name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if syncs(func, args, kwargs):
            self.calls[str(func)] += 1
        return func(*args, **kwargs)


def test_the_counter_sees_every_kind_of_sync() -> None:
    """Each way of syncing a step could take is counted (so a zero below means something)."""
    x = torch.tensor([0.0, 2.0, 0.0, 3.0])
    mask = x > 0
    with SyncCounter() as counter:
        x.sum().item()
        bool(mask.any())
        int(x.max())
        mask.nonzero()
        x.unique()
        x[mask]
        x.clone()[mask] = 1.0
        torch.masked_select(x, mask)
        torch.repeat_interleave(torch.tensor([1, 2]))
        torch.equal(x, x)
        mask.long().bincount()
        x[torch.tensor([0, 2])]  # an integer index: no sync
        torch.repeat_interleave(torch.tensor([1, 2]), output_size=3)  # size given: no sync
    assert counter.calls == {
        "aten._local_scalar_dense.default": 3,
        "aten.nonzero.default": 1,
        "aten._unique2.default": 1,
        "aten.index.Tensor": 1,
        "aten.index_put_.default": 1,
        "aten.masked_select.default": 1,
        "aten.repeat_interleave.Tensor": 1,
        "aten.equal.default": 1,
        "aten.bincount.default": 1,
    }


@pytest.mark.parametrize(("fuse_passes", "max_image_len"), [(False, -1), (True, -1), (True, 20)])
def test_a_pretraining_step_between_log_steps_makes_no_sync(
    fuse_passes, max_image_len, shapes_world, tmp_path
) -> None:
    """The demo's objectives (ITM with same-source negatives, whole-word MLM, WPA) in one
    optimizer step of two micro-batches through `Trainer.train_step`: forward, backward, the
    non-finite guard, the gradient norm and AdamW, counted on the step after a first one (so
    lazy state is built) that neither logs, evaluates nor saves; all patches (the demo's) or 20
    sampled (a shapes image has up to 60)."""
    cfg = train_settings(
        fast_config(
            shapes_world,
            tmp_path / "runs",
            "trainer.global_batch_size=8",
            "trainer.micro_batch_size=4",
            "trainer.log_every=10",
            "trainer.ckpt_every=10",
            "evaluate=false",
            "schedule.max_steps=10",
            f"trainer.fuse_passes={fuse_passes}",
            f"task.max_image_len={max_image_len}",
        )
    )
    accelerator = Accelerator(cpu=True)
    try:
        set_seed(cfg.seed)
        tokenizer = build_tokenizer(cfg)
        task = build_task(cfg, tokenizer)
        assert sorted(task.objectives) == ["itm", "mlm", "wpa"]
        train_stream, evaluators = build_streams(cfg, tokenizer, accelerator, task)
        trainer = build_trainer(cfg, accelerator, task, train_stream, evaluators, run_dir=None)
        trainer.model.train()
        stream = iter(train_stream(0))
        # Collated before counting: the loader's workers collate, not the training process.
        batches = [next(stream) for _ in range(4)]
        trainer.train_step(iter(batches[:2]))
        assert not trainer.reports(trainer.step + 1)
        with SyncCounter() as counter:
            result = trainer.train_step(iter(batches[2:]))
    finally:
        reset_accelerate_state()
    assert torch.isfinite(result.outputs[-1]["loss"])
    assert dict(counter.calls) == {}


# ------------------------------------------- what the step now reads on the host, against the device


def device_draw(batch_size: int, generator: torch.Generator, sources: list[int] | None):
    """The ITM negatives as the step drew them with tensor ops (`unique`, `nonzero`, boolean
    indexing, a derangement checked with `bool()`: each a sync on a device): the reference the
    host draw reproduces, call for call on the generator."""
    image_index, labels = torch.arange(batch_size), torch.ones(batch_size, dtype=torch.long)
    num_negatives = batch_size // 2
    if num_negatives == 0:
        return image_index, labels
    sources = torch.zeros(batch_size, dtype=torch.long) if sources is None else torch.tensor(sources)
    _, source_of, source_size = torch.unique(sources, return_inverse=True, return_counts=True)
    shared = source_size[source_of] > 1
    candidates = shared.nonzero().squeeze(1)
    negatives = candidates[torch.randperm(len(candidates), generator=generator)][:num_negatives]
    short = num_negatives - len(negatives)
    if short:
        alone = (~shared).nonzero().squeeze(1)
        crossing = alone[torch.randperm(len(alone), generator=generator)[:short]]
        shift = torch.randint(1, batch_size, (short,), generator=generator)
        image_index[crossing] = (crossing + shift) % batch_size
        labels[crossing] = 0
    for source in source_of[negatives].unique().tolist():
        mine = negatives[source_of[negatives] == source]
        if len(mine) == 1:
            members = (source_of == source).nonzero().squeeze(1)
            position = (members == mine).nonzero().squeeze(1)
            shift = torch.randint(1, len(members), (1,), generator=generator)
            image_index[mine] = members[(position + shift) % len(members)]
        else:
            perm = torch.randperm(len(mine), generator=generator)
            while bool((perm == torch.arange(len(mine))).any()):
                perm = torch.randperm(len(mine), generator=generator)
            image_index[mine] = mine[perm]
    labels[negatives] = 0
    return image_index, labels


def test_the_host_draw_of_itm_negatives_is_the_device_draw() -> None:
    """Same negatives and the generator left in the same state (patch sampling draws next), so a
    CPU run, where the host generator is the step's own, trains exactly as before."""
    rng = random.Random(0)
    for seed in range(2000):
        batch_size = rng.randint(1, 24)
        num_sources = rng.choice([None, 1, 2, 3, 5, 24])
        sources = None if num_sources is None else [7 * rng.randrange(num_sources) for _ in range(batch_size)]
        host, device = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        drawn = sample_negatives(batch_size, host, sources)
        expected = device_draw(batch_size, device, sources)
        assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True)), (batch_size, sources)
        assert torch.equal(host.get_state(), device.get_state())
    step = torch.Generator().manual_seed(3)
    assert Passes(generator=step).host_generator is step


def test_the_patch_count_from_image_sizes_is_the_device_count() -> None:
    """`most_valid_patches` of the collate's image sizes equals the count of `patch_validity`'s
    mask, which interpolates the pixel mask on the device (odd canvases and patch sizes too)."""
    rng = random.Random(0)
    for _ in range(300):
        patch = rng.choice([4, 14, 16, 32])
        H, W = rng.randint(patch, 320), rng.randint(patch, 320)
        sizes = [(rng.randint(1, H), rng.randint(1, W)) for _ in range(3)]
        pixel_mask = torch.zeros(3, H, W, dtype=torch.bool)
        for i, (h, w) in enumerate(sizes):
            pixel_mask[i, :h, :w] = True
        counted = patch_validity(pixel_mask, (H // patch, W // patch)).flatten(1).sum(1).max()
        assert most_valid_patches(sizes, (H, W), patch) == int(counted), (sizes, (H, W), patch)


@pytest.mark.parametrize("max_image_len", [-1, 20, 40])
@pytest.mark.parametrize("sources", [[0, 0, 0, 0], [0, 1, 2, 3]])
def test_a_step_with_the_host_counts_is_the_step_without(max_image_len: int, sources: list[int]) -> None:
    """The pre-training objectives with the collate's image sizes (patch sequence length from the
    host) give the values and gradients of the step without them (counted on the device): bit
    for bit, with sampling (20 < 36 valid patches) or not (40), and with negatives that leave
    some images out of the ITM pass (4 sources: every negative crosses)."""
    results = []
    for keep_sizes in (True, False):
        batch = {**make_batch(), "source": sources}
        if not keep_sizes:
            del batch["image_sizes"]
        task = build_task_module(tiny_backbone(), ["itm", "mlm", "wpa"], max_image_len=max_image_len)
        out = task(batch, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
        results.append((out, {name: p.grad for name, p in task.named_parameters() if p.grad is not None}))
    (out, grads), (reference, reference_grads) = results
    assert out.keys() == reference.keys() and all(torch.equal(out[k], reference[k]) for k in out)
    assert grads.keys() == reference_grads.keys()
    assert all(torch.equal(grads[name], reference_grads[name]) for name in grads)


def test_mlm_decodes_the_rows_nonzero_would_select() -> None:
    """The masked rows chosen by a stable sort with the collate's count: loss, accuracy and
    gradients bit for bit those of selecting them with `nonzero` (a sync on a device)."""
    batch = make_batch()
    task = build_task_module(tiny_backbone(), ["mlm"]).eval()
    out = task(batch)
    out["loss"].backward()
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    task.zero_grad(set_to_none=True)
    output = Passes(rows=task.pass_rows).run(task.backbone, batch, batch["mlm_input_ids"], serves=(MLM_PASS,))
    labels = batch["mlm_labels"].flatten()
    positions = (labels != IGNORE_INDEX).nonzero().squeeze(1)
    logits = task.objectives["mlm"].head(output.text_feats.flatten(0, 1)[positions])
    loss = F.cross_entropy(logits.float(), labels[positions], reduction="sum") / len(positions)
    (task.weights["mlm"] * loss).backward()
    assert batch["mlm_count"] == len(positions) > 0
    assert torch.equal(out["mlm/loss"], loss.detach())
    assert torch.equal(out["mlm/count"], torch.tensor(float(len(positions))))
    assert all(torch.equal(grads[name], p.grad) for name, p in task.named_parameters() if p.grad is not None)


def test_sources_as_a_tensor_are_refused() -> None:
    """A hand-built batch with `source` as a tensor (which would sit on the device) is refused
    with the reason, rather than read with a sync per pair."""
    backbone, batch = tiny_backbone(), {**make_batch(), "source": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(TypeError, match=r"batch\['source'\] must be a list of ints"):
        build_task_module(backbone, ["itm"])(batch, generator=torch.Generator().manual_seed(0))


def test_retrieval_negatives_are_drawn_and_gathered_without_a_sync() -> None:
    """Retrieval fine-tuning's 15 negatives per image: drawn among the pool's other captions and
    their tokens gathered where the pool's copy lives, with no syncing op (the pool is copied
    to a device once, not every step)."""
    counts = torch.tensor([5, 4, 5, 6])
    pool = CaptionPool(
        torch.randint(5, 100, (int(counts.sum()), 12), dtype=torch.int32),
        torch.randint(3, 13, (int(counts.sum()),)),
        torch.arange(len(counts)).repeat_interleave(counts),
        [f"img{i}" for i in range(len(counts))],
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.tensor([0, 3, 1, 2])
    with SyncCounter() as counter:
        drawn = pool.draw_negatives(images, 15, generator)
        input_ids, attention_mask = pool.tokens(drawn.flatten(), torch.device("cpu"))
    assert counter.calls == {}
    assert (
        input_ids.shape == (60, 12)
        and attention_mask.sum(1).tolist() == pool.lengths[drawn.flatten()].tolist()
    )


@pytest.mark.parametrize("target", ["normalized", "raw", "mpp"])
def test_a_step_with_masked_image_modelling_makes_no_sync(target: str) -> None:
    """The demo's objectives with `mim` added (its mask drawn as sorted random keys, its count
    of masked patches kept on the device): forward and backward on a batch with the collate's
    image sizes, 20 of up to 36 patches sampled."""
    task = build_task_module(
        tiny_backbone(),
        ["itm", "mlm", "wpa", "mim"],
        max_image_len=20,
        objective_kwargs={"mim": {"target": target, "decoder_depth": 1, "decoder_width": 64}},
    )
    batch = make_batch()
    task(batch, generator=torch.Generator().manual_seed(0))["loss"].backward()  # lazy state built
    with SyncCounter() as counter:
        out = task(batch, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["mim/count"] > 0
    assert dict(counter.calls) == {}


def test_batch_one_latency_calls_make_no_sync() -> None:
    """Table 6's timed call (image tokens + the transformer at batch 1) syncs nowhere: the two
    reads of whether anything is padded happen once, before the clock, and the whole grid's
    patch count is passed on instead of counted on the device."""
    from vilt_lab.bench.latency import time_visual_embedding_and_transformer
    from vilt_lab.measure.dummy_inputs import dummy_inputs

    backbone = tiny_backbone().eval()
    inputs = dummy_inputs(backbone.config, (64, 96), 12)
    # no_grad, not the benchmark's inference_mode: a dispatch mode does not see `.item()` on
    # inference tensors, though on a GPU it syncs all the same.
    with torch.no_grad(), SyncCounter() as counter:
        text = backbone.embed_text(inputs.input_ids)
        time_visual_embedding_and_transformer(
            backbone, text, inputs.attention_mask, inputs.pixel_values, inputs.pixel_mask, warmup=1, repeats=2
        )
    # text_mask.all() and pixel_mask.all(), read once; and per call encode's check that an
    # unpadded call has no padding, which it makes on CPU tensors only (free there, none on a GPU).
    assert counter.calls == {"aten._local_scalar_dense.default": 2 + 3}
