"""Every task end to end on the shapes world: train, evaluate, select; two processes agree with one.

Acceptance 1 (each task trains a few steps and evaluates, in one process and in two gloo processes
with uneven shares, and the same weights evaluate to the same metrics), 3 (the VQA submission), 5
(the epoch schedule's step count) and 6 (retrieval negatives) of the fine-tuning issue.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.configs import TASK_OVERRIDES, compose_eval_config, fast_config
from helpers.ports import free_port
from vilt_lab.build.data import build_tokenizer
from vilt_lab.build.settings import trainer_settings
from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.data.shards import count_texts, expand_shards, iter_samples
from vilt_lab.eval import evaluate
from vilt_lab.evaluation.metrics import retrieval_recall
from vilt_lab.evaluation.submission import read_vqa_submission
from vilt_lab.train import run
from vilt_lab.training.schedule import steps_for_epochs

# What each task's evaluation reports, and the metric that picks its best checkpoint.
EXPECTED = {
    "pretrain": ({"eval/itm/accuracy", "eval/mlm/accuracy", "eval/samples"}, None),
    "vqa": ({"eval/vqa/score", "eval/vqa/accuracy", "eval/vqa/accuracy/yes/no"}, "eval/vqa/score"),
    "nlvr2": ({"eval/nlvr2/accuracy", "eval/nlvr2/statements"}, "eval/nlvr2/accuracy"),
    "irtr": ({f"eval/irtr/{d}_r{k}" for d in ("ir", "tr") for k in (1, 5, 10)}, "eval/irtr/the_metric"),
}
TASKS = sorted(EXPECTED)
RUN = ["trainer.eval_every=2", "trainer.ckpt_every=4", "trainer.keep_last=1"]


def last_checkpoint(run_dir: Path) -> Path:
    return sorted((run_dir / "checkpoints").glob("step_*"))[-1]


@pytest.fixture(scope="module", params=TASKS)
def trained(request, shapes_world, tmp_path_factory) -> tuple[str, Path, dict]:
    """(task, runs dir, summary) of a 4-step run in this process."""
    task, runs = request.param, tmp_path_factory.mktemp(f"runs_{request.param}")
    summary = run(fast_config(shapes_world, runs, *TASK_OVERRIDES[task], *RUN))
    return task, runs, summary


def test_every_task_trains_evaluates_and_selects(trained) -> None:
    task, runs, summary = trained
    keys, select = EXPECTED[task]
    assert summary["steps"] == 4 and summary["task"] == task
    assert keys <= set(summary["eval"]) and all(math.isfinite(v) for v in summary["eval"].values())
    lines = [json.loads(line) for line in (runs / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if keys <= set(line)] == [2, 4]  # eval_every=2, and the end
    if select is None:
        assert summary["best"] is None
        return
    assert summary["best"]["metric"] == select
    kept = {p.name for p in (runs / "demo" / "checkpoints").glob("step_*")}
    # keep_last=1 keeps step 4; the best (step 2 or 4) is kept besides it.
    assert kept == {"step_00000004", f"step_{summary['best']['step']:08d}"}


def torchrun(mode: str, out: Path, task: str, *overrides: str) -> dict:
    """Run tests/helpers/ddp_task_job.py in two gloo processes; its rank-0 summary."""
    # The caller's PYTHONPATH stays after tests/: a checkout run with PYTHONPATH=src tests its own copy.
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_addr", "127.0.0.1", "--master_port", str(free_port())),
        *(str(Path(__file__).parent / "helpers" / "ddp_task_job.py"), mode, str(out), task, *overrides),
    ]
    # A hang (a rank out of data, a collective only one rank reaches) fails here, not forever.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / f"{mode}_summary.json").read_text())


@pytest.mark.slow
def test_two_processes_train_and_evaluate_as_one(trained, shapes_world, tmp_path) -> None:
    """Two gloo processes on uneven shares (val: shards of 20 and 10 samples) train without a
    hang, and evaluate the one-process run's weights to the one-process metrics."""
    task, runs, _ = trained
    epochs_and_batch = ["schedule.max_steps=null", "schedule.max_epochs=0.1", "trainer.global_batch_size=8"]
    train_summary = torchrun(
        "train",
        tmp_path,
        task,
        *("experiment=demo", "debug=fast", "data.generate_n=0", "resume=null", "data.num_workers=1"),
        *(f"data.root={shapes_world}", f"paths.runs_dir={tmp_path / 'runs'}", *epochs_and_batch),
    )
    cfg = fast_config(shapes_world, tmp_path, *TASK_OVERRIDES[task])
    urls = cfg.data.sources.shapes.urls
    # Acceptance 5: a tenth of an epoch of the train split's items at 8 a step, over 2 processes.
    items = count_texts(expand_shards(urls)) if task in ("vqa", "nlvr2") else len(list(iter_samples(urls)))
    assert train_summary["steps"] == steps_for_epochs(items, 0.1, 8)
    assert EXPECTED[task][0] <= set(train_summary["eval"])

    checkpoint = last_checkpoint(runs / "demo")
    one = evaluate(eval_config(task, shapes_world, checkpoint, tmp_path / "one"))
    two = torchrun("eval", tmp_path, task, *eval_overrides(task, shapes_world, checkpoint, tmp_path / "two"))
    assert two["eval"].keys() == one["eval"].keys()
    # Pre-training's held-out means draw in-batch ITM negatives and MLM masks per batch, and the
    # batches of two shares are not those of one: only the samples seen can be equal there.
    exact = ["eval/samples"] if task == "pretrain" else list(one["eval"])
    for key in exact:
        assert two["eval"][key] == pytest.approx(one["eval"][key], abs=1e-6), key


