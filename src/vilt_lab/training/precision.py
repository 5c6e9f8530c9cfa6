"""The precision a run really trains in, which `trainer.precision: null` leaves to the launcher.

The recorded config then says null; the effective precision is logged, written to summary.json
and kept in every checkpoint, and a resume in another one is refused, as a changed explicit
`trainer.precision` is (precision defines the run: run_dir.MAY_CHANGE).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator

from .run_dir import ResumeRefused


def effective_precision(accelerator: Accelerator) -> str:
    """bf16, fp16 or no: Accelerate's setting where it autocasts, "no" where it does not (fp16 on
    a CPU is accepted by Accelerate and runs in fp32)."""
    return accelerator.mixed_precision if accelerator.native_amp else "no"


def precision_source(configured: str | None) -> str:
    return (
        "trainer.precision" if configured is not None else "the launcher's setting (trainer.precision=null)"
    )


def check_resumed_precision(state: dict[str, Any], precision: str) -> None:
    """Refuse to continue a checkpoint trained in another precision than `precision`."""
    recorded = state.get("precision")  # absent from checkpoints written before it was kept
    if recorded is not None and recorded != precision:
        raise ResumeRefused(
            f"resume refused: the checkpoint was trained in precision {recorded!r}, this launch "
            f"runs {precision!r}. Launch with --mixed_precision {recorded} or set "
            f"trainer.precision={recorded}, or start a new run (name=<new name>)"
        )


@contextmanager
def float32_matmul_precision(precision: str) -> Iterator[None]:
    """`trainer.float32_matmul_precision` for a block (a run), the previous setting back afterwards.

    PyTorch computes fp32 matrix products in full fp32 by default ("highest"), even on GPUs whose
    TF32 tensor cores do them several times faster with a 10-bit mantissa: an fp32 run
    (`trainer.precision=no`) is slow unless asked otherwise. Under bf16/fp16 autocast most products
    are already low precision; the setting reaches what autocast keeps in fp32. The patch
    embedding's convolution follows cuDNN's own TF32 switch (on by default in PyTorch).
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
