"""`trainer.deterministic`: bit-reproducible runs, on CPU at any thread count and on GPUs.

What made two runs of one config differ (1.9e-4 after 60 demo steps at two threads,
bit-identical at one): not the data (both runs read the same batches; every random draw is a
function of (seed, rank, step, micro-batch), the stream of (seed, start step, epoch, rank,
worker)), but one op. The backward of the position-table lookup in
`model.embeddings.interpolate_pos_embed`, written as advanced indexing ``table[index]``, is
``index_put_(accumulate=True)``; on CPU, with more than one thread and an update of at least 32768
elements (the demo's 32 x ~60 patches x 64), it adds the many repeated rows with atomic float adds
from every thread, in an order that changes from run to run. Only `pos_embed`'s gradient differed
(by about 5e-11, 1e-7 relative); Adam then turns last-bit differences in the attention key biases,
whose exact gradient is zero (a softmax ignores a shift shared by all its logits), into lr-sized
steps, which is why the key biases carry nearly all of the 1.9e-4.

That lookup is now an embedding (`F.embedding`), whose backward adds in index order at any thread
count, the sums one thread made before, so CPU runs are bit-identical at a fixed thread count
without this switch too. The switch is the guarantee: for GPUs, where many kernels add with
atomics (index/scatter/embedding backward, attention backward, cuBLAS with a shared workspace,
cuDNN's benchmarked algorithm choice), and for any op added later.

What neither gives: the same bits on another number of threads, processes or devices, or another
PyTorch / oneDNN / MKL / CUDA build. Matrix products and reductions split their work by thread
count, so a run resumed with another ``OMP_NUM_THREADS`` continues on slightly different numbers
(3e-5 after 10 demo steps, one thread against two).

Cost, measured on the demo config (micro-batch 32, two CPU threads): none that shows; 20-step runs
ran at 119-171 samples/s with the switch and 113-151 without (four of each, interleaved, on CPUs
shared with other jobs), and fixed-batch forward + backward took 189-190 ms either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# cuBLAS reductions are only reproducible with a fixed workspace per stream: ":4096:8" is eight
# 4 MiB buffers (":16:8" saves the memory and may be slower). PyTorch refuses CUDA matmuls under
# deterministic algorithms without it, and reads it when it first sizes the workspace, so it has
# to be in the environment before the process's first matmul on a GPU. No effect on CPU.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


@dataclass(frozen=True)
class DeterminismSettings:
    """The process-wide switches `make_deterministic` sets (so they can be put back)."""

    algorithms: bool
    warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    mkldnn_deterministic: bool | None  # None: this PyTorch has no such switch


def current_settings() -> DeterminismSettings:
    mkldnn = getattr(torch.backends.mkldnn, "deterministic", None)
    return DeterminismSettings(
        algorithms=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        mkldnn_deterministic=None if mkldnn is None else bool(mkldnn),
    )


def apply_settings(settings: DeterminismSettings) -> None:
    torch.use_deterministic_algorithms(settings.algorithms, warn_only=settings.warn_only)
    torch.backends.cudnn.deterministic = settings.cudnn_deterministic
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if settings.mkldnn_deterministic is not None and hasattr(torch.backends.mkldnn, "deterministic"):
        torch.backends.mkldnn.deterministic = settings.mkldnn_deterministic


def make_deterministic(enabled: bool) -> DeterminismSettings:
    """Switch deterministic algorithms on, or off (PyTorch's defaults); return what was set before.

    Process-wide: call it on every rank before the model runs (on GPUs before the first CUDA
    matmul, see CUBLAS_WORKSPACE_CONFIG). Off leaves ``cudnn.benchmark`` as it was (vilt_lab never
    turns it on) and the environment alone.
    """
    previous = current_settings()
    if not enabled:
        apply_settings(
            DeterminismSettings(
                algorithms=False,
                warn_only=False,
                cudnn_deterministic=False,
                cudnn_benchmark=previous.cudnn_benchmark,
                mkldnn_deterministic=None if previous.mkldnn_deterministic is None else False,
            )
        )
        return previous
    # A value the user set wins (":16:8" is as deterministic). Left set afterwards: it only sizes
    # the cuBLAS workspace.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    apply_settings(
        DeterminismSettings(
            # On CPU: index_put_(accumulate=True), the backward of advanced indexing, adds serially
            # instead of with multi-threaded atomic adds (what made 2-thread demo runs differ
            # before interpolate_pos_embed became an embedding). On GPUs: the deterministic
            # kernels of scatter_add / index_add / index_select / embedding / gather backward,
            # cumsum, conv and SDPA (flash and memory-efficient backward; cuDNN attention is left
            # out), and Inductor's deterministic mode for trainer.compile.
            algorithms=True,
            # An op with no deterministic kernel is an error, not a warning: a run that asked to
            # be exact must not silently be inexact (with warn_only=True, SDPA's
            # memory-efficient backward would stay non-deterministic with only a warning).
            warn_only=False,
            # The patch-embedding convolution on GPUs: cuDNN's deterministic algorithms only, and
            # no benchmarking, which picks the fastest algorithm anew in every process.
            cudnn_deterministic=True,
            cudnn_benchmark=False,
            # oneDNN (CPU convolution): its deterministic mode where PyTorch has the switch. No
            # oneDNN kernel the demo runs was seen to vary without it.
            mkldnn_deterministic=None if previous.mkldnn_deterministic is None else True,
        )
    )
    # Also in force from here: torch.utils.deterministic.fill_uninitialized_memory (default on)
    # fills tensors from torch.empty with NaN, so reading memory nobody wrote is reproducible
    # (and loud); a small cost in memory traffic that did not show on the demo.
    return previous


@contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic algorithms for a block (a run), the previous switches back afterwards.

    ``enabled=False`` changes nothing: a process that switched them on itself keeps them.
    """
    if not enabled:
        yield
        return
    previous = make_deterministic(True)
    try:
        yield
    finally:
        apply_settings(previous)
