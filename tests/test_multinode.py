"""Two nodes on one shared filesystem (two torchrun launches on localhost) start from an empty
data dir: one process writes the shapes world, the other waits for it, and both train. And the
world is only ever written into an empty or missing `data.root`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.configs import compose_config
from helpers.ports import free_port
from helpers.run_dirs import only_run_dir
from vilt_lab.build.data import ensure_data
from vilt_lab.data.shards import read_sizes

GENERATE_N = 200  # training scenes: two shards, one per rank
WRITING = "writing the shapes world"  # what ensure_data prints when it writes


def launch_node(node_rank: int, port: int, overrides: list[str], cwd: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *("--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank)),
        *("--master_addr", "127.0.0.1", "--master_port", str(port)),
        *("-m", "vilt_lab.train", *overrides),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a hang is killed whole
    )


@pytest.mark.slow
def test_two_nodes_write_the_world_once(tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()  # empty, as a fresh shared data dir
    overrides = [
        "experiment=demo",
        "debug=fast",
        "resume=null",
        "evaluate=false",
        f"data.root={data_root}",
        f"data.generate_n={GENERATE_N}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        "trainer.micro_batch_size=2",  # debug=fast's batch of 4 over two processes
    ]
    port = free_port()
    nodes = [launch_node(rank, port, overrides, tmp_path) for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    for rank, (node, output) in enumerate(zip(nodes, outputs, strict=True)):
        assert node.returncode == 0, f"node {rank}:\n{output[-3000:]}"

    assert sum(output.count(WRITING) for output in outputs) == 1, "one process wrote the world"
    assert (data_root / "tokenizer" / "tokenizer.json").is_file()
    assert sum(read_sizes(data_root / "pretrain" / "train").values()) == GENERATE_N
    assert not list(tmp_path.glob(".data.partial*")), "no half-written copy left"
    summary = json.loads((only_run_dir(tmp_path / "runs") / "summary.json").read_text())
    assert summary["steps"] == 4


def test_a_data_root_holding_other_files_is_refused_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("someone's data")
    cfg = compose_config([f"data.root={tmp_path}", "data.generate_n=10"])
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        ensure_data(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
