"""Two CPU processes (gloo, launched by torchrun) train on shards with uneven sample counts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import webdataset as wds

from helpers.configs import FAST
from helpers.ports import torchrun
from vilt_lab.training.metrics_log import read_metrics
from vilt_lab.training.schedule import lr_factor

SHARD_SIZES = [9, 9, 4, 2]  # dealt two per rank: one rank holds far fewer samples than the other


def uneven_shards(world: Path, out: Path) -> Path:
    samples = list(
        wds.WebDataset(
            str(world / "pretrain" / "train" / "shard-*.tar").replace("*", "{000000..000004}"),
            shardshuffle=False,
        )
    )
    out.mkdir()
    sizes, start = {}, 0
    for i, n in enumerate(SHARD_SIZES):
        name = f"shard-{i:06d}.tar"
        with wds.TarWriter(str(out / name), encoder=False) as tar:
            for sample in samples[start : start + n]:
                tar.write({k: sample[k] for k in ("__key__", "jpg", "json")})
        sizes[name] = n
        start += n
    (out / "sizes.json").write_text(json.dumps(sizes))
    return out


@pytest.mark.slow
def test_two_processes_disjoint_and_in_sync(shapes_world, tmp_path):
    shards = uneven_shards(shapes_world, tmp_path / "shards")
    steps, micro, accumulation, lr = 8, 2, 2, 1e-3
    overrides = [
        *FAST,
        f"optim.lr={lr}",
        f"data.root={shapes_world}",
        f"data.sources.shapes.urls={shards}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"schedule.max_steps={steps}",
        "schedule.warmup=3",
        f"trainer.micro_batch_size={micro}",
        f"trainer.global_batch_size={micro * accumulation * 2}",
        "trainer.ckpt_every=4",
        "trainer.log_every=1",
        "data.num_workers=1",
        "evaluate=true",
    ]
    # The caller's PYTHONPATH stays after tests/: a checkout run with PYTHONPATH=src tests its own copy.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = torchrun(Path(__file__).parent / "helpers" / "ddp_job.py", str(tmp_path), *overrides)
    # A hang (a rank out of data, a collective only one rank reaches) fails here, not forever.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    keys = [json.loads((tmp_path / f"keys_rank{r}.json").read_text()) for r in (0, 1)]
    # Each optimizer step reads `accumulation` micro-batches per rank.
    assert len(keys[0]) == len(keys[1]) == steps * accumulation * micro
    assert not set(keys[0]) & set(keys[1]), "the ranks read disjoint samples"

    params = [torch.load(tmp_path / f"params_rank{r}.pt") for r in (0, 1)]
    for name, value in params[0].items():
        assert torch.equal(value, params[1][name]), name

    run_dir = tmp_path / "runs" / "demo"
    lines = [m for m in read_metrics(run_dir / "metrics.jsonl") if "train/lr" in m]
    assert [m["step"] for m in lines] == list(range(1, steps + 1))
    for m in lines:  # p = 2 processes, k = 2 accumulation: still one curve point per optimizer step
        assert m["train/lr"] == pytest.approx(lr * lr_factor(m["step"], 3, steps), rel=1e-9, abs=1e-15)
    assert json.loads((tmp_path / "summary.json").read_text())["eval"]["eval/samples"] > 0
