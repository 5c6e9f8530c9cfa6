"""Training steps under ``torch.cuda.set_sync_debug_mode("warn")``: does the step wait for the GPU?

A host sync (``.item()``, ``nonzero``, a boolean index, a device-to-host copy) drains the CUDA
queue, so the CPU stops running ahead of the GPU and a whole-step CUDA graph is ruled out. CUDA's
sync debug mode makes every such call warn; this driver builds a run as `vilt-train` does (the
CONTRIBUTING recipe, no run dir), takes a few warm-up steps, then takes ``--steps`` steps with the
mode on, none of them a logging step, and writes how many warnings each step raised and where
(``--json``). The batches are read before the measured steps, so the loader is not counted.

Without CUDA the steps run but nothing can be counted (``"counted": false``): that is the CPU
dry run of bench/gpu_check.sh, which checks this driver and its output, not the step.

    PYTHONPATH=src python bench/sync_debug_step.py --json syncs.json experiment=demo trainer.precision=bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from hydra import compose, initialize_config_dir
from sync_sites import sync_sites  # bench/, beside this script

from vilt_lab.build.data import build_streams, build_tokenizer, ensure_data
from vilt_lab.build.task import build_task
from vilt_lab.build.trainer import build_trainer
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.validation import validate_train_config


def count_syncs(step: Callable[[], None], steps: int) -> list[dict[str, int]] | None:
    """Per step of ``steps`` calls of ``step``, the syncs it made by where; None without CUDA."""
    per_step = [sync_sites(step) for _ in range(steps)]
    return None if per_step[0] is None else per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the counts")
    parser.add_argument("--warmup", type=int, default=3, help="steps before counting (compiles, allocator)")
    parser.add_argument("--steps", type=int, default=10, help="steps counted")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of train.yaml, e.g. experiment=demo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    # No step of the window logs, evaluates or saves: those read the device on purpose.
    quiet = [
        f"trainer.log_every={args.warmup + args.steps + 1}",
        f"schedule.max_steps={args.warmup + args.steps + 1}",
        "evaluate=false",
        "logger.mode=disabled",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, *quiet])
    settings = validate_train_config(cfg)
    ensure_data(settings)
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not cuda, mixed_precision=settings.trainer.precision)
    tokenizer = build_tokenizer(settings)
    task = build_task(settings, tokenizer)
    stream, evaluators = build_streams(settings, tokenizer, accelerator, task)
    trainer = build_trainer(settings, accelerator, task, stream, evaluators, run_dir=None)
    trainer.model.train()
    batches = iter(stream(0))
    for _ in range(args.warmup):
        trainer.train_step(batches)
    held = [[next(batches) for _ in range(trainer.accumulation)] for _ in range(args.steps)]
    window = iter(held)

    def step() -> None:
        trainer.train_step(iter(next(window)))

    result = {"counted": cuda, "warmup_steps": args.warmup, "steps": args.steps, "overrides": args.overrides}
    try:
        per_step = count_syncs(step, args.steps) or [{} for _ in range(args.steps)]
        result.update(
            syncs_per_step=[sum(sites.values()) for sites in per_step],
            sites=dict(sum((Counter(sites) for sites in per_step), Counter())),
        )
    except Exception:  # noqa: BLE001 - the JSON still says what happened
        result["error"] = traceback.format_exc()
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if "error" in result:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
