"""Speed levers applied to a built backbone in place: `trainer.compile` (per-block
`torch.compile`) and `trainer.fp8` (torchao float8 linears). Parameter names stay, so
checkpoints are unaffected."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config.errors import MissingPackageError
from ..model import ViltBackbone


def compile_blocks(backbone: ViltBackbone, dynamic: bool, **options: Any) -> None:
    """`torch.compile` each transformer block in place (parameter names stay).

    dynamic=True (`trainer.compile_dynamic`, the default) compiles shape-generic kernels once: the
    text length and the number of image tokens change from batch to batch. False compiles one
    static graph per shape (faster kernels, and the precondition of CUDA graphs): with
    `data.text_padding=bucket` and a fixed patch count that is one graph per text bucket.
    options: more `torch.compile` arguments: `mode` (`trainer.compile_mode`; "reduce-overhead"
    replays CUDA graphs, for fixed shapes: inference, or training with dynamic=False), a backend.
    """
    for block in backbone.blocks:
        block.compile(dynamic=dynamic, **options)


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
