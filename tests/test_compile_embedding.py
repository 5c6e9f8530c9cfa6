"""`trainer.compile` compiles the visual embedding with the blocks (`compile_backbone`): the
patch projection and everything after the patch choice in graphs, the random choice eager
between them, the whole embedding in one graph when every patch is kept. Dynamo's eager
backend shows the structure and the values (it runs each graph as traced, so a compiled call
must be the eager one bit for bit, the generator's draws and dropout's included); one inductor
case shows what the compile removes."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from helpers.batches import make_batch
from helpers.compiling import CountingBackend
from helpers.models import tiny_backbone
from vilt_lab.data.normalize import normalize_images
from vilt_lab.model.embeddings import most_valid_patches
from vilt_lab.training.speed_levers import compile_backbone


@pytest.fixture
def fresh_dynamo(monkeypatch: pytest.MonkeyPatch):
    """Dynamo's caches and counters emptied, its recompile limit restored after the test."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def image_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A padded batch of 4 images of different sizes, and the most valid patches among them."""
    batch = make_batch(seed)
    pixel_values = normalize_images(batch["image"], batch["pixel_mask"])
    return (
        pixel_values,
        batch["pixel_mask"],
        most_valid_patches(batch["image_sizes"], pixel_values.shape[-2:], 16),
    )


# What a pass asks of the embedding: 20 of up to 36 valid patches drawn from the generator (eager,
# between two graphs), with the count known or counted on the device (eager too); every patch
# kept (one graph when the count is known); MPP's masked patches on images that rows share (ITM's
# negatives).
CALLS = {
    "sampled": {"max_image_len": 20, "known_count": True},
    "sampled, counted on the device": {"max_image_len": 20, "known_count": False},
    "every patch": {"max_image_len": -1, "known_count": True},
    "every patch, counted on the device": {"max_image_len": -1, "known_count": False},
    "shared and masked images": {"max_image_len": 30, "known_count": True, "shared": True, "masked": True},
}


def embed(backbone, call: dict, seed: int = 3):
    """Image tokens of `image_inputs` in training mode (dropout on), and the gradients of a
    weighted sum of them."""
    pixel_values, pixel_mask, most = image_inputs()
    options = {"max_image_len": call["max_image_len"], "max_patches": most if call["known_count"] else None}
    if call.get("shared"):
        options["image_index"] = torch.tensor([0, 2, 2, 1, 0])
    if call.get("masked"):
        rows = len(options.get("image_index", pixel_values))
        masked = torch.rand(rows, 8, 6, generator=torch.Generator().manual_seed(1)) < 0.4
        options |= {"masked_patches": masked, "mask_token": backbone.cls_token[0, 0] * 2}
    backbone.train()
    backbone.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # dropout's draws
    generator = torch.Generator().manual_seed(seed)
    tokens, mask, selection = backbone.image_tokens(pixel_values, pixel_mask, generator=generator, **options)
    weights = torch.linspace(-1, 1, tokens.numel()).reshape(tokens.shape)
    (tokens * weights).sum().backward()
    grads = {name: p.grad for name, p in backbone.named_parameters() if p.grad is not None}
    return tokens, mask, selection, grads, generator.get_state()


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_the_compiled_embedding_is_the_eager_one_bit_for_bit(call: dict, fresh_dynamo: None) -> None:
    """Tokens, mask, patch choice, gradients and the generator's state after the call."""
    eager = tiny_backbone()
    compiled = tiny_backbone()
    compile_backbone(compiled, dynamic=True, backend="eager")
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unaffected
    tokens, mask, selection, grads, state = embed(compiled, call)
    ref_tokens, ref_mask, ref_selection, ref_grads, ref_state = embed(eager, call)
    assert counters["stats"]["unique_graphs"] >= 1  # it did compile
    assert torch.equal(tokens, ref_tokens) and torch.equal(mask, ref_mask)
    assert torch.equal(selection.index, ref_selection.index) and selection.grid == ref_selection.grid
    assert torch.equal(selection.valid, ref_selection.valid)
    assert torch.equal(selection.grid_hw, ref_selection.grid_hw)
    assert (
        grads.keys() == ref_grads.keys()
        and {"pos_embed", "cls_token", "patch_embed.proj.weight"} <= grads.keys()
    )
    assert all(torch.equal(grads[name], ref_grads[name]) for name in grads)
    assert torch.equal(state, ref_state)
    if call["max_image_len"] == 20:  # really drawn: not the first 20 valid patches in raster order
        assert not torch.equal(selection.index, embed(eager, {**call, "max_image_len": -1})[2].index[:, :20])


