"""The run directory: its layout, what every run writes into it, and the resume check.

`paths.runs_dir/<name>`, where the entry point names the run after the command line
(`training.run_name`), so the same command finds its run again. `RunDir` is the one place that
knows where each of its files lives.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config.errors import UserError
from ..config.keys import REQUIRED, declared_keys, may_change_keys
from ..config.schema import TrainSchema
from .checkpoint import TRAINER_STATE, checkpoint_name, latest_checkpoint, verify
from .state_io import read_json
from .storage import write_text_atomically

# Keys that say how or where a run runs, not what it trains (a key covers everything under it),
# as their declarations say (vilt_lab.config.schema, `may_change`). They are left out of a run's
# name, so `trainer.grad_checkpointing=true` to resume on a smaller GPU finds the same run dir,
# and they are the only keys a resume may change. Everything else (model, objectives, data,
# seed, schedule, optimizer, precision) defines the run.
MAY_CHANGE = may_change_keys(TrainSchema)
# Every key's declared default: what a run recorded before the key existed ran with, since a new
# key's default is the behaviour the code had without it. Keys of some alternatives of a tagged
# union (`only`) have per-alternative defaults and are left out.
DECLARED_DEFAULTS = {
    k.key: k.default for k in declared_keys(TrainSchema) if k.default is not REQUIRED and not k.only
}


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


def config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (recorded, current)} for every leaf that differs (a missing key is None)."""
    return {
        key: (recorded.get(key), current.get(key))
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    }