def eval_overrides(task: str, world: Path, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"checkpoint={checkpoint}",
        f"data.root={world}",
        f"out_dir={out}",
        "data.num_workers=0",
        "trainer.progress=false",
        "trainer.micro_batch_size=8",
        *[o for o in TASK_OVERRIDES[task] if not o.startswith("+model.")],
        *extra,
    ]


def eval_config(task: str, world: Path, checkpoint: Path, out: Path, *extra: str):
    return compose_eval_config(eval_overrides(task, world, checkpoint, out, *extra))


@pytest.mark.parametrize("trained", ["vqa"], indirect=True)
def test_vqa_submission_holds_every_question_once(trained, shapes_world, tmp_path) -> None:
    task, runs, _ = trained
    # The shapes world has no VQA test split: its val split stands in for test-dev.
    cfg = eval_config(
        task,
        shapes_world,
        last_checkpoint(runs / "demo"),
        tmp_path,
        "split=test",
        f"data.test_urls={shapes_world}/vqa/val",
    )
    summary = evaluate(cfg)
    submitted = read_vqa_submission(summary["submission"])
    questions = [
        int(q["id"]) for _, _, meta in iter_samples(shapes_world / "vqa" / "val") for q in meta["questions"]
    ]
    assert list(submitted) == questions and len(set(questions)) == len(questions)
    vocabulary = set(json.loads((shapes_world / "vqa" / "answers.json").read_text()))
    assert set(submitted.values()) <= vocabulary
    assert (tmp_path / "summary.json").is_file() and summary["eval"]["eval/vqa/questions"] == len(questions)


@pytest.mark.parametrize("trained", ["irtr"], indirect=True)
def test_retrieval_scores_file_holds_what_was_ranked(trained, shapes_world, tmp_path) -> None:
    task, runs, _ = trained
    cfg = eval_config(task, shapes_world, last_checkpoint(runs / "demo"), tmp_path, "save_scores=true")
    summary = evaluate(cfg)
    record = torch.load(summary["scores"], weights_only=True)
    keys = [key for key, _, _ in iter_samples(cfg.data.val_urls)]
    assert record["image_keys"] == keys and record["scores"].shape == (len(keys), len(record["text_image"]))
    for key, value in retrieval_recall(record["scores"], record["text_image"]).items():
        assert summary["eval"][f"eval/irtr/{key}"] == pytest.approx(value, abs=1e-9), key


