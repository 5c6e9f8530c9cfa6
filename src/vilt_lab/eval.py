"""``vilt-eval``: a checkpoint, a task and a split -> metrics table, summary.json, submission.

    vilt-eval checkpoint=ckpt/vilt_nlvr2 task=nlvr2 data=nlvr2 split=test
    accelerate launch -m vilt_lab.eval checkpoint=ckpt/vilt_irtr_coco task=irtr data=coco split=test
    vilt-eval checkpoint=runs/vqa split=test     # a run dir: its own task, data and objectives

Every process evaluates its own share; the results are gathered once (see vilt_lab.evaluation).
Only the main process writes files.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from .build.data import build_tokenizer, ensure_data, process_loader_config
from .build.task import build_eval_task, recorded_config
from .config.errors import ConfigError, user_errors_reported
from .config.exclusive import overridden_keys
from .config.hydra_errors import run_hydra_app
from .config.paths import CONF_DIR
from .config.schema import EvalSchema
from .config.validation import validate_eval_config
from .tasks import get_task
from .tasks.base import SPLIT_URLS, TEST, VAL
from .training.metrics_log import MetricsFile
from .training.run_dir import RunDir, format_summary, git_info
from .training.tracking import reset_accelerate_state

log = logging.getLogger("vilt_lab.eval")
PROGRAM = "vilt-eval"
SPLITS = {"val": VAL, "test": TEST}
SUBMISSION_NAME = "submission.json"
SCORES_NAME = "scores.pt"
# What a run dir's config.yaml says about what it trained, which its evaluation takes: the task
# (the VQA answers, max_image_len, ...), the data (splits, tokenizer, max_text_len, image sizes),
# the objectives pre-training's held-out means weigh, the resize, and the seed of the draws.
RUN_KEYS = ("task", "data", "objective", "augment", "seed")


def run_keys(checkpoint: str | None, given: Mapping[str, str]) -> tuple[RunDir | None, list[str]]:
    """The training run `checkpoint` belongs to and the RUN_KEYS it brings: those the command
    line's overrides (``given``, as config.exclusive.overridden_keys reads them) leave alone;
    (None, []) for a checkpoint of no run."""
    run = RunDir.holding(checkpoint) if checkpoint else None
    return run, [] if run is None else [key for key in RUN_KEYS if key not in given]


def take_run_config(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """When `checkpoint` is a run dir or one of its checkpoints, replace `cfg`'s RUN_KEYS with the
    values the run recorded, except those the command line (``overrides``) chose itself
    (`task=irtr data=shapes_retrieval`): what the run trained is what is evaluated. The command
    line's keys under a taken node (`data.root=...`, `task.text_batch_size=32`) still apply on
    top, as typed (an interpolation resolves against the run's values). Call it before `cfg` is
    resolved; returns the keys taken (logged)."""
    given = overridden_keys(overrides)
    run, taken = run_keys(OmegaConf.select(cfg, "checkpoint", default=None, throw_on_missing=False), given)
    if run is None:
        return []
    recorded = recorded_config(run)
    as_typed = OmegaConf.to_container(cfg, resolve=False)
    for key in taken:
        on_top = {k: _unresolved(as_typed, k) for k in given if k.startswith(f"{key}.")}
        cfg[key] = recorded[key]
        for inner, value in on_top.items():
            OmegaConf.update(cfg, inner, value, force_add=True)
    if taken:
        log.info("evaluating what the run trained, from %s: %s", run.config, ", ".join(taken))
    return taken


def forced_under_run_keys(argv: Sequence[str]) -> list[str]:
    """The command line with each plain `key=value` under a node the run brings (`run_keys`) made
    `++key=value`. Hydra composes vilt-eval's own groups first (task=pretrain, data=shapes), which
    may lack a key the run's node has (a retrieval run's `task.text_batch_size`, a VQA run's
    `data.answers`) and would be refused before `take_run_config` puts the run's node in."""
    given = overridden_keys(argv)
    _, taken = run_keys(given.get("checkpoint"), given)

    def under_a_taken_node(arg: str) -> bool:
        key, sep, _ = arg.partition("=")
        node, dot, _ = key.partition(".")
        return bool(sep and dot) and node in taken

    return [f"++{arg}" if under_a_taken_node(arg) else arg for arg in argv]


