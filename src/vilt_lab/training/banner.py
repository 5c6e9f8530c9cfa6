"""What a run is about to do, said before it starts (console and train.log).

A bare `vilt-train` is the paper's cluster recipe (ViLT-B/32, 100k steps, a batch of 4,096 with
W&B online); the banner makes that visible in the first lines instead of after the model and
the stream are built, and the run dir keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..config.schema import TrainSchema


def run_banner(
    settings: TrainSchema,
    run_dir: str,
    model: nn.Module,
    objectives: Sequence[str],
    max_steps: int,
    num_processes: int,
    accumulation: int,
    precision: str,
    resumed_at: int,
) -> str:
    """A two-column table: where the run goes, what it trains, how long and how wide."""
    t, logger = settings.trainer, settings.logger
    parameters = sum(p.numel() for p in model.parameters())
    rows = [
        ("run dir", run_dir),
        ("task", f"{settings.task.name} ({', '.join(objectives)})"),
        ("model", f"{settings.model.size}, {parameters / 1e6:.1f}M parameters"),
        ("data", settings.data.name),
        ("steps", f"{max_steps}" + (f", resumed at {resumed_at}" if resumed_at else "")),
        (
            "batch",
            f"{t.global_batch_size} = micro {t.micro_batch_size} x {accumulation} accumulated "
            f"x {num_processes} process{'es' if num_processes > 1 else ''}",
        ),
        ("precision", precision),
        ("logger", "off" if logger.mode == "disabled" else f"W&B {logger.mode}, project {logger.project}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}   {value}" for name, value in rows)