def with_later_keys(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """`recorded` with the keys declared after it was written, at their declared defaults: a run
    from before `augment.mixgen` existed resumes with MixGen off, and is refused with it on."""
    added = {
        key: list(value) if isinstance(value, tuple) else value  # a YAML record has lists
        for key, value in DECLARED_DEFAULTS.items()
        if key in current and key not in recorded
    }
    return {**added, **recorded}


class ResumeRefused(UserError, ValueError):
    """A resume whose config differs from the run's record in a key that defines the run."""


def check_resume(run_dir: RunDir, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Compare `cfg` with the config `run_dir` recorded; return the changes a resume may make,
    or refuse (listing every key) when a setting that defines the run differs. Reads only."""
    record = run_dir.config
    if not record.is_file():
        return {}
    current = flat_config(cfg)
    changes = config_changes(with_later_keys(flat_config(OmegaConf.load(record)), current), current)
    refused = {k: v for k, v in changes.items() if not may_change(k)}
    if refused:
        lines = "\n".join(f"  {k}: {old!r} (recorded) -> {new!r} (now)" for k, (old, new) in refused.items())
        schedule = {k: new for k, (_, new) in refused.items() if k.startswith("schedule.")}
        longer = (
            "To train it longer, start a new run from its weights (a fresh optimizer and schedule):\n"
            f"  vilt-train {shlex.join(run_dir.continuation(schedule))}\n"
            if schedule
            else ""
        )
        raise ResumeRefused(
            f"resume refused: {record} records other values for settings that define the run:\n{lines}\n"
            f"{longer}Resume with the recorded values (resume={run_dir.path} alone does), start a new "
            "run (name=<new name>), or delete the run dir to start it over. Only these may change on "
            f"resume: {', '.join(MAY_CHANGE)}"
        )
    return {k: v for k, v in changes.items() if k not in ("resume",)}


def run_name(cfg: DictConfig) -> str:
    """`name`, which the entry point sets from the command line (`training.run_name`); else the tag."""
    return cfg.name if cfg.name else cfg.tag


def resolve_run_dir(cfg: DictConfig) -> RunDir:
    return RunDir(Path(cfg.paths.runs_dir) / run_name(cfg))


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """The installed vilt_lab version, and the commit and dirty flag of its source checkout.

    A wheel install has no checkout: only the version is known. Its site-packages may still sit
    inside some other git repository (a virtualenv in a project's tree), whose commit says nothing
    about vilt_lab, so a commit is reported only when the repository holds this very package.
    """
    package_dir = Path(__file__).resolve().parents[1]  # vilt_lab/ (this module is in vilt_lab/training/)
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


def is_run_checkpoint(path: str | os.PathLike) -> bool:
    """A training run's `checkpoints/step_*` directory (its weights use the task module's names)."""
    return (Path(path) / TRAINER_STATE).is_file() and RunDir.of_checkpoint(path).config.is_file()


@dataclass(frozen=True)
class RunDir:
    """A run directory, training's or an evaluation's: where each file lives, and writing them.

    config.yaml            the resolved config, written once (a resume never rewrites it)
    overrides.yaml         the command line's overrides (training)
    git.json               vilt_lab's version and commit (`git_info`)
    metrics.jsonl          one line per logged step (`training.metrics_log`)
    summary.json           the headline numbers, written last: a finished run has one
    train.log              every process's log lines (`training.run_log`)
    checkpoints/step_N/    the checkpoints (`training.checkpoint`)
    resume_history.jsonl   one line per resume: its step, changed settings, command line
    stops.jsonl            one line per stop on a signal: its step and the signal
    earlier_attempts/<n>/  what a checkpoint-less earlier attempt left, set aside
    hang-rank<R>.txt       rank R's threads' stacks when its steps stopped (`training.watchdog`)
    """

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.path / "overrides.yaml"

    @property
    def git(self) -> Path:
        return self.path / "git.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def resume_history(self) -> Path:
        return self.path / "resume_history.jsonl"

    @property
    def stops(self) -> Path:
        return self.path / "stops.jsonl"

    @property
    def earlier_attempts(self) -> Path:
        return self.path / "earlier_attempts"

    def hang_report(self, rank: int) -> Path:
        return self.path / f"hang-rank{rank}.txt"

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike) -> RunDir:
        """The run dir a `<run>/checkpoints/step_N` directory belongs to, if it is a run's."""
        return cls(Path(checkpoint).parent.parent)

    @classmethod
    def holding(cls, path: str | os.PathLike) -> RunDir | None:
        """The training run `path` is (a run dir) or belongs to (one of its checkpoints/step_N),
        whose config.yaml records what it was trained with; None for any other path."""
        if cls(Path(path)).is_training_run():
            return cls(Path(path))
        if is_run_checkpoint(path):
            return cls.of_checkpoint(path)
        return None

    # ----------------------------------------------------------------------------- reading
    def is_training_run(self) -> bool:
        """Whether this is a training run's directory: its config, and its checkpoints or the
        overrides only training records (a run killed before its first save is one, and says it
        holds no checkpoint when asked for one)."""
        return self.config.is_file() and (self.checkpoints.is_dir() or self.overrides.is_file())

    def selected_checkpoint(self) -> Path:
        """The checkpoint this run stands for: its best one when it selected one (the last
        checkpoint's trainer state names it), else its newest complete one."""
        latest, _ = latest_checkpoint(self.checkpoints)
        if latest is None:
            raise FileNotFoundError(f"run dir {self.path} holds no complete checkpoint")
        best = read_json(latest / TRAINER_STATE).get("best")
        if best:
            chosen = self.checkpoints / checkpoint_name(int(best["step"]))
            if verify(chosen) is None:
                return chosen
        return latest

    def continuation(self, settings: dict[str, Any]) -> list[str]:
        """The command line of a new run that starts from this run's weights with `settings`
        changed: the run's own overrides (overrides.yaml), its name and start replaced."""
        own = OmegaConf.to_container(OmegaConf.load(self.overrides)) if self.overrides.is_file() else []
        replaced = ("name", "sweep", "resume", "model.init_from", *settings)
        kept = [o for o in own if o.partition("=")[0].lstrip("+") not in replaced]
        return [*kept, f"model.init_from={self.path}", *(f"{k}={v}" for k, v in settings.items())]

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None when the run has not finished."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None

    # ----------------------------------------------------------------------------- writing (main process)
    def write_run_files(
        self, cfg: DictConfig, git: dict[str, Any], overrides: list[str] | None = None
    ) -> None:
        """config.yaml (resolved), git.json and, for a training run, overrides.yaml."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if overrides is not None:
            self.overrides.write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
        self.git.write_text(json.dumps(git, indent=1))

    def write_summary(self, summary: dict[str, Any]) -> None:
        # Whole or not at all: a summary.json is what says a run finished.
        write_text_atomically(self.summary, json.dumps(summary, indent=1))

    def record_resume(self, step: int, changes: dict[str, tuple[Any, Any]], overrides: list[str]) -> None:
        """Append one resume (its step, the changed settings, the command line) to the run's
        history; the original config.yaml stays as it was written."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": step,
            "changes": {k: {"recorded": old, "now": new} for k, (old, new) in changes.items()},
            "overrides": list(overrides),
        }
        with self.resume_history.open("a") as f:
            f.write(json.dumps(entry, default=str) + "\n")

    def record_stop(self, step: int, signal_name: str) -> None:
        """Append one stop on a signal (preemption, time limit, scancel) after `step`, saved."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, "signal": signal_name}
        with self.stops.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def set_aside_earlier_attempt(self) -> Path | None:
        """Move what an earlier, checkpoint-less attempt left (its metrics, summary, resume
        history, train.log) into `earlier_attempts/<n>/`, so a fresh start does not log step 5
        twice and nothing is lost; returns where they went."""
        attempt_files = (self.metrics, self.summary, self.resume_history, self.train_log)
        found = [path for path in attempt_files if path.exists()]
        if not found:
            return None
        attempts = self.earlier_attempts
        target = attempts / str(len(list(attempts.glob("*"))) if attempts.is_dir() else 0)
        target.mkdir(parents=True)
        for path in found:
            path.rename(target / path.name)
        return target


def format_summary(summary: dict[str, Any]) -> str:
    """A two-column table of a run's headline numbers (summary.json's)."""
    rows = [("run dir", summary["run_dir"])]
    if "steps" in summary:
        rows += [
            ("steps", summary["steps"]),
            ("precision", summary["precision"]),
            ("train time (s)", f"{summary['train_seconds']:.1f}"),
        ]
    rows += [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in summary["eval"].items()]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(str(v)) for _, v in rows))
    return "\n".join([line, *(f"{k:<{width}}   {v}" for k, v in rows), line])
