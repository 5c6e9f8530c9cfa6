"""The run directory: a function of the config, and what every run writes into it.

A run dir named from the config (plus an optional name) lets `resume=latest` find a run again
from the same command line, without copying paths around (audiocraft's "signature" idea).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

RUN_CONFIG_NAME = "config.yaml"  # the resolved config every run dir holds

# Keys that say how or where to run, not what is trained: they do not change the run's identity.
_NOT_IDENTITY = ("name", "resume", "evaluate", "logger", "paths", "launcher")
_NOT_IDENTITY_TRAINER = (
    "progress",
    "log_every",
    "keep_last",
    "eval_batches",
    "eval_every",
    "evals_per_epoch",
)
_NOT_IDENTITY_DATA = ("num_workers",)


def config_hash(cfg: DictConfig) -> str:
    """8 hex digits over the resolved config minus the keys that do not change what is trained."""
    values = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_IDENTITY:
        values.pop(key, None)
    for key in _NOT_IDENTITY_TRAINER:
        values.get("trainer", {}).pop(key, None)
    for key in _NOT_IDENTITY_DATA:
        values.get("data", {}).pop(key, None)
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(cfg: DictConfig) -> str:
    return cfg.name if cfg.get("name") else f"{cfg.tag}-{config_hash(cfg)}"


def sweep_job_name(cfg: DictConfig, job_num: int) -> str:
    """The name of job `job_num` of a multirun: the run name and the job's number, so the jobs of
    a sweep never share a run dir (a fixed `name`, as the demo's, would otherwise be every job's;
    a config hash leaves out settings that may change on resume, and a sweep may sweep those)."""
    return f"{run_name(cfg)}-{job_num}"


def resolve_run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir) / run_name(cfg)


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the source tree, or why they are unknown."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError) as err:
        return {"commit": None, "dirty": None, "error": str(err).strip()[:200]}


def write_run_files(run_dir: Path, cfg: DictConfig, overrides: list[str], git: dict[str, Any]) -> None:
    """config.yaml (resolved), overrides.yaml and git.json: call on the main process only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_CONFIG_NAME).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    (run_dir / "git.json").write_text(json.dumps(git, indent=1))
