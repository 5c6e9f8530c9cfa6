"""Our pre-training step as a run takes it, and the batch both sides of the benchmark train on.

Ours is built the way `vilt-train` builds it: the Hydra config composed from conf/ (train.yaml
with `model=<size> objective=[itm,mlm]`), `build.task.build_task` (task module, objectives,
compile switch) and `build.trainer.build_trainer` (settings, AdamW, schedule, the `Trainer`),
without a run dir; each step is `Trainer.train_step`, the step `fit` takes (autocast, backward,
gradient norm and health check, AdamW, schedule). A speed lever that lands in the objectives,
the task module, build/ or the trainer is therefore measured here without touching this file.

The batch is random (timing depends on shapes, not values): uint8 images and every text at full
length (40 tokens), as HF's ViLT pre-training baseline (bench/model_hf.py); 15% of the text positions masked for
MLM (a whole-word mask of ~6 pieces per caption costs the step the same: masking runs in the
data workers on both sides, so the step only sees which positions carry labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from hydra import compose, initialize_config_dir
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count

from vilt_lab.build.task import build_task
from vilt_lab.build.trainer import build_trainer
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.schema import TrainSchema
from vilt_lab.config.typed import typed
from vilt_lab.evaluation.loop import to_device
from vilt_lab.measure.flops import MISSING_FORMULAS
from vilt_lab.model.config import get_config
from vilt_lab.tasks import TaskModule

aten = torch.ops.aten

# BERT's special ids ([PAD], [CLS], [SEP], [MASK]); every vocabulary here is larger than 103.
PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 101, 102, 103
MLM_PROBABILITY = 0.15


def cpu_fused_attention_backward_flops(
    grad_out_shape: torch.Size,
    query_shape: torch.Size,
    key_shape: torch.Size,
    value_shape: torch.Size,
    *args: Any,
    **kwargs: Any,
) -> int:
    """PyTorch's own SDPA backward formula, for the CPU fused kernel its registry lacks (without
    it a CPU backward's attention would count 0 FLOPs, as `model.flops` explains for the forward)."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


STEP_FORMULAS = {
    **MISSING_FORMULAS,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_fused_attention_backward_flops,
}


def compose_pretrain_config(
    model_size: str, objectives: Sequence[str], batch_size: int, extra: Sequence[str] = ()
) -> TrainSchema:
    """train.yaml with ``model=<size> objective=[...]``, one micro-batch per optimizer step, as
    typed objects (no data is read, so the data paths are not validated).

    The text LayerNorm's eps is set to the blocks' (HF ViLT has one eps, `weights.hf.config_to_hf`),
    so the HF copy computes the same function and the retrieval scores can be compared exactly.
    """
    ln_eps = get_config(model_size).ln_eps
    overrides = [
        f"model={model_size}",
        f"objective=[{','.join(objectives)}]",
        f"trainer.micro_batch_size={batch_size}",
        f"trainer.global_batch_size={batch_size}",
        "trainer.progress=false",
        f"++model.text_ln_eps={ln_eps}",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return typed(cfg, TrainSchema)


def build_ours(cfg: TrainSchema, vocab_size: int) -> TaskModule:
    """The task module `vilt-train` would build for ``cfg`` (random weights, no tokenizer read)."""
    return build_task(cfg, vocab_size=vocab_size)


class OurStep:
    """One optimizer step of our trainer on a fixed batch: `Trainer.train_step`, one micro-batch
    (the config's global batch is its micro batch). The trainer has no run dir; its metrics log
    still marks the run's logging steps, where a run's non-finite check reads the device."""

    def __init__(self, cfg: TrainSchema, module: TaskModule, accelerator: Accelerator) -> None:
        self.trainer = build_trainer(cfg, accelerator, module, lambda step: iter(()), {}, run_dir=None)
        self.trainer.model.train()

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        self.trainer.train_step(iter([batch]))


def pretrain_batch(
    vocab_size: int,
    batch_size: int,
    image_hw: tuple[int, int],
    text_len: int,
    device: torch.device,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(our batch on ``device``, ITM labels for HF's side): what the loader hands training.

    Our batch: ``image`` uint8 (B, 3, H, W), ``pixel_mask`` bool, ``input_ids`` and
    ``attention_mask`` (B, T) long, ``mlm_input_ids`` with 15% of the word pieces [MASK]ed and
    ``mlm_labels`` (-100 elsewhere), and what the collate tells the step on the host (``mlm_count``,
    ``image_sizes``). HF's ITM labels are random, as in the baseline (its images are
    not swapped; ours draws its negatives inside the step, which costs ours the gather).
    """
    g = torch.Generator().manual_seed(seed)
    height, width = image_hw
    low = min(1000, vocab_size // 2)  # clear of the special ids
    ids = torch.randint(low, vocab_size, (batch_size, text_len), generator=g)
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    chosen = torch.rand(batch_size, text_len, generator=g) < MLM_PROBABILITY
    chosen[:, 0] = chosen[:, -1] = False
    batch = {
        "image": torch.randint(0, 256, (batch_size, 3, height, width), dtype=torch.uint8, generator=g),
        "pixel_mask": torch.ones(batch_size, height, width, dtype=torch.bool),
        "input_ids": ids,
        "attention_mask": torch.ones(batch_size, text_len, dtype=torch.long),
        "mlm_input_ids": ids.masked_fill(chosen, MASK_ID),
        "mlm_labels": ids.masked_fill(~chosen, -100),
        "mlm_count": int(chosen.sum()),
        "image_sizes": [image_hw] * batch_size,
    }
    itm_labels = torch.randint(0, 2, (batch_size,), generator=g)
    return to_device(batch, device), itm_labels.to(device)


def count_step_flops(step: Any) -> int:
    """FLOPs of one call of ``step`` (forward and backward; AdamW has no matrix products),
    counted by FlopCounterMode with the CPU attention kernels' formulas added."""
    counter = FlopCounterMode(display=False, custom_mapping=STEP_FORMULAS)
    with counter:
        step()
    return counter.get_total_flops()
