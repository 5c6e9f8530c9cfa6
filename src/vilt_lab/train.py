"""Hydra entry point: compose -> build -> Trainer.fit -> evaluate -> summary.

    python -m vilt_lab.train experiment=demo
    accelerate launch --num_processes 8 --mixed_precision bf16 -m vilt_lab.train experiment=demo

Every process runs this file; only the main process creates directories and writes run files.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from omegaconf import DictConfig, OmegaConf

from .build.data import build_streams, build_tokenizer, ensure_data
from .build.task import build_task
from .build.trainer import build_trainer
from .config.errors import user_errors_reported
from .config.exclusive import let_the_command_line_choose
from .config.hydra_errors import job_has_its_own_process, run_hydra_app
from .config.paths import CONF_DIR
from .config.schema import TrainSchema
from .config.validation import validate_train_config
from .tasks import get_task
from .training.banner import run_banner
from .training.checkpoint import checkpoint_step, recover, resume_checkpoint
from .training.determinism import deterministic_mode
from .training.lost_peer import LostPeer, is_lost_peer
from .training.precision import (
    check_resumed_precision,
    effective_precision,
    float32_matmul_precision,
    precision_source,
)
from .training.preemption import TIME_LIMIT_SIGNALS, Stopped
from .training.resume_run import config_to_resume
from .training.run_dir import RunDir, check_resume, format_summary, git_info, resolve_run_dir, run_name
from .training.run_log import run_log
from .training.run_name import command_run_name, with_sweep_named
from .training.slurm_job import export_slurm_environment, name_slurm_job, requeue_slurm_job, requeued
from .training.tracking import init_tracking, reset_accelerate_state, run_tags
from .training.wandb_credentials import offline_without_credentials

log = logging.getLogger("vilt_lab.train")
PROGRAM = "vilt-train"


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train (and evaluate) as `cfg` says; returns the summary written to the run dir."""
    slurm_task = cfg.launcher.name == "slurm" and "RANK" not in os.environ
    if slurm_task:
        export_slurm_environment()
    settings = validate_train_config(cfg)  # from here on WORLD_SIZE is the job's, under SLURM too
    settings = replace(settings, logger=offline_without_credentials(settings.logger))
    if slurm_task:
        name_slurm_job(run_name(cfg))
    # Accelerate logs every file it saves at INFO; the progress bar and our own lines suffice.
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    accelerator = Accelerator(
        # Without a GPU, Accelerate joins a torchrun/`accelerate launch` job only when told it
        # runs on CPU; otherwise every process would silently train alone.
        cpu=not torch.cuda.is_available(),
        # null: Accelerate reads ACCELERATE_MIXED_PRECISION, which `accelerate launch` sets from
        # --mixed_precision or its config file ("no" when unset).
        mixed_precision=settings.trainer.precision,
        log_with="wandb" if settings.logger.mode != "disabled" else None,
        project_dir=str(resolve_run_dir(cfg).path),
        kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(minutes=settings.trainer.collective_timeout_min))
        ],
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched as {launched} processes but Accelerate sees {accelerator.num_processes}: "
            "check the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR)"
        )
    try:
        with (
            deterministic_mode(settings.trainer.deterministic),
            float32_matmul_precision(settings.trainer.float32_matmul_precision),
        ):
            return _run(cfg, settings, accelerator, overrides or [])
    except Stopped as stop:
        if stop.signum in TIME_LIMIT_SIGNALS and not callable(stop.previous_handler):
            requeue_slurm_job()  # an sbatch job of its own (submitit's handler requeues its jobs)
        stop.forward()  # the signal's own effect, now that the step is saved: requeue or exit
    finally:
        accelerator.end_training()
        # Hydra's sequential sweeps run every job in this process; Accelerate's state is a
        # process-wide singleton, so the next job must start from a clean one.
        reset_accelerate_state()


def prepare_run_dir(
    cfg: DictConfig, accelerator: Accelerator, run_dir: RunDir, overrides: list[str]
) -> Path | None:
    """Decide fresh start or resume before anything in the run dir is touched; return the
    checkpoint to continue from (None: fresh).

    Fresh: what an earlier attempt without a checkpoint left is set aside and the run files are
    written. Resume: the config is checked against the run's record (a setting that defines the
    run must match, see `run_dir.MAY_CHANGE`) and the changes are appended to its resume
    history; config.yaml is never rewritten.
    """
    if accelerator.is_main_process:
        recover(run_dir.checkpoints)  # finish a save or prune that a kill interrupted
    accelerator.wait_for_everyone()
    mode = cfg.resume
    if mode is None and requeued():  # the run's own job again: continue it, whatever it said
        log.info("a requeued SLURM job: resume=null continues as resume=auto")
        mode = "auto"
    resume_from = resume_checkpoint(run_dir.checkpoints, mode)
    if resume_from is None:
        if accelerator.is_main_process:
            moved = run_dir.set_aside_earlier_attempt()
            if moved is not None:
                log.warning(
                    "fresh start in %s: an earlier attempt's files are now in %s", run_dir.path, moved
                )
            run_dir.write_run_files(cfg, git_info(), overrides)
    else:
        # Every process checks (reading only), so a refusal stops them all alike.
        changes = check_resume(RunDir.of_checkpoint(resume_from), cfg)
        if accelerator.is_main_process:
            if not run_dir.config.is_file():  # resume= a checkpoint of another run
                run_dir.write_run_files(cfg, git_info(), overrides)
            run_dir.record_resume(checkpoint_step(resume_from), changes, overrides)
    accelerator.wait_for_everyone()
    return resume_from


