"""Where a step's random draws are made.

Every per-step draw (ITM negatives, patch sampling, MPP masks, retrieval negatives) comes from the
step's `torch.Generator`, a function of (seed, rank, step, micro-batch), so a resumed run draws what
a straight run would have. A generator only draws on its own device, so the draw is made there and
moved afterwards: drawing on the data's device instead would fail for a CPU generator and CUDA data,
or silently take another random stream.
"""

from __future__ import annotations

import torch


def draw_device(generator: torch.Generator | None, default: torch.device | str = "cpu") -> torch.device:
    """The device to draw on: `generator`'s own, or `default` when there is no generator
    (then torch's global stream draws)."""
    return generator.device if generator is not None else torch.device(default)
