"""Speed-lever settings that would crash on a GPU are refused before any work, naming the keys and
the fix: float8 with a micro batch its backward cannot multiply, compile modes that replay CUDA
graphs with shape-generic graphs or gradient checkpointing."""

from __future__ import annotations

import pytest

from helpers.configs import fast_config
from vilt_lab.config.validation import ConfigError, validate_train_config

FP8_REFUSAL = (
    r"trainer\.fp8=true with trainer\.micro_batch_size=12: expected a multiple of 16 .*"
    r"set trainer\.micro_batch_size=16 .* or trainer\.fp8=false"
)


def test_fp8_with_a_micro_batch_not_a_multiple_of_16_is_refused(shapes_world, tmp_path) -> None:
    batch = ["trainer.micro_batch_size=12", "trainer.global_batch_size=24"]
    cfg = fast_config(shapes_world, tmp_path, "trainer.fp8=true", *batch)
    with pytest.raises(ConfigError, match=FP8_REFUSAL):
        validate_train_config(cfg, world_size=1)
    validate_train_config(fast_config(shapes_world, tmp_path, *batch), world_size=1)  # fp8 off: fine


def test_fp8_with_a_micro_batch_of_16_passes(shapes_world, tmp_path) -> None:
    batch = ["trainer.micro_batch_size=16", "trainer.global_batch_size=32"]
    validate_train_config(fast_config(shapes_world, tmp_path, "trainer.fp8=true", *batch), world_size=1)


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["trainer.compile_dynamic=true"], ["trainer.compile_dynamic=true"]),
        (
            ["trainer.compile_dynamic=false", "trainer.grad_checkpointing=true"],
            ["trainer.grad_checkpointing=true"],
        ),
        (
            ["trainer.compile_dynamic=true", "trainer.grad_checkpointing=true"],
            ["trainer.compile_dynamic=true", "trainer.grad_checkpointing=true"],
        ),
    ],
)
def test_cuda_graph_modes_with_what_they_cannot_replay_are_refused(
    shapes_world, tmp_path, mode: str, settings: list[str], named: list[str]
) -> None:
    cfg = fast_config(
        shapes_world, tmp_path, "trainer.compile=true", f"trainer.compile_mode={mode}", *settings
    )
    with pytest.raises(ConfigError) as refused:
        validate_train_config(cfg, world_size=1)
    [problem] = refused.value.problems
    assert problem.startswith(f"trainer.compile_mode={mode} replays CUDA graphs")
    for key in named:
        assert key in problem
    assert "trainer.compile_mode=default or max-autotune-no-cudagraphs" in problem


@pytest.mark.parametrize(
    "settings",
    [
        # Fixed shapes, no recomputation: what CUDA graphs are for.
        ["trainer.compile=true", "trainer.compile_mode=reduce-overhead", "trainer.compile_dynamic=false"],
        # No CUDA graphs in this mode.
        [
            "trainer.compile=true",
            "trainer.compile_mode=max-autotune-no-cudagraphs",
            "trainer.grad_checkpointing=true",
        ],
        # Not compiled: the mode is not used.
        ["trainer.compile=false", "trainer.compile_mode=reduce-overhead", "trainer.compile_dynamic=true"],
    ],
)
def test_compile_modes_that_can_work_pass(shapes_world, tmp_path, settings: list[str]) -> None:
    validate_train_config(fast_config(shapes_world, tmp_path, *settings), world_size=1)
