"""`python -m vilt_lab.bench canvas`: its counts on batches worked out by hand, and a tiny run end
to end."""

from __future__ import annotations

import json

import pytest
import torch

from vilt_lab.bench.__main__ import main
from vilt_lab.bench.canvas import (
    batch_sizes,
    image_shapes_of,
    model_batch,
    padding_per_useful,
    sequence_shapes_of,
    step_seconds,
    step_shapes,
)
from vilt_lab.data.collate import WHOLE_CANVAS
from vilt_lab.model import ViltBackbone, get_config

# Patch 16: (32, 48) and (48, 32) have 6 patches each, (32, 32) 4; their canvas is (48, 48), 9 each.
MIXED = [(32, 48), (48, 32), (32, 32)]


def test_padding_and_shape_counts_by_hand() -> None:
    batches = [MIXED, [(32, 32)] * 3]
    # Sequence: every image up to 6 positions: 0 + 0 + 2 padded over 16 + 12 useful.
    assert padding_per_useful(batches, 16, canvas=False) == pytest.approx(2 / 28)
    # Pixels: every image of the first batch on a 48 x 48 canvas: 3 + 3 + 5 padded patches.
    assert padding_per_useful(batches, 16, canvas=True) == pytest.approx(11 / 28)
    assert image_shapes_of(batches) == 2 and sequence_shapes_of(batches, 16) == 2
    assert image_shapes_of([MIXED, MIXED[:2]]) == 1  # one canvas ...
    assert sequence_shapes_of([MIXED, MIXED[:2]], 16) == 2  # ... but two batch sizes


def test_canvas_padding_and_shapes_by_hand() -> None:
    # Canvases of 2 patches of 16: the first batch on 64 x 64 (16 patches each: 10 + 10 + 12
    # padded), the square one on its own 32 x 32 (nothing padded); a pass spans the canvas's
    # whole grid, so the sequence pads as much as the pixels.
    batches = [MIXED, [(32, 32)] * 3]
    assert padding_per_useful(batches, 16, canvas=True, canvas_multiple=32) == pytest.approx(32 / 28)
    assert padding_per_useful(batches, 16, canvas=False, canvas_multiple=32) == pytest.approx(32 / 28)
    # 32 x 48 and 32 x 64 share the 32 x 64 canvas, and with it their image positions (8): one
    # step shape, where the batch's largest image would make two (6 and 8 positions).
    apart = [[(32, 48)] * 3, [(32, 64)] * 3]
    assert image_shapes_of(apart) == 2 and image_shapes_of(apart, canvas_multiple=32) == 1
    assert sequence_shapes_of(apart, 16) == 2 and sequence_shapes_of(apart, 16, canvas_multiple=32) == 1
    assert step_shapes(apart, 16, canvas_multiple=32) == [(apart[0], 2)]
    # Buckets of 4-patch canvases: all three shapes on 64 x 64, batched in stream order.
    assert batch_sizes(MIXED * 4, 3, image_buckets=True, canvas_multiple=64) == [MIXED] * 4
    assert batch_sizes(MIXED * 4, 3, image_buckets=True, canvas_multiple=32) == [[size] * 3 for size in MIXED]


def test_batches_are_the_streams_full_batches() -> None:
    stream = MIXED * 4  # 12 items: 4 of each shape
    assert batch_sizes(stream, 3, image_buckets=False) == [MIXED] * 4
    assert batch_sizes(stream, 3, image_buckets=True) == [[size] * 3 for size in MIXED]  # one left each
    # Step shapes: (48, 48) canvas with 6 positions twice, the (32, 32) batch once.
    shapes = step_shapes([MIXED, [(32, 32)] * 3, MIXED[::-1]], 16)
    assert shapes == [(MIXED, 2), ([(32, 32)] * 3, 1)]


@pytest.mark.slow
def test_canvas_benchmark_tiny_runs_both_image_sets(capsys: pytest.CaptureFixture[str]) -> None:
    main(["canvas", "--tiny", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads(lines[-1])
    assert [r["name"] for r in results] == ["shapes world", "COCO-like"]
    for r in results:
        assert r["bucketed_sequence_padding"] == 0 == r["bucketed_canvas_padding"]
        assert r["canvas_padding"] >= r["sequence_padding"] > 0
        assert min(r["ms_per_item"], r["bucketed_ms_per_item"], r["bucketed_masked_ms_per_item"]) > 0
        assert [canvas["step"] for canvas in r["canvases"]] == [2, 4]
        for canvas in r["canvases"]:
            assert canvas["canvas_padding"] >= canvas["sequence_padding"] >= 0
            assert canvas["image_shapes"] >= 1 and canvas["ms_per_item"] > 0
    assert sum(line.startswith("  step ") for line in lines) == 2
    assert sum(line.startswith("  canvases of ") for line in lines) == 4


def _timed_step_batch() -> tuple[ViltBackbone, dict]:
    """A tiny backbone and one batch of two shapes on a 2-patch canvas, as the bench times them."""
    torch.manual_seed(0)
    config = get_config("tiny")
    batch = model_batch(
        MIXED, torch.Generator().manual_seed(0), config, canvas_multiple=2 * config.patch_size
    )
    return ViltBackbone(config).train(), batch


def test_a_timed_step_runs_under_autocast_and_leaves_no_gradient() -> None:
    backbone, batch = _timed_step_batch()
    assert batch[WHOLE_CANVAS]  # a 2-patch canvas: the pass spans its whole grid
    seen: list[torch.dtype] = []
    handle = backbone.blocks[0].attn.qkv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    assert step_seconds(backbone, batch, torch.bfloat16) > 0 and step_seconds(backbone, batch) > 0
    handle.remove()
    assert seen == [torch.bfloat16, torch.float32]  # autocast only where asked
    assert all(p.grad is None for p in backbone.parameters())


@pytest.mark.gpu
def test_canvas_benchmark_tiny_times_on_the_gpu_in_bf16(capsys: pytest.CaptureFixture[str]) -> None:
    main(["canvas", "--tiny", "--device", "cuda", "--dtype", "bfloat16", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "bfloat16" in lines[0]
    results = json.loads(lines[-1])
    assert all(r["ms_per_item"] > 0 and r["bucketed_ms_per_item"] > 0 for r in results)
