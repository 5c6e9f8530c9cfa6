"""Hydra's own errors (an unknown key, a group option that does not exist, an override it cannot
parse) as one message with the closest valid key or the group's options.

Hydra composes the config inside `hydra.main`, before our code, and prints these errors itself
(with a stack trace unless told otherwise). The entry points run their Hydra app with
HYDRA_FULL_ERROR set, so Hydra raises them instead, and explain them here.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from .errors import user_errors_reported
from .keys import declared_keys
from .paths import CONF_DIR

UNKNOWN_KEY = re.compile(r"Could not override '(?P<key>[^']+)'")
UNKNOWN_OPTION = re.compile(r"Could not (?:find|load) '(?P<group>[^']+)/(?P<option>[^'/]+)'")
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
# Runs a sweep's jobs one after another in the sweeping process.
BASIC_LAUNCHER = f"{BasicLauncher.__module__}.{BasicLauncher.__qualname__}"


def run_hydra_app(program: str, app: Callable[[], object], schema: type) -> None:
    """Run ``app`` (a `hydra.main` function) as command ``program`` whose config ``schema``
    declares the keys: Hydra's composition errors as one message, status 2. The app reports
    the user errors of its own work itself (`user_errors_reported`): one raised out of a job
    would first have Hydra print the job's overrides."""
    # Hydra then raises its errors to this caller instead of printing them and exiting itself.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with user_errors_reported(program, lambda err: explain_hydra_error(err, schema, sys.argv[1:])):
        app()


def job_has_its_own_process(hydra_cfg: DictConfig) -> bool:
    """Whether the running Hydra job is a process that ends with it: a sweep's job under any
    launcher but the basic one (submitit starts one SLURM job per run). Hydra catches the job's
    exception there and returns it as the job's result, so the job must end its process itself
    to be seen as failed (`user_errors_reported`'s ``ends_the_process``)."""
    return hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.launcher._target_ != BASIC_LAUNCHER


def explain_hydra_error(err: Exception, schema: type, argv: list[str]) -> str | None:
    """The message for one of Hydra's errors, or for a sweep's job that failed on SLURM (its
    error stream says why: submitit's message holds it); None for any other exception (a bug:
    traced)."""
    if type(err).__name__ == "UncompletedJobError":  # submitit's, without importing it
        return f"a job of the sweep failed on SLURM; {err}"
    if not isinstance(err, HydraException):
        return None
    text = str(err)
    unknown_key = UNKNOWN_KEY.search(text)
    if unknown_key and isinstance(err.__cause__, (ConfigKeyError, ConfigAttributeError)):
        key = unknown_key["key"]
        known = [k.key for k in declared_keys(schema)]
        if key in known:  # declared, but no config file sets it
            return f"{key}: not in the composed config; set it with ++{key}=<value>"
        return f"{key}: unknown key{_closest(key, known)}"
    unknown_option = UNKNOWN_OPTION.search(text)
    if unknown_option:
        group, option = unknown_option["group"], unknown_option["option"]
        options = group_options(group, config_dirs(argv))
        return (
            f"{group}={option}: no such option{_closest(option, options)} "
            f"({group} has {', '.join(options) or 'no options'})"
        )
    cause = f"\n{err.__cause__}" if err.__cause__ is not None else ""
    return f"{text}{cause}"


def group_options(group: str, extra_dirs: list[Path]) -> list[str]:
    """The options of config group ``group``: its YAML files in our config tree and in every
    directory given with --config-dir."""
    return sorted({path.stem for conf in [CONF_DIR, *extra_dirs] for path in (conf / group).glob("*.yaml")})


def config_dirs(argv: list[str]) -> list[Path]:
    """The directories a command line adds with `--config-dir DIR`, `--config-dir=DIR` or `-cd DIR`."""
    dirs = []
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if value:
                dirs.append(Path(value))
    return dirs


def _closest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""
