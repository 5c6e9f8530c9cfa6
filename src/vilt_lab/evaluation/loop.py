"""The prediction loop: each process predicts its own share, records are gathered once at the end.

Ranks read different shards and can finish with different numbers of batches (WebDataset
splits by shard), so nothing inside the loop may be a collective: one all-gather of Python objects after the
last batch is the only cross-process step, and it takes shares of any length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from vilt_lab.data.device_decode import decode_on_device
from vilt_lab.utils.progress import ProgressStyle, progress_bar

Record = dict[str, Any]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors to ``device`` (non-blocking from pinned memory); lists of ids and answers stay.
    JPEGs the loader left to the device (``data.decode=gpu``) are decoded into ``image`` there."""
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    return decode_on_device(moved)


def gather_records(records: list[Record], accelerator: Accelerator | None) -> list[Record]:
    """Every process's records, in rank order (single process: ``records`` itself)."""
    if accelerator is None or accelerator.num_processes == 1:
        return records
    return list(gather_object(records))


def predict_records(
    module: torch.nn.Module,
    batches: Iterable[dict[str, Any]],
    to_records: Callable[[dict[str, Any], dict[str, torch.Tensor]], list[Record]],
    accelerator: Accelerator | None = None,
    *,
    desc: str = "eval",
    progress: ProgressStyle | bool = True,
) -> list[Record]:
    """Run ``module.predict`` over ``batches`` (this process's share) in eval mode and return every
    process's records: ``to_records(batch, predictions)`` makes one record per sample, keyed by
    the sample's ids so the order of shares does not matter."""
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    main = accelerator is None or accelerator.is_main_process
    was_training = module.training
    module.eval()
    records: list[Record] = []
    try:
        for batch in progress_bar(batches, desc=desc, style=ProgressStyle.of(progress).only_if(main)):
            batch.pop("skipped", None)
            with accelerator.autocast() if accelerator is not None else nullcontext():
                predictions = module.predict(to_device(batch, device))
            records.extend(to_records(batch, {k: v.cpu() for k, v in predictions.items()}))
    finally:
        module.train(was_training)
    return gather_records(records, accelerator)
