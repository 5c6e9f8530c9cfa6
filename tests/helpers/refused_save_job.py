"""One rank of the two-process full-disk test (started by torchrun from test_full_disk.py): the
storage refuses rank 1's random states in the save of step 4 (ENOSPC); rank 0's writes succeed.

    torchrun --nproc_per_node 2 tests/helpers/refused_save_job.py override ...
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import vilt_lab.training.checkpoint as checkpoint_module
from vilt_lab.train import main

write_tensors = checkpoint_module.write_tensors


def refused_on_rank_1(path, tensors):
    if os.environ["RANK"] == "1" and Path(path).parent.name == ".tmp-step_00000004":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write_tensors(path, tensors)


checkpoint_module.write_tensors = refused_on_rank_1
sys.argv[0] = "vilt-train"
main()
