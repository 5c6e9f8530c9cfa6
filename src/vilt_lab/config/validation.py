"""One validation pass over a composed, resolved config, before any work.

`validate_train_config` runs at the top of `vilt_lab.train.run`, before the Accelerator (so before
any process group, run dir, data write or model), `validate_eval_config` at the top of vilt-eval.
A config that fails is refused with a :class:`ConfigError` (a ValueError) listing every problem of
the stage that failed, each naming the key, the bad value and what is allowed. A stage runs only
when the ones before it passed, since its rules would trip over an earlier bad value:

1. every required key (``???``) set, then every key and value against the typed schema
   (`vilt_lab.config.schema`); unknown keys anywhere are refused with the closest valid name;
2. rules across keys: the global batch over micro batch x processes, the model preset with its
   overrides, the augment sizes, the files the run reads (a local `model.init_from`, `resume=<path>`,
   the checkpoint to evaluate), scores only from a task that has them, the speed levers' GPU
   preconditions (float8's micro batch, CUDA graphs' fixed shapes);
3. the data on disk: `data.root` / `data.roots.*`, the tokenizer directory, every split's shards,
   enough shards for every process (exact training epochs, evaluation passes that deal shards),
   the mix weights;
4. the task's own check (what the data carries, answers.json; training passes its errors as they
   are, vilt-eval as a ConfigError), then
   the trainer settings that need the data's counts (an epoch schedule, evaluations per epoch,
   the warmup against the steps).

A shapes world that `build.ensure_data` writes on first use is not there yet: stages 3 and 4 are
then left to the run. The loaders and `trainer_settings` apply the same rules, before training,
except the eval loader's shard split, met at the first evaluation (the world's default size
writes 4 shards per validation split: enough for 4 processes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from ..build.data import written_on_first_use
from ..build.settings import trainer_settings
from ..build.task import model_config
from ..data.pipeline import Source, check_exact_epochs, missing_shards, mix_weights
from ..data.shards import SIZES_FILE, expand_shards, is_local
from ..data.tokenizer import missing_directory
from ..tasks import Task, get_task
from ..tasks.base import SPLIT_URLS
from ..training.schedule import warmup_steps_from
from ..training.speed_levers import check_cuda_graph_mode, check_fp8_batch
from ..training.trainer import accumulation_steps
from ..weights.init_from import VIT_SOURCES
from .errors import ConfigError
from .keys import declared_keys
from .schema import EvalSchema, RunConfig, TrainSchema
from .typed import typed
from .typed_check import check

T = TypeVar("T")

# The model's vocabulary is the tokenizer's, unknown before it is loaded: checking the model
# against a one-token vocabulary lets any `model.vocab_size` pass (build_task checks it later).
ANY_VOCABULARY = 1


def launched_world_size() -> int:
    """The processes this job was launched as (torchrun / accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def validate_train_config(cfg: DictConfig, world_size: int | None = None) -> TrainSchema:
    """Refuse a training config that cannot run as ``world_size`` processes (default: this
    job's), before any work (see the module docstring); return it as the typed objects code
    reads (vilt_lab.config.typed)."""
    world_size = world_size or launched_world_size()
    cfg = _typed(cfg, TrainSchema)
    _refuse(
        [
            *_batch_split(cfg, world_size),
            *_model(cfg),
            *_augment(cfg),
            *_init_from(cfg),
            *_resume(cfg),
            *_speed_levers(cfg),
        ]
    )
    if written_on_first_use(cfg):
        return cfg
    task = get_task(cfg.task.name)
    sources = {f"data.sources.{name}.urls": source.urls for name, source in cfg.data.sources.items()}
    evaluated = task.eval_splits(cfg) if cfg.evaluate else {}
    splits = {f"data.{SPLIT_URLS[prefix]}": urls for prefix, urls in evaluated.items()}
    _refuse(list(_data(cfg, task, sources, splits, world_size)))
    task.check(cfg)
    _refuse(_caught(_settings, cfg))
    return cfg


def validate_eval_config(
    cfg: DictConfig, splits: Mapping[str, Any], world_size: int | None = None
) -> EvalSchema:
    """Refuse a vilt-eval config before any work; ``splits``: config key -> urls of the split it
    evaluates (e.g. ``{"data.val_urls": ...}``). Returns it as typed objects."""
    world_size = world_size or launched_world_size()
    cfg = _typed(cfg, EvalSchema)
    _refuse([*_augment(cfg), *_checkpoint(cfg), *_scores(cfg)])
    if written_on_first_use(cfg):
        return cfg
    task = get_task(cfg.task.name)
    _refuse(list(_data(cfg, task, {}, splits, world_size)))
    _refuse(_caught(task.check, cfg))  # a task the data cannot serve: one message, no traceback
    return cfg


def _typed(cfg: DictConfig, schema: type[T]) -> T:
    """Stage 1: every key and value against the schema; then the config as its typed objects."""
    _refuse(list(_missing_values(cfg, schema)))
    values = OmegaConf.to_container(cfg, resolve=True)
    _refuse(check(values, schema))
    return typed(values, schema)


def _missing_values(cfg: DictConfig, schema: type) -> Iterator[str]:
    """A required key the command line did not set (``???`` in the config files)."""
    docs = {k.key: k.doc for k in declared_keys(schema)}
    for key in sorted(OmegaConf.missing_keys(cfg)):
        yield f"{key}: not set; pass {key}=<{docs.get(key, 'value')}>"


def _refuse(problems: Sequence[str]) -> None:
    if problems:
        raise ConfigError(problems)


def _caught(rule: Callable[..., Any], *args: Any) -> list[str]:
    """A rule that raises (the code that applies it later, reused here): its message, if any."""
    try:
        rule(*args)
    except (ValueError, KeyError, OSError) as err:  # OSError: a count file that cannot be read
        return [str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)]
    return []


