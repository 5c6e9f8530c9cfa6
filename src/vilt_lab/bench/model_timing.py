"""Timing helpers of the model benchmark: interleaved rounds, medians, peak memory, matmul peak.

Two implementations timed one after the other on a shared machine see different load; timing
them in alternating rounds (ours, HF, HF, ours, ...) spreads whatever else runs over both alike,
and the median of the per-call times drops the rounds a burst of load spoilt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device: CUDA kernels run asynchronously, so a clock read without waiting
    would time their launch only."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Per-call seconds of one contestant over every round."""

    seconds: list[float]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def calls(self) -> int:
        return len(self.seconds)


def interleaved_rounds(
    contestants: Mapping[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    calls_per_round: int,
    warmup: int,
) -> dict[str, Timing]:
    """Time each contestant ``calls_per_round`` calls per round, ``rounds`` rounds, alternating.

    Every contestant first makes ``warmup`` untimed calls (allocator, caches, lazy init). The
    order inside a round is reversed every other round, so neither always runs right after the
    other (a contestant that leaves the caches cold or the allocator fragmented would otherwise
    always penalise the same one).
    """
    if rounds < 1 or calls_per_round < 1 or warmup < 0:
        raise ValueError(
            f"need rounds, calls >= 1 and warmup >= 0; got {rounds}, {calls_per_round}, {warmup}"
        )
    names = list(contestants)
    for name in names:
        for _ in range(warmup):
            contestants[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            for _ in range(calls_per_round):
                synchronize(device)
                start = time.perf_counter()
                contestants[name]()
                synchronize(device)
                seconds[name].append(time.perf_counter() - start)
    return {name: Timing(values) for name, values in seconds.items()}


def _rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _release_freed_host_memory() -> None:
    """Give glibc's cached free memory back to the OS, so the RSS before a step is its floor
    (without it a step that reuses memory the last one freed shows no growth at all)."""
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def step_memory_growth(fn: Callable[[], object], device: torch.device) -> tuple[float | None, str]:
    """Memory one call of ``fn`` needs beyond what was allocated before it: (bytes or None, how).

    CUDA: ``max_memory_allocated`` during the call minus ``memory_allocated`` before it
    (activations, gradients, temporaries; both models live on the device, so the device-wide
    figure would charge each with the other's weights). CPU: the growth of the resident set
    during the call, sampled every millisecond from a thread after freed memory was returned to
    the OS (glibc would otherwise serve the step from memory the last step freed, unseen).
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before), "CUDA allocator peak"
    if not _rss_bytes():
        return None, "n/a (no /proc/self/statm)"
    _release_freed_host_memory()
    before = _rss_bytes()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return float(max(peak, _rss_bytes()) - before), "resident-set growth (CPU)"


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes a training run holds between steps: parameters and the optimizer's state tensors."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    moments = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )
    return params + moments


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """FLOP/s of a square ``size`` matmul in ``dtype`` on ``device``, the fastest of ``repeats``
    after one warm-up: the dense rate MFU is measured against (measured here, not a datasheet's)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
