"""`vilt-train resume=<run dir>` (or one of its checkpoints): continue a run without retyping it.

The run's recorded config.yaml is the config; what the command line sets on top (a smaller
micro batch, grad checkpointing, another logger) is applied to it, and the resume check then
refuses any of those that would change what the run trains (`run_dir.check_resume`), as it does
for a resume by the original command.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig, OmegaConf

from ..config.exclusive import overridden_keys
from .run_dir import RunDir, is_run_checkpoint

log = logging.getLogger(__name__)
# `resume=` values that look a checkpoint up in the command's own run dir.
LOOKUPS = ("latest", "auto")
_ABSENT = object()


def resumed_run(resume: str | None) -> tuple[RunDir, str] | None:
    """The run `resume=` names and what to resume it from (`auto`: its newest complete
    checkpoint, or a fresh start in place when it has none; a path: that checkpoint); None when
    `resume` is not a run dir or a run's checkpoint (null, latest, auto, a foreign checkpoint)."""
    if resume is None or resume in LOOKUPS:
        return None
    path = Path(resume)
    if RunDir(path).config.is_file():
        return RunDir(path), "auto"
    if is_run_checkpoint(path):
        return RunDir.of_checkpoint(path), str(path)
    return None


def config_to_resume(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig | None:
    """The config that continues the run `cfg.resume` names: its config.yaml, the command line's
    other settings on top, and its name and runs dir pointing at it (where it is now, should it
    have been moved); None when `cfg.resume` names no run (see `resumed_run`)."""
    target = resumed_run(cfg.resume)
    if target is None:
        return None
    run_dir, resume = target
    recorded = OmegaConf.load(run_dir.config)
    not_applied = []
    for key in overridden_keys(overrides):
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # a group of global settings (experiment=, debug=): no key of its own
            not_applied.append(key)
        elif key != "resume":
            OmegaConf.update(recorded, key, value, force_add=True)
    if not_applied:
        log.warning(
            "resume=%s: %s not applied on top of the run's recorded config (it holds what they set); "
            "pass the settings themselves to change them",
            cfg.resume,
            ", ".join(f"{key}=" for key in not_applied),
        )
    recorded.resume = resume
    name = PurePosixPath(str(recorded.name)) if recorded.get("name") else None
    path = run_dir.path.resolve()
    if name is not None and path.parts[-len(name.parts) :] == name.parts:
        recorded.paths.runs_dir = str(path.parents[len(name.parts) - 1])
    else:
        recorded.name, recorded.paths.runs_dir = path.name, str(path.parent)
    return recorded
