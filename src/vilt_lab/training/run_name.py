"""A run's name: its directory under `paths.runs_dir`, its W&B run name and its SLURM job name.

The name is a function of what defines the run, read from the command line as Hydra's
`override_dirname` idiom does, so that the same command finds its run again (and resumes or
re-evaluates it) while a different command never lands in another run's directory:

    vilt-train experiment=demo                        runs/demo
    vilt-train experiment=demo debug=fast             runs/demo/debug:fast
    vilt-train experiment=demo name=mine              runs/mine          (name= is taken as is)
    vilt-train -m experiment=demo model=tiny,small32  runs/demo/model/model:tiny
                                                      runs/demo/model/model:small32
    vilt-train -m name=abl 'objective=[itm,mlm],[itm,mlm,wpa]'
                                                      runs/train/abl/objective:itm-mlm ...

A name is written `key:value+key:value` (a list value as `a-b`), not Hydra's `key=value,key=value`:
a run dir is passed back on the command line (`resume=<run dir>`, `model.init_from=<run dir>`,
`vilt-eval checkpoint=<run dir>`), where Hydra would read `=` as an error and `,` as a sweep.

A single run is named `<name or tag>/<overrides>`, where the overrides are the command line's
settings that define the run: the experiment (its tag already says it), the paths, the logger,
the launcher and the settings a resume may change (`run_dir.MAY_CHANGE`: how a run runs, not what
it trains) are left out, so adding `trainer.grad_checkpointing=true` to a command still finds its
run. A sweep's job is named `<tag>/<sweep>/<overrides>`: the sweep is `name=` when given, else the
swept keys; its jobs keep every setting typed, may-change ones included (a sweep over
`trainer.compile=true,false` is two runs). A command line that sweeps nothing (`-m` only to reach
a launcher) names its one run as a single run.

Two commands whose overrides match but whose config files differ (an edited experiment) meet in
one directory; the resume check (`run_dir.check_resume`) then refuses, naming the settings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from ..config.exclusive import overridden_keys
from .run_dir import may_change

# Command-line keys that are never part of a run's name: how it runs and where, not what it trains.
NOT_IN_NAME = ("experiment", "name", "sweep", "tag", "resume", "paths", "logger", "launcher", "hydra")
# Beyond this a name is cut and a hash of the whole keeps it unique (file names stop at 255 bytes).
MAX_PART = 120
# A path value (model.init_from, data.root) keeps at most this much of its last part.
MAX_PATH_PART = 32


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """The keys a multirun command line sweeps (`model=tiny,small32`, `range(...)`, `choice(...)`)."""
    return sorted({o.key_or_group for o in parse_overrides(overrides) if o.is_sweep_override()})


def _short_hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def _value(override: Override) -> str:
    """An override's value as typed, as a name part: a list as `a-b`, no quotes or spaces; a path
    keeps its last part and a hash of the whole (two checkpoints named step_00001600 stay apart)."""
    raw = override.value()
    text = str(raw).lower() if isinstance(raw, bool) else override.get_value_element_as_str()
    value = "".join(c for c in text if c not in "[]'\" ").replace(",", "-")
    # Only characters Hydra reads unquoted in a value, and a shell leaves alone.
    value = re.sub(r"[^\w.:+@%/-]", "-", value)
    if "/" in value:
        value = f"{PurePosixPath(value).name[:MAX_PATH_PART]}@{_short_hash(text, 4)}"
    return value


def override_dirname(overrides: Sequence[str], *, keep_may_change: bool) -> str:
    """`key:value+key:value` over the overrides that name a run (sorted by key); "" if none."""
    parts = []
    for override in parse_overrides(overrides):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0] in NOT_IN_NAME:
            continue
        if not keep_may_change and may_change(key):
            continue
        parts.append(f"{key}:{_value(override)}")
    text = "+".join(sorted(parts))
    if len(text) > MAX_PART:
        text = f"{text[: MAX_PART - 9]}@{_short_hash(text, 8)}"
    return text


def single_run_name(base: str, overrides: Sequence[str]) -> str:
    """`<base>` or `<base>/<defining overrides>` (base: the command line's name, else the tag)."""
    leaf = override_dirname(overrides, keep_may_change=False)
    return f"{base}/{leaf}" if leaf else base


def sweep_name(name: str | None, swept: Sequence[str]) -> str:
    """A sweep's name: `name=` when the command line gives one, else its swept keys (`model+seed`)."""
    return name or "+".join(swept)


def sweep_job_name(tag: str, sweep: str, overrides: Sequence[str], job_num: int) -> str:
    """`<tag>/<sweep>/<every typed setting>`: the jobs of one sweep differ in their swept values."""
    leaf = override_dirname(overrides, keep_may_change=True) or f"job{job_num}"
    return f"{tag}/{sweep}/{leaf}"


def command_run_name(cfg: DictConfig, overrides: Sequence[str], job_num: int) -> str:
    """The name of the run a command line (`overrides`, composed into `cfg`) makes: a sweep's
    job (`sweep` is set by `with_sweep_named`), a run the command line names, or a single run."""
    if cfg.sweep:
        return sweep_job_name(cfg.tag, cfg.sweep, overrides, job_num)
    if "name" in overridden_keys(overrides):
        return cfg.name
    return single_run_name(cfg.name or cfg.tag, overrides)


def with_sweep_named(argv: Sequence[str]) -> list[str]:
    """`vilt-train`'s arguments, plus what names a multirun's jobs: `sweep=<sweep_name>` when the
    command line sweeps (Hydra composes each job with it, and its multirun.yaml goes into the
    sweep's directory); for one that sweeps nothing, its multirun.yaml goes into the runs dir."""
    argv = list(argv)
    if not {"-m", "--multirun"} & set(argv):
        return argv
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    given = {o.key_or_group: o for o in parse_overrides(overrides) if not o.is_sweep_override()}
    if "sweep" in given:
        return argv
    swept = [key for key in swept_keys(overrides) if key.split(".")[0] not in NOT_IN_NAME]
    if not swept:
        return [*argv, "hydra.sweep.dir=${paths.runs_dir}"]
    name = str(given["name"].value()) if "name" in given else None
    return [*argv, f"sweep='{sweep_name(name, swept)}'"]
