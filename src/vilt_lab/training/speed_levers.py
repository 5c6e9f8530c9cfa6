"""Speed levers applied to a built backbone in place: `trainer.compile` (`torch.compile` of
each block and of the visual embedding) and `trainer.fp8` (torchao float8 linears). Parameter
names stay, so checkpoints are unaffected."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn
from torch._dynamo.utils import counters as dynamo_counters

from ..config.errors import MissingPackageError
from ..config.schema import TrainerSchema
from ..model import ViltBackbone

log = logging.getLogger(__name__)

# Every block runs `Block.forward`, one code object, and dynamo's recompile limit (8 by default)
# counts graphs per code object: all blocks share it. With static shapes a step makes a graph per
# text length for each distinct block call (the blocks before the last, the last block on each
# pass's rows), in training and again in evaluation (grad and dropout are guarded): two lengths
# exceed 8, and past the limit every new shape runs eager. 64 holds pre-training's 5 text buckets
# (8 to 40) x 3 block calls x train and eval, and still stops a run whose shapes never settle.
BLOCK_RECOMPILE_LIMIT = 64
# How dynamo counts giving up on a code object at a limit, in counters["unimplemented"]:
# "<limit's config name> reached" in older torch, "Dynamo recompile limit exceeded ..." in newer.
_RECOMPILE_LIMIT_HIT = re.compile(r"_limit reached|recompile limit exceeded", re.IGNORECASE)

# torch.compile's modes that record and replay CUDA graphs: one recording per input shape, its
# outputs overwritten by the next replay.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# torchao's float8 matmuls (its default pad_inner_dim=False) need inner dimensions that are
# multiples of 16. In the weight gradient the inner dimension is the micro batch's tokens: B x 1
# in the last block, which keeps only the rows the heads read.
FP8_BATCH_MULTIPLE = 16


def compile_backbone(backbone: ViltBackbone, dynamic: bool, **options: Any) -> None:
    """`torch.compile` the backbone in place: each transformer block, and the visual embedding's
    steps that read no generator (`ViltBackbone.COMPILED_IMAGE_STEPS`: the patch projection, and
    the chosen patches' gather, positions, [CLS] and modality type; with every patch kept and
    their count known, the whole embedding in one graph). Parameter names stay.

    A training step's random patch choice runs eager between two graphs: dynamo traces a
    `torch.Generator` poorly, and a CUDA graph would replay its draws.
    dynamic=True (`trainer.compile_dynamic`, the default) compiles shape-generic kernels once: the
    text length and the number of image tokens change from batch to batch. False compiles one
    static graph per shape (faster kernels, and the precondition of CUDA graphs): with
    `data.text_padding=bucket` and a fixed patch count that is one graph per text bucket.
    options: more `torch.compile` arguments: `mode` (`trainer.compile_mode`; "reduce-overhead"
    replays CUDA graphs, for fixed shapes: inference, or training with dynamic=False), a backend.
    Dynamo's recompile limit is raised to `BLOCK_RECOMPILE_LIMIT` for the whole process.
    """
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, BLOCK_RECOMPILE_LIMIT)
    for block in backbone.blocks:
        block.compile(dynamic=dynamic, **options)
    for step in backbone.COMPILED_IMAGE_STEPS:
        # An instance attribute over the class's method, as `nn.Module.compile` does for calls:
        # no module is wrapped, so parameter names stay.
        setattr(backbone, step, torch.compile(getattr(backbone, step), dynamic=dynamic, **options))


def recompile_limit_hits() -> int:
    """Times dynamo gave up compiling a code object at its recompile limit in this process (its
    counters): each new shape that code meets runs eager from then on."""
    return sum(
        n for reason, n in dynamo_counters["unimplemented"].items() if _RECOMPILE_LIMIT_HIT.search(reason)
    )


class RecompileLimitWatch:
    """Warns in the run's log when dynamo gives up compiling, which its graph count
    (`train/compiles`) does not show: dynamo itself says so once, on stderr."""

    def __init__(self) -> None:
        self.start = self.warned = recompile_limit_hits()  # the process's earlier work is not ours

    def check(self) -> int:
        """The hits since this watch began; a warning when there are new ones."""
        hits = recompile_limit_hits()
        if hits > self.warned:
            log.warning(
                "torch.compile fell back to eager: dynamo hit its recompile limit "
                "(torch._dynamo.config.recompile_limit=%d) %d time(s), so every new shape runs "
                "eager from now on; bucket the texts (data.text_padding=bucket) or set "
                "trainer.compile_dynamic=true",
                torch._dynamo.config.recompile_limit,
                hits - self.start,
            )
            self.warned = hits
        return hits - self.start


def check_cuda_graph_mode(trainer: TrainerSchema) -> None:
    """Refuse a compile mode that replays CUDA graphs with the settings it cannot work with."""
    if not trainer.compile or trainer.compile_mode not in CUDA_GRAPH_MODES:
        return
    conflicts = []
    if trainer.compile_dynamic:
        conflicts.append("trainer.compile_dynamic=true (shape-generic graphs: a CUDA graph holds one shape)")
    if trainer.grad_checkpointing:
        conflicts.append(
            "trainer.grad_checkpointing=true (the backward pass re-runs each block's graph while "
            "the outputs of its first replay are still needed)"
        )
    if conflicts:
        raise ValueError(
            f"trainer.compile_mode={trainer.compile_mode} replays CUDA graphs, which cannot work with "
            f"{' and '.join(conflicts)}; set those to false, or trainer.compile_mode=default or "
            "max-autotune-no-cudagraphs"
        )


def check_fp8_batch(trainer: TrainerSchema) -> None:
    """Refuse a micro batch torchao's float8 backward cannot multiply (`FP8_BATCH_MULTIPLE`)."""
    size = trainer.micro_batch_size
    if trainer.fp8 and size % FP8_BATCH_MULTIPLE:
        fitting = -(-size // FP8_BATCH_MULTIPLE) * FP8_BATCH_MULTIPLE
        raise ValueError(
            f"trainer.fp8=true with trainer.micro_batch_size={size}: expected a multiple of "
            f"{FP8_BATCH_MULTIPLE} (torchao's float8 weight gradients sum over the micro batch's "
            f"tokens, one per sample in the last block); set trainer.micro_batch_size={fitting} "
            "(and trainer.global_batch_size to a multiple of it) or trainer.fp8=false"
        )


def convert_to_fp8(backbone: ViltBackbone) -> None:
    """`trainer.fp8`: the transformer blocks' linear layers as torchao's float8 training linears
    (fp8 matrix products with dynamic scaling; parameter names and fp32 master weights stay).

    Unlike the other levers this changes the numerics beyond rounding noise, so it is part of
    what the run is (not resumable with another value). Needs torchao and a GPU with fp8 tensor
    cores (H100 and later); layers whose sizes are not multiples of 16 stay as they are.
    """
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as err:
        raise MissingPackageError(
            "trainer.fp8=true needs torchao (pip install torchao), which is not importable here; "
            "set trainer.fp8=false"
        ) from err

    def fits(module: nn.Module, _: str) -> bool:
        return not isinstance(module, nn.Linear) or (
            module.in_features % 16 == 0 and module.out_features % 16 == 0
        )

    for block in backbone.blocks:
        convert_to_float8_training(block, module_filter_fn=fits)