@pytest.mark.parametrize("dynamic", [True, False])
def test_two_steps_of_the_same_shapes_compile_once(dynamic: bool, fresh_dynamo: None) -> None:
    """A second training step with other random draws reuses the first step's graphs (no
    recompile, no graph break): the projection and the placement around the eager patch choice,
    and the one graph of every patch kept."""
    backend = CountingBackend()
    backbone = tiny_backbone()
    compile_backbone(backbone, dynamic=dynamic, backend=backend)
    for call, graphs, calls_per_step in ((CALLS["sampled"], 2, 2), (CALLS["every patch"], 3, 1)):
        embed(backbone, call, seed=1)
        assert (backend.graphs, counters["stats"]["unique_graphs"]) == (graphs, graphs)
        calls = backend.calls
        embed(backbone, call, seed=2)
        assert backend.graphs == counters["stats"]["unique_graphs"] == graphs
        assert backend.calls == calls + calls_per_step
    assert not counters["graph_break"]


def top_level_aten_ops(prof) -> Counter[str]:
    """The ATen ops called from Python or from a compiled graph's wrapper, not from inside
    another op: what a CPU dispatches one by one (on a GPU, a kernel launch or more each)."""
    ops: Counter[str] = Counter()
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            ops[event.name] += 1
    return ops


@pytest.mark.slow
def test_inductor_runs_the_whole_inference_embedding_in_a_few_ops(fresh_dynamo: None) -> None:
    """Evaluation with every patch kept, as `trainer.compile` builds it (inductor, static shapes):
    the embedding's hundred-odd ops become the convolution and the raster-order sort around one
    fused kernel, with eager's values up to rounding."""
    pixel_values, pixel_mask, most = image_inputs()
    backbone = tiny_backbone().eval()

    def call():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tokens, _, _ = backbone.image_tokens(pixel_values, pixel_mask, max_patches=most)
        return tokens, top_level_aten_ops(prof)

    with torch.no_grad():
        reference, eager_ops = call()
        compile_backbone(backbone, dynamic=False)
        call()  # the compile
        tokens, compiled_ops = call()
    assert sum(eager_ops.values()) > 80
    assert compiled_ops == {"aten::convolution": 1, "aten::sort": 1}
    torch.testing.assert_close(tokens, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_replay_around_a_fresh_patch_choice(fresh_dynamo: None) -> None:
    """`trainer.compile_mode=reduce-overhead` with sampled patches: the graphs before and after the
    patch choice are replayed, the choice is drawn anew each call (eager, never recorded), and
    each call gives eager's patches for its seed and eager's tokens up to rounding."""
    pixel_values, pixel_mask, most = (t.cuda() if torch.is_tensor(t) else t for t in image_inputs())
    eager, compiled = tiny_backbone().cuda().eval(), tiny_backbone().cuda().eval()
    compile_backbone(compiled, dynamic=False, mode="reduce-overhead")
    choices = []
    with torch.no_grad():
        for seed in range(4):  # the compile, the recording, then replays
            out = [
                backbone.image_tokens(
                    pixel_values,
                    pixel_mask,
                    max_image_len=20,
                    max_patches=most,
                    generator=torch.Generator("cuda").manual_seed(seed),
                )
                for backbone in (compiled, eager)
            ]
            (tokens, _, selection), (ref_tokens, _, ref_selection) = out
            assert torch.equal(selection.index, ref_selection.index), seed
            torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-4)
            choices.append(selection.index.clone())
    assert len({tuple(choice.flatten().tolist()) for choice in choices}) == len(choices)
