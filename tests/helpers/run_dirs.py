"""What a finished run left in its run directory."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model weights of the run's last checkpoint."""
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return load_file(last / "model.safetensors")


def run_dirs(runs: Path) -> list[Path]:
    """Every run directory under `runs` (a directory holding a config.yaml), sorted."""
    return sorted(path.parent for path in Path(runs).rglob("config.yaml"))


def only_run_dir(runs: Path) -> Path:
    """The one run directory under `runs` (a command line names its run: training.run_name)."""
    found = run_dirs(runs)
    assert len(found) == 1, f"expected one run dir under {runs}, found {found}"
    return found[0]
