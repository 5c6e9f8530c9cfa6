"""Checkpoints in the run dir: written atomically, the last k kept, the latest found on resume.

`accelerator.save_state` writes model, optimizer, scheduler, GradScaler and every process's RNG
state. It writes into a hidden temporary directory that is renamed into place only once every
process has finished and the trainer state is written: a job killed mid-save leaves a `.tmp-*`
directory that is never mistaken for a checkpoint, and the previous good one stays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"
_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / TRAINER_STATE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def read_trainer_state(path: Path) -> dict[str, Any]:
    state_file = Path(path) / TRAINER_STATE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete vilt_lab checkpoint: {TRAINER_STATE} is missing")
    return json.loads(state_file.read_text())


class CheckpointManager:
    """Saves and finds checkpoints under `root` (the run dir's `checkpoints/`)."""

    def __init__(self, root: Path, accelerator, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"trainer.keep_last={keep_last} must be at least 1")
        self.root = Path(root)
        self.accelerator = accelerator
        self.keep_last = keep_last

    def save(self, step: int, trainer_state: dict[str, Any], keep_step: int | None = None) -> Path:
        """Collective: every process must call it at the same step. Pruning keeps the last
        ``keep_last`` checkpoints and the one of ``keep_step`` (the best evaluation so far)."""
        acc = self.accelerator
        final = self.root / checkpoint_name(step)
        tmp = self.root / f".tmp-{final.name}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # a leftover from a save that was killed
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / TRAINER_STATE).write_text(json.dumps({"step": step, **trainer_state}, indent=1))
            if final.exists():  # re-saving a step after a resume: replace the old copy
                shutil.rmtree(final)
            os.replace(tmp, final)
            keep = checkpoint_name(keep_step) if keep_step is not None else None
            for old in list_checkpoints(self.root)[: -self.keep_last]:
                if old.name != keep:
                    shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def load(self, path: Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler and RNG from `path`; return its trainer state."""
        state = read_trainer_state(path)
        self.accelerator.load_state(str(path))
        return state
