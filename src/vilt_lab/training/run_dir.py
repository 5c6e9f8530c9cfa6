"""The run directory: a function of the config, and what every run writes into it.

A run dir named from the config (plus an optional name) lets `resume=latest` find a run again
from the same command line, without copying paths around (audiocraft's "signature" idea).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config.keys import may_change_keys
from ..config.schema import TrainSchema
from .run_log import RUN_LOG_NAME

RUN_CONFIG_NAME = "config.yaml"  # the resolved config every run dir holds

# Keys that say how or where a run runs, not what it trains (a key covers everything under it),
# as their declarations say (vilt_lab.config.schema, `may_change`). They are left out of the
# run-dir hash, so `trainer.grad_checkpointing=true` to resume on a smaller GPU finds the same run
# dir, and they are the only keys a resume may change. Everything else (model, objectives, data,
# seed, schedule, optimizer, precision) defines the run.
MAY_CHANGE = may_change_keys(TrainSchema)
RESUME_HISTORY = "resume_history.jsonl"


def flat_config(cfg: DictConfig | dict) -> dict[str, Any]:
    """The resolved config as {dotted key: leaf value}."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value

    walk("", values)
    return flat


def may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


def config_hash(cfg: DictConfig) -> str:
    """8 hex digits over the resolved config minus the keys that may change (`MAY_CHANGE`)."""
    identity = {k: v for k, v in flat_config(cfg).items() if not may_change(k)}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded, current)} for every leaf that differs (a missing key is None)."""
    return {
        key: (recorded.get(key), current.get(key))
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    }


class ResumeRefused(ValueError):
    """A resume whose config differs from the run's record in a key that defines the run."""


def check_resume(run_dir: Path, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Compare `cfg` with the config `run_dir` recorded; return the changes a resume may make,
    or refuse (listing every key) when a setting that defines the run differs. Reads only."""
    record = Path(run_dir) / RUN_CONFIG_NAME
    if not record.is_file():
        return {}
    changes = config_changes(flat_config(OmegaConf.load(record)), flat_config(cfg))
    refused = {k: v for k, v in changes.items() if not may_change(k)}
    if refused:
        lines = "\n".join(f"  {k}: {old!r} (recorded) -> {new!r} (now)" for k, (old, new) in refused.items())
        raise ResumeRefused(
            f"resume refused: {record} records other values for settings that define the run:\n{lines}\n"
            "Resume with the recorded values, or start a new run (name=<new name>). Only these may "
            f"change on resume: {', '.join(MAY_CHANGE)}"
        )
    return {k: v for k, v in changes.items() if k not in ("resume",)}


def record_resume(
    run_dir: Path, step: int, changes: dict[str, tuple[Any, Any]], overrides: list[str]
) -> None:
    """Append one resume (its step, the changed settings, the command line) to the run's history;
    the original config.yaml stays as it was written. Main process only."""
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "changes": {k: {"recorded": old, "now": new} for k, (old, new) in changes.items()},
        "overrides": list(overrides),
    }
    with (Path(run_dir) / RUN_CONFIG_NAME).with_name(RESUME_HISTORY).open("a") as f:
        f.write(json.dumps(entry, default=str) + "\n")


# What an earlier attempt leaves that a fresh start must not append to.
_ATTEMPT_FILES = ("metrics.jsonl", "summary.json", RESUME_HISTORY, RUN_LOG_NAME)


def set_aside_earlier_attempt(run_dir: Path) -> Path | None:
    """Move what an earlier, checkpoint-less attempt left in `run_dir` (its metrics, summary,
    resume history, train.log) into `earlier_attempts/<n>/`, so a fresh start does not log step 5 twice and
    nothing is lost. Main process only; returns where they went."""
    found = [Path(run_dir) / name for name in _ATTEMPT_FILES if (Path(run_dir) / name).exists()]
    if not found:
        return None
    attempts = Path(run_dir) / "earlier_attempts"
    target = attempts / str(len(list(attempts.glob("*"))) if attempts.is_dir() else 0)
    target.mkdir(parents=True)
    for path in found:
        path.rename(target / path.name)
    return target


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
    """The installed vilt_lab version, and the commit and dirty flag of its source checkout.

    A wheel install has no checkout: only the version is known. Its site-packages may still sit
    inside some other git repository (a virtualenv in a project's tree), whose commit says nothing
    about vilt_lab, so a commit is reported only when the repository holds this very package.
    """
    package_dir = Path(__file__).resolve().parent
    info: dict[str, Any] = {"version": _installed_version()}
    cwd = cwd or package_dir
    try:
        toplevel = _git(cwd, "rev-parse", "--show-toplevel")
        if cwd == package_dir and (Path(toplevel) / "src" / "vilt_lab").resolve() != package_dir:
            return info | {"commit": None, "dirty": None, "error": "vilt_lab is not run from a git checkout"}
        commit = _git(cwd, "rev-parse", "HEAD")
        dirty = bool(_git(cwd, "status", "--porcelain", "--untracked-files=no"))
        return info | {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError) as err:
        return info | {"commit": None, "dirty": None, "error": str(err).strip()[:200]}


def _git(cwd: Path, *args: str) -> str:
    """`git <args>` in `cwd`: its stdout, stripped."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _installed_version() -> str | None:
    """vilt_lab's version as pip installed it (None when it was not installed, only imported)."""
    try:
        return importlib.metadata.version("vilt_lab")
    except importlib.metadata.PackageNotFoundError:
        return None


def write_run_files(run_dir: Path, cfg: DictConfig, overrides: list[str], git: dict[str, Any]) -> None:
    """config.yaml (resolved), overrides.yaml and git.json: call on the main process only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_CONFIG_NAME).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    (run_dir / "git.json").write_text(json.dumps(git, indent=1))