def _run(
    cfg: DictConfig, settings: TrainSchema, accelerator: Accelerator, overrides: list[str]
) -> dict[str, Any]:
    """cfg: the config as composed (what the run dir records and hashes); settings: the same,
    validated, as the typed objects everything built from it reads."""
    run_dir = resolve_run_dir(cfg)
    set_seed(settings.seed)
    # Data: each machine's main process asks (nodes may not share a disk) and ensure_data's lock
    # makes one of them the writer where they do. Run files: the job's main process.
    if accelerator.is_local_main_process:
        ensure_data(settings)
    resume_from = prepare_run_dir(cfg, accelerator, run_dir, overrides)
    with run_log(run_dir.train_log, accelerator.process_index):
        try:
            return _train(cfg, settings, accelerator, run_dir, resume_from, overrides)
        except RuntimeError as err:
            if not is_lost_peer(err):
                raise
            raise LostPeer(
                accelerator.process_index, settings.trainer.collective_timeout_min, str(err)
            ) from err


def _train(
    cfg: DictConfig,
    settings: TrainSchema,
    accelerator: Accelerator,
    run_dir: RunDir,
    resume_from: Path | None,
    overrides: list[str],
) -> dict[str, Any]:
    precision = effective_precision(accelerator)
    log.info("training in precision %s (from %s)", precision, precision_source(settings.trainer.precision))
    tokenizer = build_tokenizer(settings)
    task = build_task(settings, tokenizer)
    train_stream, evaluators = build_streams(settings, tokenizer, accelerator, task)
    trainer = build_trainer(settings, accelerator, task, train_stream, evaluators, run_dir)
    state = trainer.restore(resume_from)
    check_resumed_precision(state, precision)
    trainer.extra_state["precision"] = precision
    objectives = get_task(settings.task.name).objective_names(settings)
    if accelerator.is_main_process:
        banner = run_banner(
            settings,
            str(run_dir.path),
            task,
            objectives,
            trainer.settings.max_steps,
            accelerator.num_processes,
            trainer.accumulation,
            precision,
            trainer.step,
        )
        log.info("%s", banner)
    tags = run_tags(settings.logger.tags, settings.task.name, objectives)
    trainer.extra_state["wandb_run_id"] = init_tracking(
        accelerator, cfg, settings, run_dir, run_name(cfg), overrides, state.get("wandb_run_id"), tags
    )

    t0 = time.perf_counter()
    try:
        trainer.fit()
    except Stopped as stop:
        if accelerator.is_main_process:
            run_dir.record_stop(stop.step, signal.Signals(stop.signum).name)
        log.warning("%s; the same command (or resume=%s) continues from there", stop, run_dir.path)
        raise
    train_seconds = time.perf_counter() - t0 - trainer.validator.seconds
    summary = {
        "run_dir": str(run_dir.path),
        "task": settings.task.name,
        "steps": trainer.step,
        "precision": precision,
        "train_seconds": train_seconds,
        "eval_seconds": trainer.validator.seconds,
        "samples_skipped": trainer.samples_skipped,
        "eval": trainer.validator.last_values,
        "best": trainer.checkpoints.best,
    }
    if accelerator.is_main_process:
        run_dir.write_summary(summary)
        print(format_summary(summary), flush=True)
    return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    with user_errors_reported(PROGRAM, ends_the_process=job_has_its_own_process(hydra_cfg)):
        overrides = list(hydra_cfg.overrides.task)
        OmegaConf.resolve(cfg)
        for key in let_the_command_line_choose(cfg, overrides):
            log.info("%s=null: the command line sets the key it excludes (config.exclusive)", key)
        # resume=<run dir> continues that run with its recorded config; any other command names
        # its run after what it sets, so the same command finds its run again.
        resumed = config_to_resume(cfg, overrides)
        if resumed is not None:
            cfg = resumed
        else:
            cfg.name = command_run_name(cfg, overrides, hydra_cfg.job.get("num") or 0)
        summary = run(cfg, overrides)
        # The return value is what Hydra sweepers optimise: the task's selection metric, else the
        # held-out loss.
        best = summary.get("best")
        return best["value"] if best else summary["eval"].get("eval/loss")


def main() -> None:
    """`vilt-train`: a bad setting or file ends it with one message (config.errors)."""
    sys.argv[1:] = with_sweep_named(sys.argv[1:])
    run_hydra_app(PROGRAM, hydra_app, TrainSchema)


if __name__ == "__main__":
    main()
