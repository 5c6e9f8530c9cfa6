"""W&B through Accelerate's tracker, and the Accelerate state reset between sweep jobs."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable

from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from ..config.schema import TrainSchema
from .run_dir import RunDir, git_info


def tracker_config(cfg: DictConfig, overrides: list[str]) -> dict:
    """The resolved config as plain containers (trackers reject DictConfig), plus overrides and git."""
    values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    values["overrides"] = list(overrides)
    values["git"] = git_info()
    return values


def run_tags(tags: Iterable[str], task: str, objectives: Iterable[str]) -> list[str]:
    """`logger.tags` plus the task and the objectives it trains, so a W&B dashboard can filter an
    ablation's runs by what they trained without hand-made tags."""
    automatic = [f"task={task}", *(f"objective={name}" for name in objectives)]
    return list(dict.fromkeys([*tags, *automatic]))


def wandb_group(settings: TrainSchema) -> str:
    """`logger.group`, else the sweep the run belongs to (`<tag>/<sweep>`: a sweep's jobs are one
    group to compare), else the run's tag."""
    if settings.logger.group:
        return settings.logger.group
    return f"{settings.tag}/{settings.sweep}" if settings.sweep else settings.tag


def new_run_id() -> str:
    """8 characters of [a-z0-9], the form W&B gives its own run ids."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def init_tracking(
    accelerator: Accelerator,
    cfg: DictConfig,
    settings: TrainSchema,
    run_dir: RunDir,
    name: str,
    overrides: list[str],
    run_id: str | None,
    tags: list[str],
) -> str | None:
    """Start the W&B run (resuming `run_id` when given) named `name`, in its group (`wandb_group`),
    its job type `logger.job_type` or the task's name, with `tags` (`run_tags`); returns the run id
    to checkpoint. cfg: the composed config W&B records; settings: the same, typed."""
    logger = settings.logger
    if logger.mode == "disabled":
        return None
    # The id is chosen here and stored in every checkpoint, so resume=latest continues the same
    # W&B run (resume="allow"; offline runs ignore resume and are merged by `wandb sync`).
    run_id = run_id or new_run_id()
    init_kwargs = {
        "wandb": {
            "mode": logger.mode,
            "dir": str(run_dir.path),
            "id": run_id,
            "resume": "allow",
            "name": name,
            "group": wandb_group(settings),
            "job_type": logger.job_type or settings.task.name,
            "tags": tags,
            "entity": logger.entity,
        }
    }
    accelerator.init_trackers(logger.project, config=tracker_config(cfg, overrides), init_kwargs=init_kwargs)
    return run_id


def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerate singletons (accelerate's own tests do the same)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
