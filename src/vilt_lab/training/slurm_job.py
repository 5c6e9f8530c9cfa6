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
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT from SLURM's
    own variables, so Accelerate sees one rank per task, whether submitit or a plain `sbatch`
    + `srun` started the tasks. CUDA_VISIBLE_DEVICES is left alone: Accelerate picks the GPU from
    LOCAL_RANK."""
    env = os.environ
    nodes = _hostnames(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "localhost")
    tasks = int(env.get("SLURM_NTASKS", "1"))
    os.environ.update(
        {
            "RANK": env.get("SLURM_PROCID", "0"),
            "WORLD_SIZE": str(tasks),
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(tasks // max(len(nodes), 1)),
            "MASTER_ADDR": nodes[0],
            # One port per job, so two jobs sharing a node do not meet.
            "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
        }
    )


def _hostnames(nodelist: str) -> list[str]:
    """SLURM's compact node list (`gpu[01-04]`) as host names, by scontrol."""
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()
    return [nodelist]


def _this_job() -> str | None:
    """This SLURM job's id as scontrol takes it, from its first task only (None elsewhere)."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None or os.environ.get("SLURM_PROCID", "0") != "0":
        return None
    if "SLURM_ARRAY_JOB_ID" in os.environ:  # a task of an array: its first task's id is the array's
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return job_id


def _scontrol(*args: str, failure: str) -> None:
    """`scontrol <args>`; a failure is a warning starting with `failure`."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("%s: no scontrol on PATH", failure)
        return
    try:
        subprocess.run([scontrol, *args], check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or err
        log.warning("%s (scontrol %s: %s)", failure, args[0], str(detail).strip())


def name_slurm_job(name: str) -> None:
    """Rename this SLURM job to `name` (from its first task only); a failure is a warning, as the
    name is only what `squeue` shows."""
    job = _this_job()
    if job is not None:
        _scontrol("update", f"JobId={job}", f"JobName={name}", failure=f"SLURM job {job} keeps its name")


def requeue_slurm_job() -> None:
    """Put this SLURM job back in the queue (from its first task only): a batch job stopped by its
    time limit's signal, which no launcher requeues for it, runs again and continues."""
    job = _this_job()
    if job is not None:
        log.warning("requeueing SLURM job %s", job)
        _scontrol("requeue", job, failure=f"SLURM job {job} was not requeued")


def requeued() -> bool:
    """Whether this SLURM job runs again after a requeue (preemption, a time limit's signal)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
