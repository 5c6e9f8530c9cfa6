"""The host syncs one call makes, by where they happen (CUDA's sync debug mode); shared by
bench/sync_debug_step.py (a training step) and bench/decode_rate.py (`to_device`)."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

SYNC_WARNING = "synchronizing CUDA operation"  # the text CUDA's sync debug mode warns with


def sync_sites(call: Callable[[], object]) -> dict[str, int] | None:
    """Run ``call`` under ``torch.cuda.set_sync_debug_mode("warn")``; the syncs it made, by the
    file and line of the Python call that reached each one (a warning from C++ is attributed to
    its Python caller). None without CUDA, where nothing can be counted (``call`` still runs)."""
    if not torch.cuda.is_available():
        call()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            call()
            torch.cuda.synchronize()  # the call's kernels have run: its warnings are in
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(
        Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_WARNING in str(w.message))
    )