# ---------------------------------------------------------------------------------- across keys
def _batch_split(cfg: RunConfig, world_size: int) -> list[str]:
    """The global batch is micro batch x accumulation x processes (the trainer's own rule)."""
    t = cfg.trainer
    return _caught(accumulation_steps, t.global_batch_size, t.micro_batch_size, world_size)


def _model(cfg: RunConfig) -> list[str]:
    """The preset `model.size` with the `model.*` overrides is a valid ViltConfig."""
    return _caught(model_config, cfg, ANY_VOCABULARY)


def _speed_levers(cfg: TrainSchema) -> list[str]:
    """The levers that crash on a GPU with settings that look fine on a CPU: float8 with a micro
    batch its backward cannot multiply, CUDA graphs with shapes or a backward they cannot replay."""
    return [*_caught(check_fp8_batch, cfg.trainer), *_caught(check_cuda_graph_mode, cfg.trainer)]


def _augment(cfg: RunConfig) -> Iterator[str]:
    shorter, longer = cfg.augment.shorter, cfg.augment.longer
    if longer < shorter:
        yield f"augment.longer={longer}: expected >= augment.shorter={shorter} (the longer side's cap)"


def _checkpoint(cfg: RunConfig) -> Iterator[str]:
    if not Path(cfg.checkpoint).exists():
        yield (
            f"checkpoint={cfg.checkpoint!r}: does not exist; expected a vilt_lab checkpoint directory, "
            "a run's checkpoints/step_N or an official ViLT .ckpt file"
        )


def _init_from(cfg: TrainSchema) -> Iterator[str]:
    """A local `model.init_from` that does not exist: found here, not at start-up after the run
    dir exists. What an existing path holds is `build.task.initialise`'s check (a run dir, a
    run's checkpoint, a vilt_lab checkpoint directory), which says which file is wrong."""
    init_from = cfg.model.init_from
    if init_from is None or init_from.startswith(tuple(VIT_SOURCES)) or Path(init_from).exists():
        return
    sources = ", ".join(f"{prefix}<name>" for prefix in VIT_SOURCES)
    yield (
        f"model.init_from={init_from!r}: does not exist; expected {sources}, a vilt_lab checkpoint"
        " directory, a run's checkpoints/step_N or run dir"
    )


def _resume(cfg: TrainSchema) -> Iterator[str]:
    """`resume=<path>` names a checkpoint that exists (latest/auto are looked up in the run dir);
    whether it is complete and safe is the resume's own check (`resume_checkpoint`), which says
    which file is wrong."""
    if cfg.resume is None or cfg.resume in ("latest", "auto") or Path(cfg.resume).is_dir():
        return
    yield f"resume={cfg.resume!r}: does not exist; expected null, latest, auto or a checkpoint directory"