def test_save_scores_is_refused_for_a_task_without_scores(shapes_world, tmp_path) -> None:
    # Refused before any work: the checkpoint is not even there.
    cfg = eval_config("vqa", shapes_world, tmp_path / "absent", tmp_path, "save_scores=true")
    with pytest.raises(ValueError, match="save_scores=true: task=vqa has no score matrix"):
        evaluate(cfg)


@pytest.mark.parametrize("micro", [24, 8])  # accumulation 1 and 3
def test_epoch_schedule_counts_items_not_micro_batches(micro, shapes_world, tmp_path) -> None:
    cfg = fast_config(
        shapes_world,
        tmp_path,
        *TASK_OVERRIDES["vqa"],
        "schedule.max_steps=null",
        "schedule.max_epochs=2",
        "trainer.global_batch_size=24",
        f"trainer.micro_batch_size={micro}",
    )
    questions = count_texts(expand_shards(shapes_world / "vqa" / "train"))
    assert (
        trainer_settings(cfg).max_steps == math.ceil(2 * questions / 24) == steps_for_epochs(questions, 2, 24)
    )


def test_epoch_and_step_schedules_exclude_each_other(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, *TASK_OVERRIDES["vqa"], "schedule.max_epochs=2")
    with pytest.raises(ValueError, match="exactly one of schedule.max_steps"):
        trainer_settings(cfg)


@pytest.fixture(scope="module")
def pool(shapes_world) -> CaptionPool:
    return CaptionPool.from_shards(
        shapes_world / "retrieval" / "train", load_pool_tokenizer(shapes_world), 40
    )


def load_pool_tokenizer(world: Path):
    return build_tokenizer(fast_config(world, world))


def test_negatives_exclude_the_images_own_captions(pool) -> None:
    images = torch.arange(pool.num_images).repeat(4)
    drawn = pool.draw_negatives(images, 15, torch.Generator().manual_seed(0))
    assert drawn.shape == (len(images), 15)
    assert not (pool.text_image[drawn] == images[:, None]).any()
    # The official draw hits them: 15 of the pool's 5 captions per image x ~100 images.
    official = pool.draw_negatives(images, 15, torch.Generator().manual_seed(0), exclude_own=False)
    assert (pool.text_image[official] == images[:, None]).any()


def test_negatives_are_uniform_over_the_other_captions() -> None:
    """Each image's negatives spread evenly over every caption but its own (the official draw
    with its own captions rejected): on images of 1, 2 and 3 captions, 60,000 draws each."""
    counts = [2, 1, 3, 2]
    pool = CaptionPool(
        torch.zeros(sum(counts), 4, dtype=torch.int32),
        torch.full((sum(counts),), 4),
        torch.arange(len(counts)).repeat_interleave(torch.tensor(counts)),
        [f"img{i}" for i in range(len(counts))],
    )
    generator = torch.Generator().manual_seed(0)
    for image in range(len(counts)):
        drawn = pool.draw_negatives(torch.tensor([image]), 60_000, generator)[0]
        hits = torch.bincount(drawn, minlength=len(pool)).float()
        own = pool.text_image == image
        assert (hits[own] == 0).all()
        share = hits[~own] / hits.sum()
        expected = 1 / int((~own).sum())
        # Binomial standard error at n = 60,000 is under 0.002: 0.006 is three of them.
        assert (share - expected).abs().max() < 0.006, (image, share)


def test_negatives_are_a_function_of_the_generator(pool) -> None:
    images = torch.arange(pool.num_images)
    first = pool.draw_negatives(images, 15, torch.Generator().manual_seed(7))
    again = pool.draw_negatives(images, 15, torch.Generator().manual_seed(7))
    other = pool.draw_negatives(images, 15, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_a_task_whose_data_does_not_fit_stops_naming_both(shapes_world, tmp_path) -> None:
    with pytest.raises(
        ValueError, match=r"task=vqa needs data whose samples carry questions, but data=shapes "
    ):
        run(fast_config(shapes_world, tmp_path, "task=vqa"))
    with pytest.raises(FileNotFoundError, match=r"task=vqa: data.answers .*=/nowhere/answers.json"):
        run(fast_config(shapes_world, tmp_path, *TASK_OVERRIDES["vqa"], "data.answers=/nowhere/answers.json"))
