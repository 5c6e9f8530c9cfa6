"""Bit-exact runs at two threads.

Two 2-thread demo runs used to differ (1.9e-4 after 60 steps): the backward of the position-table
lookup in `interpolate_pos_embed` (advanced indexing, i.e. index_put_ with accumulate) added its
many repeated rows with atomic adds from both threads once the update held 32768 elements or
more. The lookup is an embedding now, whose backward adds in index order; `trainer.deterministic`
(vilt_lab.training.determinism) switches on PyTorch's deterministic algorithms on top, for GPUs
and any op that comes later.

Runs here use micro-batches of 16: with about 60 patches of width 64 each lookup's update is past
that threshold (debug=fast's micro-batches of 4 never reached the multi-threaded path).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from helpers.configs import fast_config
from helpers.faults import Killed, kill_after
from helpers.run_dirs import final_weights
from vilt_lab.model.embeddings import interpolate_pos_embed, select_patches
from vilt_lab.train import run
from vilt_lab.training.determinism import (
    CUBLAS_WORKSPACE_CONFIG,
    current_settings,
    deterministic_mode,
    make_deterministic,
)

# Two accumulated micro-batches of 16 per step, a checkpoint only at the end, no evaluation.
COMMON = [
    "trainer.micro_batch_size=16",
    "trainer.global_batch_size=32",
    "schedule.max_steps=3",
    "trainer.ckpt_every=3",
    "trainer.log_every=1",
    "evaluate=false",
]


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, f"{len(differ)} of {len(a)} tensors differ: {differ}"


def random_selection(batch: int = 16, grid: int = 8, seed: int = 0):
    """Images of random valid sizes on a (grid, grid) patch grid, all their patches selected."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randint(3, grid + 1, (batch,), generator=g)
    w = torch.randint(3, grid + 1, (batch,), generator=g)
    rows, cols = torch.arange(grid)[:, None], torch.arange(grid)[None, :]
    valid = (rows < h[:, None, None]) & (cols < w[:, None, None])
    return select_patches(valid)


def pos_embed_gradient(table: torch.Tensor, selection, upstream: torch.Tensor) -> torch.Tensor:
    table = table.detach().clone().requires_grad_()
    (interpolate_pos_embed(table, selection) * upstream).sum().backward()
    return table.grad


def test_pos_embed_gradient_is_the_same_every_time_at_two_threads(two_threads):
    """Without deterministic algorithms: the lookup's backward adds in a fixed order."""
    torch.use_deterministic_algorithms(False)
    selection = random_selection()
    B, L = selection.index.shape
    g = torch.Generator().manual_seed(1)
    table = torch.randn(64, 64, generator=g)
    upstream = torch.randn(B, L, 64, generator=g)
    assert B * L * 64 >= 32768, "too small for the multi-threaded path this guards against"
    first = pos_embed_gradient(table, selection, upstream)
    for _ in range(10):
        assert torch.equal(pos_embed_gradient(table, selection, upstream), first)
    # The same sums as advanced indexing added serially (one thread, or deterministic algorithms):
    # the change left one-thread results as they were, bit for bit.
    with deterministic_mode(True):
        reference = table.clone().requires_grad_()
        rows = selection.index  # only the corner lookups' order matters; check one of them
        (reference[rows] * upstream).sum().backward()
        lookup = table.clone().requires_grad_()
        (F.embedding(rows, lookup) * upstream).sum().backward()
    assert torch.equal(lookup.grad, reference.grad)


def test_deterministic_mode_switches_on_and_restores():
    before = current_settings()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (CUBLAS_WORKSPACE_CONFIG, ":16:8")
        with deterministic_mode(False):  # a run without the flag leaves the process as it is
            assert torch.are_deterministic_algorithms_enabled()
        previous = make_deterministic(False)  # PyTorch's defaults
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
        assert previous.algorithms and previous.cudnn_deterministic
        make_deterministic(True)
    assert current_settings() == before


@pytest.mark.slow
@pytest.mark.parametrize("deterministic", [True, False])
def test_two_runs_at_two_threads_are_bit_identical(deterministic, two_threads, shapes_world, tmp_path):
    """With `trainer.deterministic=true` anywhere; without it, on CPU at a fixed thread count."""
    if not deterministic and torch.cuda.is_available():
        pytest.skip("without trainer.deterministic, GPU kernels (atomic adds, cuBLAS) may vary")
    flag = f"trainer.deterministic={str(deterministic).lower()}"
    for name in ("first", "second"):
        run(fast_config(shapes_world, tmp_path, f"name={name}", flag, *COMMON))
    assert_bit_identical(final_weights(tmp_path / "first"), final_weights(tmp_path / "second"))


@pytest.mark.slow
def test_deterministic_resume_at_two_threads_equals_a_straight_run(
    two_threads, shapes_world, tmp_path, monkeypatch
):
    common = [
        "trainer.deterministic=true",
        *[c for c in COMMON if not c.startswith(("schedule.max_steps", "trainer.ckpt_every"))],
        "schedule.max_steps=4",
        "trainer.ckpt_every=2",
    ]
    run(fast_config(shapes_world, tmp_path, "name=straight", *common))
    # Killed during step 4, after the checkpoint of step 2 (two micro-batches a step).
    kill_after(monkeypatch, batches=7)
    with pytest.raises(Killed):
        run(fast_config(shapes_world, tmp_path, "name=resumed", *common))
    monkeypatch.undo()
    run(fast_config(shapes_world, tmp_path, "name=resumed", "resume=latest", *common))
    assert_bit_identical(final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed"))