def _scores(cfg: EvalSchema) -> Iterator[str]:
    if cfg.save_scores and not get_task(cfg.task.name).writes_scores:
        yield f"save_scores=true: task={cfg.task.name} has no score matrix (task=irtr has)"


def _settings(cfg: RunConfig) -> None:
    """The trainer's settings build (their rules, from the data's counts) and the warmup fits."""
    settings = trainer_settings(cfg)
    warmup_steps_from(settings.schedule.warmup, settings.max_steps)


# ---------------------------------------------------------------------------------- data on disk
def _data(
    cfg: RunConfig, task: Task, sources: Mapping[str, Any], splits: Mapping[str, Any], world_size: int
) -> Iterator[str]:
    """Paths first (a missing one makes every count meaningless), then the shards per process."""
    missing: dict[str, str] = {}  # key -> its first path that does not exist
    problems: list[str] = []
    shards: dict[str, list[str]] = {}
    if missing_directory(str(cfg.data.tokenizer)) is not None:
        missing["data.tokenizer"] = str(cfg.data.tokenizer)
    for key, spec in {**sources, **splits}.items():
        shards[key] = _split_shards(key, spec, missing, problems)
    yield from _missing_paths(cfg, missing)
    yield from problems
    if missing or problems:
        return
    for key, split in splits.items():
        yield from (f"{key}={_urls(split)}: {p}" for p in _caught(task.check_split, shards[key], world_size))
    if not sources:
        return
    if cfg.data.resampled:
        named = [Source(s.urls, s.weight, name) for name, s in cfg.data.sources.items()]
        yield from _caught(mix_weights, named, [shards[key] for key in sources])
    else:
        names = ", ".join(cfg.data.sources)
        yield from (
            f"data.resampled=false with data.sources {names}: {p}"
            for p in _caught(
                check_exact_epochs, [shards[key] for key in sources], world_size, cfg.data.num_workers
            )
        )


def _split_shards(key: str, spec: Any, missing: dict[str, str], problems: list[str]) -> list[str]:
    """The shards of one split setting (a directory, pattern or URL, or a list of them); a path
    that does not exist goes to ``missing``, other defects to ``problems``."""
    shards: list[str] = []
    for item in [spec] if isinstance(spec, str) else list(spec):
        if os.path.isdir(item) and not os.path.isfile(os.path.join(item, SIZES_FILE)):
            problems.append(
                f"{key}={item!r}: no {SIZES_FILE} in this directory (the converters write one per split)"
            )
            continue
        found = expand_shards(item)
        absent = missing_shards(found)
        if is_local(item) and len(absent) == len(found):
            missing.setdefault(key, item)
        elif absent:
            problems.append(
                f"{key}={item!r}: {len(absent)} of {len(found)} shards do not exist, e.g. {absent[0]}"
            )
        shards += found
    return shards


def _missing_paths(cfg: RunConfig, missing: Mapping[str, str]) -> Iterator[str]:
    """One line per missing path, or one per missing data root for the paths under it."""
    roots = {
        "data.root": cfg.data.root,
        **{f"data.roots.{k}": v for k, v in cfg.data.roots.items()},
    }
    absent_roots = {
        key: path for key, path in roots.items() if path and is_local(path) and not os.path.isdir(path)
    }
    under: dict[str, list[str]] = {key: [] for key in absent_roots}
    for key, path in missing.items():
        root = next((r for r, root_path in absent_roots.items() if _is_under(path, root_path)), None)
        if root is not None:
            under[root].append(key)
        elif key == "data.tokenizer":
            yield f"data.tokenizer={path!r}: {missing_directory(path)}"
        else:
            yield f"{key}={path!r}: does not exist"
    for root, keys in under.items():
        if keys:
            yield f"{root}={absent_roots[root]!r}: the directory does not exist (it should hold {', '.join(keys)})"


def _is_under(path: str, root: str) -> bool:
    path, root = os.path.abspath(os.path.expanduser(path)), os.path.abspath(os.path.expanduser(root))
    return os.path.commonpath([path, root]) == root


def _urls(spec: Any) -> str:
    return repr(spec if isinstance(spec, str) else list(spec))
