"""A SLURM task started by the submitit launcher: its ranks, and its job named after its run.

Hydra's submitit launcher submits a sweep as one job array, all of one name; `squeue` would show
every job of every sweep as `train`. Each job renames itself to its run's name as it starts
(`scontrol update`, which a user may do to their own job), so the queue says what runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)


def export_slurm_environment() -> None:
    """RANK, WORLD_SIZE, MASTER_ADDR... from SLURM's own variables, so Accelerate sees one rank
    per task. CUDA_VISIBLE_DEVICES is left alone: Accelerate picks the GPU from LOCAL_RANK."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def name_slurm_job(name: str) -> None:
    """Rename this SLURM job to `name` (from its first task only); a failure is a warning, as the
    name is only what `squeue` shows."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None or os.environ.get("SLURM_PROCID", "0") != "0":
        return
    if "SLURM_ARRAY_JOB_ID" in os.environ:  # a task of an array: its first task's id is the array's
        job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("SLURM job %s keeps its name: no scontrol on PATH", job_id)
        return
    command = [scontrol, "update", f"JobId={job_id}", f"JobName={name}"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        log.warning("SLURM job %s keeps its name (scontrol update: %s)", job_id, str(detail).strip())


def requeued() -> bool:
    """Whether this SLURM job runs again after a requeue (preemption, a time limit's signal)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