def _unresolved(values: Any, key: str) -> Any:
    """The value at dotted `key` of a container, interpolations left as written."""
    for part in key.split("."):
        values = values[int(part)] if isinstance(values, list) else values[part]
    return values


def default_out_dir(cfg: EvalSchema) -> Path:
    checkpoint = Path(cfg.checkpoint)
    # A run's checkpoints/step_N is named after its run: <run>-step_N.
    run_dir = RunDir.of_checkpoint(checkpoint)
    name = (
        checkpoint.name
        if run_dir.checkpoints != checkpoint.parent
        else f"{run_dir.path.name}-{checkpoint.name}"
    )
    return (
        Path(cfg.paths.runs_dir)
        / "eval"
        / f"{cfg.task.name}-{cfg.split}-{checkpoint.stem if checkpoint.is_file() else name}"
    )


def split_urls(cfg: DictConfig) -> Any:
    if cfg.split not in SPLITS:
        raise ConfigError([f"split={cfg.split!r}: expected one of {sorted(SPLITS)}"])
    key = SPLIT_URLS[SPLITS[cfg.split]]
    urls = cfg.data.get(key)
    if not urls:
        raise ConfigError([f"split={cfg.split} needs data.{key}, which data={cfg.data.name} does not set"])
    return urls


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as `cfg` says; returns the summary (also written to `out_dir`). A caller that
    composes `cfg` itself applies `take_run_config` first, as the command line does, to evaluate
    a run dir with the run's own settings."""
    urls = split_urls(cfg)  # a wrong split fails before any work
    settings = validate_eval_config(cfg, {f"data.{SPLIT_URLS[SPLITS[cfg.split]]}": urls})
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=settings.trainer.precision)
    try:
        return _evaluate(cfg, settings, accelerator, urls)
    finally:
        # Accelerate's state is process-wide: a later run or evaluation in this process (a test,
        # a notebook) must start from a clean one.
        reset_accelerate_state()


def _evaluate(cfg: DictConfig, settings: EvalSchema, accelerator: Accelerator, urls: Any) -> dict[str, Any]:
    """cfg: the config as composed (written to config.yaml); settings: the same as typed objects."""
    out = RunDir(Path(settings.out_dir) if settings.out_dir else default_out_dir(settings))
    if accelerator.is_local_main_process:
        ensure_data(settings)
    accelerator.wait_for_everyone()
    tokenizer = build_tokenizer(settings)
    module = build_eval_task(settings, tokenizer, settings.checkpoint).to(accelerator.device)
    task = get_task(settings.task.name)
    loader = process_loader_config(settings, accelerator, module)
    evaluator = task.evaluator(settings, tokenizer, module, loader, urls)
    t0 = time.perf_counter()
    values = {f"eval/{k}": v for k, v in evaluator(module, accelerator).items()}
    summary: dict[str, Any] = {
        "run_dir": str(out.path),
        "task": settings.task.name,
        "checkpoint": settings.checkpoint,
        "split": settings.split,
        "eval_seconds": time.perf_counter() - t0,
        "eval": values,
    }
    write_submission = settings.submission if settings.submission is not None else settings.split == "test"
    if accelerator.is_main_process:
        out.write_run_files(cfg, git_info())
        out.metrics.unlink(missing_ok=True)  # one evaluation per out_dir: a rerun replaces it
        MetricsFile(out.metrics).append(0, values)
        path = (
            task.write_submission(evaluator, urls, out.path / SUBMISSION_NAME) if write_submission else None
        )
        if path is not None:
            summary["submission"] = str(path)
        if settings.save_scores:
            summary["scores"] = str(task.write_scores(evaluator, out.path / SCORES_NAME))
        out.write_summary(summary)
        print(format_summary(summary), flush=True)
    accelerator.wait_for_everyone()
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def hydra_app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with user_errors_reported(PROGRAM):
        take_run_config(cfg, list(HydraConfig.get().overrides.task))
        OmegaConf.resolve(cfg)
        evaluate(cfg)


def main() -> None:
    """`vilt-eval`: a bad setting or file ends it with one message (config.errors)."""
    sys.argv[1:] = forced_under_run_keys(sys.argv[1:])
    run_hydra_app(PROGRAM, hydra_app, EvalSchema)


if __name__ == "__main__":
    main()
