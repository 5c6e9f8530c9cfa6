"""What a finished run left in its run directory."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights of the run's last checkpoint."""
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return load_file(last / "model.safetensors")
