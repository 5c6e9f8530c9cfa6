"""Checkpoints in the run dir: data only, complete or absent, the last good one never lost.

A checkpoint `step_NNNNNNNN/` holds

    model.safetensors                 the task module's weights (what `init_from` and vilt-convert read)
    optimizer.safetensors + .json     AdamW's moments, and its param groups
    scheduler.json, scaler.json       the learning-rate curve's position, fp16's loss scale
    random_states_<rank>.{safetensors,json}   every process's global random states
    trainer_state.json                step, best evaluation, skipped samples, ...
    manifest.json                     every file above with its size: written last

and nothing that is unpickled (see `state_io`). The rules that make a kill at any instant safe
(on a shared filesystem: the main process writes everything but each rank's random states):

* a checkpoint is written into `.tmp-step_N` and renamed into place only once its manifest is
  written; only a directory whose manifest checks out (`verify`) is ever resumed from;
* re-saving an existing step moves the old copy aside (`.old-step_N`) before the new one takes its
  name, and deletes it only after; pruning renames a checkpoint to `.del-step_N` before deleting
  it, so a half-deleted directory is never mistaken for a checkpoint;
* `recover` (run at start-up) finishes whatever a kill interrupted: a complete `.tmp-` or
  `.old-` copy whose step has no complete checkpoint is put back in place, the rest is deleted.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights.checkpoint_io import WEIGHTS_NAME, read_safetensors
from .faults import fault_point
from .nonfinite import check_finite_parameters
from .settings import TrainerSettings
from .state_io import (
    CheckpointFileError,
    capture_rng,
    join_optimizer_state,
    read_json,
    restore_rng,
    split_optimizer_state,
    write_json,
    write_tensors,
)
from .storage import StorageError

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
FORMAT = "vilt_lab-checkpoint/1"
_PREFIX = "step_"
_TMP, _OLD, _DEL = ".tmp-", ".old-", ".del-"


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def _step_of(path: Path) -> int:
    return int(path.name[len(_PREFIX) :])


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under `root` (verified or not), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=_step_of)


def verify(path: Path) -> str | None:
    """None when `path` is a complete checkpoint (its manifest's files all there, at their
    sizes); otherwise why not."""
    manifest_file = Path(path) / MANIFEST
    if not manifest_file.is_file():
        return f"no {MANIFEST} (an interrupted save, or written by a vilt_lab before the manifest)"
    try:
        manifest = json.loads(manifest_file.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable {MANIFEST} ({err})"
    for name, size in files.items():
        file = Path(path) / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
    return None


def latest_checkpoint(root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint under `root` that verifies, and the newer ones skipped with why."""
    skipped = []
    for path in reversed(list_checkpoints(root)):
        reason = verify(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def checkpoint_step(path: Path) -> int:
    """The step of a verified checkpoint, from its manifest."""
    return int(read_json(Path(path) / MANIFEST)["step"])


def _remove(path: Path) -> None:
    """Delete a directory so that no instant of the deletion leaves it looking like a checkpoint:
    rename first (atomic), then delete the renamed copy."""
    doomed = path.with_name(_DEL + path.name)
    os.replace(path, doomed)
    fault_point("remove:renamed")
    shutil.rmtree(doomed)


def _fsync_tree(path: Path) -> None:
    # A checkpoint that survives a process kill but not a node crash is not a checkpoint: flush
    # its files to disk before the manifest says they are complete.
    for file in path.iterdir():
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class TrainingState:
    """What a checkpoint restores: the unwrapped model, its optimizer, scheduler and loss scaler."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any | None = None  # torch.amp.GradScaler under fp16


class CheckpointManager:
    """Saves, verifies, finds and restores checkpoints under `root` (the run dir's `checkpoints/`),
    and decides when the loop saves and which checkpoint is the best.

    A step saves every `trainer.ckpt_every` steps, at the last step, and when its evaluation set
    a new best `select_metric` (so the best weights are kept even between checkpoint steps).
    Pruning keeps the last `trainer.keep_last` checkpoints and the best one.
    """

    def __init__(self, root: Path, accelerator, state: TrainingState, settings: TrainerSettings) -> None:
        self.root = Path(root)
        self.accelerator = accelerator
        self.state = state
        self.settings = settings
        # {"step", "metric", "value"} of the best evaluation so far (kept in every checkpoint).
        self.best: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- deciding
    def due(self, step: int) -> bool:
        """Whether the loop saves after optimizer step `step` (once its evaluation, if any, is
        selected: a new best at `step` makes it a saving step)."""
        s = self.settings
        return (
            step % s.trainer.ckpt_every == 0
            or step == s.max_steps
            or (self.best is not None and self.best["step"] == step)
        )

    def select(self, step: int, values: dict[str, float]) -> None:
        """Note the evaluation of `step`: the best so far when its `select_metric` improved on
        the best (higher or lower as `select_mode` says; a non-finite value never is)."""
        metric, mode = self.settings.select_metric, self.settings.select_mode
        if metric is None:
            return
        if metric not in values:
            raise KeyError(
                f"task.select_metric={metric!r} is not among the evaluation's metrics {sorted(values)}"
            )
        value = float(values[metric])
        if not math.isfinite(value):
            return
        better = self.best is None or (
            value > self.best["value"] if mode == "max" else value < self.best["value"]
        )
        if better:
            self.best = {"step": step, "metric": metric, "value": value}

    # ----------------------------------------------------------------------------- saving
    def save(self, step: int, trainer_state: dict[str, Any]) -> Path:
        """Collective: every process must call it at the same step. Refused (NonFiniteError)
        when a parameter is non-finite, so such weights never replace a good checkpoint. A write
        the storage refuses (a full disk...) stops the run (`StorageError`) with the last complete
        checkpoint in place."""
        check_finite_parameters(self.state.model, step)
        final = self.root / checkpoint_name(step)
        try:
            self._save(step, trainer_state, final)
        except OSError as err:
            raise self._failed_save(final, err) from err
        return final

    def _failed_save(self, final: Path, err: OSError) -> StorageError:
        """Undo what a failed save left (main process), and the error that says so."""
        if self.accelerator.is_main_process:
            try:  # the incomplete copy goes (freeing its space), a copy moved aside comes back
                recover(self.root)
            except OSError as cleanup_err:  # the next start's `recover` finishes it
                log.warning("cleaning up after the failed save of %s: %s", final, cleanup_err)
        last, _ = latest_checkpoint(self.root)
        kept = (
            f"; the last complete checkpoint, {last}, is kept: once there is room, resume=auto continues from it"
            if last is not None
            else "; the run has no complete checkpoint yet"
        )
        return StorageError("saving checkpoint", final, err, kept)

    def _save(self, step: int, trainer_state: dict[str, Any], final: Path) -> None:
        main = self.accelerator.is_main_process
        rank = self.accelerator.process_index
        tmp = final.with_name(_TMP + final.name)
        with self._on_every_process():
            if main:
                self.root.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a save that was killed
                tmp.mkdir()
        with self._on_every_process():
            rng_tensors, rng_meta = capture_rng()
            write_tensors(tmp / f"random_states_{rank}.safetensors", rng_tensors)
            write_json(tmp / f"random_states_{rank}.json", rng_meta)
            if main:
                self._write_main_files(tmp, step, trainer_state)
        with self._on_every_process():
            if main:
                fault_point("save:written")
                _fsync_tree(tmp)
                files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
                write_json(tmp / MANIFEST, {"format": FORMAT, "step": step, "files": files})
                fault_point("save:manifest")
                self._put_in_place(tmp, final)
                self._prune(self.best["step"] if self.best is not None else None)

    @contextmanager
    def _on_every_process(self) -> Iterator[None]:
        """A part of the save that every process runs, then waits for the others (a barrier that
        also tells whether each one's writes succeeded): a write refused on one process stops
        every process here, none goes on to wait for it at the next collective."""
        refused: OSError | None = None
        try:
            yield
        except OSError as err:
            refused = err
        acc = self.accelerator
        failures = acc.reduce(torch.tensor([float(refused is not None)], device=acc.device), "sum")
        if refused is not None:
            raise refused
        if failures.item() > 0:
            raise OSError(errno.EIO, "another process could not write its part (its reason is in train.log)")

    def _write_main_files(self, tmp: Path, step: int, trainer_state: dict[str, Any]) -> None:
        write_tensors(tmp / WEIGHTS_NAME, self.state.model.state_dict())
        optimizer_tensors, optimizer_meta = split_optimizer_state(self.state.optimizer.state_dict())
        write_tensors(tmp / "optimizer.safetensors", optimizer_tensors)
        write_json(tmp / "optimizer.json", optimizer_meta)
        write_json(tmp / "scheduler.json", self.state.scheduler.state_dict())
        if self.state.scaler is not None:
            write_json(tmp / "scaler.json", self.state.scaler.state_dict())
        write_json(
            tmp / TRAINER_STATE,
            {"step": step, "num_processes": self.accelerator.num_processes, **trainer_state},
        )

    def _put_in_place(self, tmp: Path, final: Path) -> None:
        if final.exists():  # re-saving a step after a resume: the old copy goes only after
            old = final.with_name(_OLD + final.name)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            fault_point("save:aside")
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)

    def _prune(self, keep_step: int | None) -> None:
        keep = checkpoint_name(keep_step) if keep_step is not None else None
        for old in list_checkpoints(self.root)[: -self.settings.trainer.keep_last]:
            if old.name != keep:
                fault_point("prune")
                _remove(old)

    # ----------------------------------------------------------------------------- loading
    def load(self, path: Path) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, scaler, this process's random states and the best
        evaluation from `path`; return its trainer state. Any problem is an error naming the file."""
        path = Path(path)
        reason = verify(path)
        if reason is not None:
            raise CheckpointFileError(path / MANIFEST, f"{path} is not a complete checkpoint: {reason}")
        trainer_state = read_json(path / TRAINER_STATE)
        state = self.state
        _load_into(
            path / WEIGHTS_NAME, lambda: state.model.load_state_dict(read_safetensors(path / WEIGHTS_NAME))
        )
        _load_into(
            path / "optimizer.json",
            lambda: state.optimizer.load_state_dict(
                join_optimizer_state(
                    read_safetensors(path / "optimizer.safetensors"), read_json(path / "optimizer.json")
                )
            ),
        )
        _load_into(
            path / "scheduler.json",
            lambda: state.scheduler.load_state_dict(read_json(path / "scheduler.json")),
        )
        if state.scaler is not None and (path / "scaler.json").is_file():
            _load_into(
                path / "scaler.json", lambda: state.scaler.load_state_dict(read_json(path / "scaler.json"))
            )
        self._restore_rng(path, int(trainer_state.get("num_processes", 1)))
        self.best = trainer_state.get("best")
        return trainer_state

    def _restore_rng(self, path: Path, saved_processes: int) -> None:
        rank = self.accelerator.process_index
        tensors_file = path / f"random_states_{rank}.safetensors"
        if rank >= saved_processes:
            # More processes than the run had: this rank has no recorded state. Its data and
            # negatives are functions of (seed, rank, step) anyway; only dropout draws differ.
            log.warning("%s has no random state for process %d: it keeps its own", path, rank)
            return
        meta_file = tensors_file.with_suffix(".json")
        _load_into(meta_file, lambda: restore_rng(read_safetensors(tensors_file), read_json(meta_file)))


# --------------------------------------------------------------------------------- recovery
def recover(root: Path) -> None:
    """Finish what a killed save or prune left under `root`. Main process only, before anything
    looks for the latest checkpoint."""
    if not Path(root).is_dir():
        return
    for leftover in sorted(Path(root).iterdir()):
        for prefix in (_TMP, _OLD):
            if leftover.is_dir() and leftover.name.startswith(prefix):
                _recover_copy(leftover, Path(root) / leftover.name[len(prefix) :])
    for leftover in Path(root).glob(_DEL + "*"):
        shutil.rmtree(leftover)


def _recover_copy(copy: Path, final: Path) -> None:
    copy_problem = verify(copy)
    if copy_problem is not None or verify(final) is None:
        shutil.rmtree(copy)
        return
    if final.exists():
        _remove(final)
    os.replace(copy, final)
    log.warning("recovered checkpoint %s from %s, left by an interrupted save", final, copy.name)


def resume_checkpoint(root: Path, mode: str | None) -> Path | None:
    """The checkpoint `resume=<mode>` continues from, or None for a fresh start.

    mode: null (fresh; refused when `root` holds checkpoints), ``latest`` (the newest complete
    checkpoint; an error when there is none), ``auto`` (latest, else fresh), or a checkpoint path.
    Newer checkpoints that fail verification are skipped with a warning saying why.
    """
    root = Path(root)
    if mode is None:
        existing = list_checkpoints(root)
        if existing:
            raise FileExistsError(
                f"run dir {root.parent} already holds checkpoint {existing[-1].name}; pass resume=latest to "
                "continue it, or name=<new name> for a new run"
            )
        return None
    if mode not in ("latest", "auto"):
        path = Path(mode)
        reason = verify(path)
        if reason is not None:
            raise CheckpointFileError(
                path / MANIFEST, f"resume={mode} is not a complete checkpoint: {reason}"
            )
        return path
    found, skipped = latest_checkpoint(root)
    for path, reason in skipped:
        log.warning("resume=%s: skipping %s: %s", mode, path, reason)
    if found is None and mode == "latest":
        raise FileNotFoundError(f"resume=latest: no complete checkpoint under {root}")
    return found


def _load_into(file: Path, load) -> None:
    """Run `load`; a state that does not fit (wrong keys, shapes, types) names `file`."""
    try:
        load()
    except CheckpointFileError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        raise CheckpointFileError(file, f"does not fit this run ({type(err).__name__}: {err})") from err
