"""One rank of the two-process task test (started by torchrun from test_tasks.py).

    torchrun --nproc_per_node 2 tests/helpers/ddp_task_job.py train OUT_DIR TASK override ...
    torchrun --nproc_per_node 2 tests/helpers/ddp_task_job.py eval OUT_DIR TASK override ...

`train` trains the task in two processes (every evaluation inside training gathers uneven
shares); `eval` runs vilt-eval's `evaluate`. One per job: a process group is not re-created
inside one torchrun job (Accelerate's reset between two runs would race on the rendezvous).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers.configs import TASK_OVERRIDES, compose_config, compose_eval_config
from vilt_lab.eval import evaluate
from vilt_lab.train import run

mode, out, task, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
if mode == "train":
    summary = run(compose_config([*overrides, *TASK_OVERRIDES[task]]))
else:
    summary = evaluate(compose_eval_config(overrides))
if int(os.environ["RANK"]) == 0:
    (out / f"{mode}_summary.json").write_text(json.dumps(summary))
