"""`vilt-report run TABLE --slurm`: every missing run of a table submitted to SLURM at once.

Each run is one `sbatch` job named after its run id, waiting on the job of the run it starts from
(`--dependency=afterok`), so the whole table is queued in one go and the shell may close. A run
whose job is still pending or running (found by its name in `squeue`) is not submitted again:
two jobs would write one run dir. Training jobs take the job shape of `--slurm-set` (nodes,
GPUs, CPUs, time, partition); evaluation jobs are one task on one GPU (or one CPU node). Every job
asks for the time limit's warning signal: a training run saves its step and requeues itself.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config.exclusive import overridden_keys
from ..config.keys import declared_keys
from ..config.schema import EvalSchema, TrainSchema
from .plan import RunSpec

# What SLURM sends before the time limit, and how long before: the run saves and requeues.
TIME_LIMIT_SIGNAL = "USR2@120"


@dataclass(frozen=True)
class JobShape:
    """The resources of one job. gpus_per_node 0: a CPU partition (one task per node)."""

    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    time: str = "3-00:00:00"
    partition: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, settings: Sequence[str]) -> JobShape:
        """`--slurm-set key=value` items: nodes, gpus_per_node, cpus_per_task, time, partition;
        any other key is passed to sbatch as `--key=value`."""
        shape, extra = cls(), []
        for setting in settings:
            key, sep, value = setting.partition("=")
            if not sep:
                raise ValueError(f"--slurm-set {setting!r}: expected key=value")
            if key in ("nodes", "gpus_per_node", "cpus_per_task"):
                shape = replace(shape, **{key: int(value)})
            elif key in ("time", "partition"):
                shape = replace(shape, **{key: value})
            else:
                extra.append(f"--{key.replace('_', '-')}={value}")
        return replace(shape, extra=tuple(extra))

    def for_evaluation(self) -> JobShape:
        return replace(self, nodes=1, gpus_per_node=min(self.gpus_per_node, 1))

    def sbatch_options(self) -> list[str]:
        tasks = max(self.gpus_per_node, 1)  # one rank per GPU; one task on a CPU node
        options = [
            f"--nodes={self.nodes}",
            f"--ntasks-per-node={tasks}",
            f"--cpus-per-task={self.cpus_per_task}",
            f"--time={self.time}",
            f"--signal={TIME_LIMIT_SIGNAL}",
            "--requeue",
        ]
        if self.gpus_per_node:
            options.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.partition:
            options.append(f"--partition={self.partition}")
        return [*options, *self.extra]


def queued_jobs() -> dict[str, str]:
    """{job name: job id} of this user's jobs that are pending or running."""
    out = subprocess.run(
        ["squeue", "--me", "-h", "-t", "PENDING,RUNNING,REQUEUED,CONFIGURING", "-o", "%j|%i"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)


def routed(overrides: Sequence[str], kind: str) -> list[str]:
    """The `--set` overrides a run of `kind` takes: those its config declares (an evaluation has
    no `trainer`, `optim` or `schedule`; training no `split`)."""
    keys = {k.key for k in declared_keys(EvalSchema if kind == "eval" else TrainSchema)}
    given = overridden_keys(overrides)
    return [
        o
        for o, key in zip(overrides, given, strict=True)
        if any(k == key or k.startswith(key + ".") for k in keys)
    ]


def job_script(spec: RunSpec, runs: Path, command: Sequence[str]) -> str:
    """The batch script of one run: its tasks run `command`, one rank each."""
    # A training run maps SLURM's task variables to its ranks (launcher.name=slurm).
    return "\n".join(
        [
            "#!/bin/bash",
            f"# vilt-report: run {spec.id} of {runs}",
            f"srun {shlex.join(command)}",
            "",
        ]
    )


def submit(
    specs: Sequence[RunSpec],
    runs: Path,
    shape: JobShape,
    overrides: Sequence[str],
    dry_run: bool = False,
) -> int:
    """Submit every run of `specs` (dependency order) that is neither done nor queued."""
    queued = {} if dry_run else queued_jobs()
    job_ids: dict[str, str] = {}
    scripts = Path(runs) / "slurm" / "scripts"
    for spec in specs:
        if spec.is_done(runs):
            print(f"done: {spec.id}")
            continue
        if spec.id in queued:
            job_ids[spec.id] = queued[spec.id]
            print(f"queued already: {spec.id} (job {queued[spec.id]})")
            continue
        command = [sys.executable if part == "python" else part for part in spec.command(runs)]
        command += routed(overrides, spec.kind)
        if spec.kind != "eval":
            command.append("launcher.name=slurm")
        job_shape = shape.for_evaluation() if spec.kind == "eval" else shape
        options = [
            f"--job-name={spec.id}",
            f"--output={Path(runs) / 'slurm' / '%j.out'}",
            *job_shape.sbatch_options(),
        ]
        after = job_ids.get(spec.depends_on) if spec.depends_on else None
        if after is not None:
            options.append(f"--dependency=afterok:{after}")
        print(f"submit: {spec.id}: sbatch {shlex.join(options)}\n      {shlex.join(command)}", flush=True)
        if dry_run:
            job_ids[spec.id] = f"<{spec.id}>"
            continue
        scripts.mkdir(parents=True, exist_ok=True)
        script = scripts / f"{spec.id}.sh"
        script.write_text(job_script(spec, runs, command))
        done = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{spec.id}: sbatch failed: {done.stderr.strip()}")
            return done.returncode
        job_ids[spec.id] = done.stdout.strip().split(";")[0]
    return 0
