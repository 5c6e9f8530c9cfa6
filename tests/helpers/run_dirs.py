"""What a finished run left in its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from vilt_lab.training.checkpoint import MANIFEST, TRAINER_STATE


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


def set_manifest_size(checkpoint: Path, name: str) -> None:
    """Make the manifest agree with a replaced file, so the file's reader itself is reached."""
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][name] = (checkpoint / name).stat().st_size
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


def record_best(checkpoint: Path, step: int) -> None:
    """Record `step` as the best evaluation in `checkpoint`'s trainer state (its manifest kept
    in agreement), as a run that selects on a metric leaves its newest checkpoint."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text())
    state["best"] = {"step": step, "metric": "val/loss", "value": 0.0}
    (checkpoint / TRAINER_STATE).write_text(json.dumps(state))
    set_manifest_size(checkpoint, TRAINER_STATE)
