"""One rank of the two-process test (started by torchrun from test_distributed.py).

Runs the real entry point's `run` and records, per rank, the sample keys it trained on and its
final parameters, so the test can compare the ranks.

    torchrun --nproc_per_node 2 tests/helpers/ddp_job.py OUT_DIR override ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

import vilt_lab.build.trainer as build_trainer_module
import vilt_lab.train as train_module
from helpers.configs import compose_config

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
seen: list[str] = []
build_streams = train_module.build_streams


def recording_build_streams(*args, **kwargs):
    train_stream, evaluators = build_streams(*args, **kwargs)

    def recorded(start_step):
        for batch in train_stream(start_step):
            seen.extend(batch["keys"])
            yield batch

    return recorded, evaluators


class RecordingTrainer(build_trainer_module.Trainer):
    def fit(self) -> None:
        super().fit()
        state = self.acc.unwrap_model(self.model).state_dict()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, out / f"params_rank{rank}.pt")


train_module.build_streams = recording_build_streams
build_trainer_module.Trainer = RecordingTrainer
summary = train_module.run(compose_config(sys.argv[2:]))
(out / f"keys_rank{rank}.json").write_text(json.dumps(seen))
if rank == 0:
    (out / "summary.json").write_text(json.dumps(summary))
