"""Seeds of the per-step random draws (ITM negatives, patch sampling, retrieval negatives)."""

from __future__ import annotations


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    """A seed for the random draws of one micro-batch (Python's int-tuple hash is not salted).

    A function of (seed, rank, step, micro-batch) only, so a resumed run draws what a straight run
    would have; evaluation uses step -1.
    """
    return hash((seed, rank, step, micro)) & 0x7FFF_FFFF_FFFF_FFFF
