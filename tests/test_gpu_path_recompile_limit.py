"""The compiled backbone with static shapes (trainer.compile=true, compile_dynamic=false) stay compiled
over the text lengths a run meets, in training and evaluation: every block shares one code
object, so dynamo's recompile limit (8) is shared too and two lengths used to exhaust it, after
which every new shape ran eager without a word. A backend that counts graph calls shows it
(no code generation: the count is dynamo's, whichever backend compiles each graph)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from helpers.batches import make_batch
from helpers.compiling import CountingBackend
from helpers.models import tiny_backbone
from vilt_lab.tasks.module import build_task_module
from vilt_lab.training.speed_levers import RecompileLimitWatch, compile_backbone, recompile_limit_hits

TEXT_LENGTHS = (16, 24, 32)


def padded_batch(length: int, seed: int) -> dict[str, torch.Tensor]:
    batch = make_batch(seed=seed)
    extra = length - batch["input_ids"].shape[1]
    for key, fill in (("input_ids", 0), ("mlm_input_ids", 0), ("attention_mask", 0), ("mlm_labels", -100)):
        batch[key] = F.pad(batch[key], (0, extra), value=fill)
    return batch


@pytest.fixture
def fresh_dynamo(monkeypatch: pytest.MonkeyPatch):
    """Dynamo's caches and counters emptied, its recompile limit restored after the test."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", torch._dynamo.config.recompile_limit)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_calls_per_pass(task, backend: CountingBackend, length: int, seed: int) -> tuple[int, int]:
    """Compiled graph calls (blocks and visual embedding) of a training step and of an evaluation pass on texts of ``length``."""
    start = backend.calls
    task.train()
    task(padded_batch(length, seed), generator=torch.Generator().manual_seed(seed))["loss"].backward()
    trained = backend.calls - start
    task.eval()
    with torch.no_grad():
        task(padded_batch(length, seed), generator=torch.Generator().manual_seed(seed))
    return trained, backend.calls - start - trained


@pytest.mark.slow
def test_three_text_lengths_stay_compiled_in_training_and_evaluation(fresh_dynamo: None) -> None:
    task = build_task_module(tiny_backbone(), ["itm", "mlm"])
    backend = CountingBackend()
    compile_backbone(task.backbone, dynamic=False, backend=backend)
    # The ITM pass and the MLM pass: each block, and the visual embedding (one graph: every patch
    # kept and their count known from the image sizes).
    graph_calls = 2 * (len(task.backbone.blocks) + 1)
    for seed, length in enumerate(TEXT_LENGTHS):
        assert compiled_calls_per_pass(task, backend, length, seed) == (graph_calls, graph_calls), length
    assert recompile_limit_hits() == 0
    assert counters["stats"]["unique_graphs"] == backend.graphs
    assert backend.graphs > 8  # more than the default limit allows one code object


@pytest.mark.slow
def test_a_fallback_to_eager_is_warned_in_the_run_log(
    fresh_dynamo: None, caplog: pytest.LogCaptureFixture
) -> None:
    task = build_task_module(tiny_backbone(), ["itm", "mlm"])
    backend = CountingBackend()
    compile_backbone(task.backbone, dynamic=False, backend=backend)
    torch._dynamo.config.recompile_limit = 2  # what 8 is to a long run, in two lengths
    watch = RecompileLimitWatch()
    with caplog.at_level(logging.WARNING, logger="vilt_lab.training.speed_levers"):
        assert watch.check() == 0
        assert not caplog.records
        for seed, length in enumerate(TEXT_LENGTHS[:2]):
            compiled_calls_per_pass(task, backend, length, seed)
        hits = watch.check()
        assert hits >= 1
        [warning] = caplog.records
        assert "fell back to eager" in warning.getMessage()
        assert "recompile_limit=2" in warning.getMessage()
        assert watch.check() == hits  # said once
        assert len(caplog.records) == 1
