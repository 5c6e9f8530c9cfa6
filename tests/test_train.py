"""The trainer end to end, in-process: configs, schedule, resume, corrupt data, W&B offline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from hydra import compose, initialize_config_dir

from helpers.configs import TASK_OVERRIDES, compose_config, fast_config, train_settings
from helpers.faults import Killed, kill_after
from helpers.run_dirs import final_weights
from helpers.wandb_offline import wait_for_offline_run
from vilt_lab.build.data import build_streams, build_tokenizer
from vilt_lab.build.task import build_task
from vilt_lab.build.trainer import build_trainer
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.train import run
from vilt_lab.training.metrics_log import read_metrics
from vilt_lab.training.schedule import lr_factor, warmup_steps_from
from vilt_lab.training.tracking import reset_accelerate_state

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# The shapes-world experiments run anywhere; the paper's fine-tuning recipes need real data.
SHAPES_EXPERIMENTS = [e for e in EXPERIMENTS if e == "demo" or e.startswith("finetune_demo_")]
PAPER_FINETUNING = [e for e in EXPERIMENTS if e.startswith("finetune_") and e not in SHAPES_EXPERIMENTS]
# Beyond the paper: its future work on scale (docs/scale.md; tests/test_scale.py checks it).
FUTURE_WORK = ["pretrain_large32_14m"]
PAPER_PRETRAINING = [e for e in EXPERIMENTS if e.startswith("pretrain_") and e not in FUTURE_WORK]
CPU_PROCESS = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))


def test_every_experiment_is_covered():
    assert set(EXPERIMENTS) == {*SHAPES_EXPERIMENTS, *PAPER_FINETUNING, *PAPER_PRETRAINING, *FUTURE_WORK}


@pytest.mark.parametrize("experiment", PAPER_PRETRAINING)
def test_paper_pretraining_recipe_is_official(experiment, tmp_path):
    """The official pre-training (reference Sec. 2.5, 3.1-3.2) with every faithful-recipe switch
    at its official value."""
    cfg = compose_config([f"experiment={experiment}", f"paths.runs_dir={tmp_path}"])
    weights = {name: values.weight for name, values in cfg.objective.items() if values.selected}
    assert weights == {"itm": 1.0, "mlm": 1.0, "wpa": 0.1}
    assert cfg.model.size == "base32" and cfg.model.init_from == "original:vit_base_patch32_384"
    assert (cfg.schedule.max_steps, cfg.schedule.warmup, cfg.optim.lr) == (100_000, 2500, 1e-4)
    assert (cfg.trainer.global_batch_size, cfg.trainer.precision, cfg.task.max_image_len) == (
        4096,
        "fp16",
        200,
    )
    assert cfg.objective.mlm.whole_word and cfg.objective.mlm.rule == "official"
    assert cfg.objective.itm.negatives == "same_source" and cfg.data.caption_sampling == "per_caption"
    assert cfg.data.name == "4m"


@pytest.mark.parametrize("experiment", SHAPES_EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, shapes_world, tmp_path):
    cfg = compose_config(
        [
            f"experiment={experiment}",
            f"data.root={shapes_world}",
            f"paths.runs_dir={tmp_path}",
            "data.num_workers=0",
            "model.init_from=null",
        ]
    )
    cfg = train_settings(cfg)
    tokenizer = build_tokenizer(cfg)
    task = build_task(cfg, tokenizer)
    train_stream, evaluators = build_streams(cfg, tokenizer, CPU_PROCESS, task)
    batch = next(iter(train_stream(0)))
    batch.pop("skipped")
    out = task(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    assert set(evaluators) == {"eval"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("logger", ["disabled", "wandb"])
def test_a_logger_chosen_on_the_command_line_wins_over_the_experiment(experiment, logger, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # logger=wandb's mode defaults to it
    chosen = compose_config([f"experiment={experiment}", f"logger={logger}", "model.init_from=x"])
    assert chosen.logger.mode == ("disabled" if logger == "disabled" else "online")


# The official fine-tuning hyper-parameters (reference Sec. 3.1-3.2, 4.2-4.4): task, data, global
# batch, head learning-rate multipliers, evaluations per epoch; lr 1e-4, 10 epochs, warmup 10%.
OFFICIAL = {
    "finetune_vqa": ("vqa", "vqav2", 256, {"objectives.vqa.head.": 10}, 10),
    "finetune_nlvr2": ("nlvr2", "nlvr2", 128, {}, 1),
    "finetune_irtr_coco": ("irtr", "coco", 256, {}, 1),
    "finetune_irtr_f30k": ("irtr", "f30k", 256, {}, 1),
}


@pytest.mark.parametrize("experiment", PAPER_FINETUNING)
def test_paper_finetuning_recipes_are_official(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"paths.runs_dir={tmp_path}", "model.init_from=/ckpt"])
    task, data, batch, lr_mult, evals = OFFICIAL[experiment.removesuffix("_randaug")]
    assert (cfg.task.name, cfg.data.name, cfg.model.size) == (task, data, "base32")
    assert (cfg.optim.lr, cfg.trainer.global_batch_size, dict(cfg.optim.lr_mult)) == (1e-4, batch, lr_mult)
    assert (cfg.schedule.max_steps, cfg.schedule.max_epochs, cfg.schedule.warmup) == (None, 10, 0.1)
    assert cfg.trainer.evals_per_epoch == evals and cfg.task.max_image_len == -1
    assert cfg.augment.name == ("randaugment" if experiment.endswith("_randaug") else "pixelbert")
    assert cfg.model.get("num_modality_types", 2) == (3 if task == "nlvr2" else 2)
    with pytest.raises(Exception, match="model.init_from is required"):  # its pre-trained start
        compose_config([f"experiment={experiment}", f"paths.runs_dir={tmp_path}"])


def test_bad_batch_split_names_the_keys(shapes_world, tmp_path):
    cfg = fast_config(shapes_world, tmp_path, "trainer.global_batch_size=6", "trainer.micro_batch_size=4")
    with pytest.raises(ValueError, match="trainer.global_batch_size=6 .* trainer.micro_batch_size=4"):
        run(cfg)


@pytest.mark.parametrize("accumulation", [1, 3])
def test_lr_follows_the_curve_per_optimizer_step(accumulation, shapes_world, tmp_path):
    micro = 2
    cfg = fast_config(
        shapes_world,
        tmp_path,
        "schedule.max_steps=6",
        "schedule.warmup=2",
        f"trainer.global_batch_size={micro * accumulation}",
        f"trainer.micro_batch_size={micro}",
        "trainer.ckpt_every=100",
        "evaluate=false",
    )
    run(cfg)
    lines = [m for m in read_metrics(tmp_path / "demo" / "metrics.jsonl") if "train/lr" in m]
    warmup = warmup_steps_from(2, 6)
    assert [m["step"] for m in lines] == list(range(1, 7))
    for m in lines:
        assert m["train/lr"] == pytest.approx(
            cfg.optim.lr * lr_factor(m["step"], warmup, 6), rel=1e-9, abs=1e-15
        )


@pytest.mark.parametrize("grad_clip", ["null", "1.0"])
def test_the_gradient_norm_is_logged_with_or_without_clipping(grad_clip, shapes_world, tmp_path):
    cfg = fast_config(
        shapes_world, tmp_path, "schedule.max_steps=2", f"optim.grad_clip={grad_clip}", "evaluate=false"
    )
    run(cfg)
    logged = [m for m in read_metrics(tmp_path / "demo" / "metrics.jsonl") if "train/loss" in m]
    assert logged and all(math.isfinite(m["train/grad_norm"]) and m["train/grad_norm"] > 0 for m in logged)


def test_train_step_is_the_runs_step_without_a_run_dir(shapes_world, tmp_path):
    """Two `train_step`s driven by hand, by a trainer built without a run dir, reach the weights
    of a two-step run (accumulation 2), and write nothing."""
    cfg = fast_config(
        shapes_world,
        tmp_path / "runs",
        "schedule.max_steps=2",
        "trainer.global_batch_size=4",
        "trainer.micro_batch_size=2",
        "evaluate=false",
    )
    run(cfg)
    cfg = train_settings(cfg)
    accelerator = Accelerator(cpu=True)
    try:
        set_seed(cfg.seed)  # as a run does before building the task
        tokenizer = build_tokenizer(cfg)
        task = build_task(cfg, tokenizer)
        train_stream, evaluators = build_streams(cfg, tokenizer, accelerator, task)
        trainer = build_trainer(cfg, accelerator, task, train_stream, evaluators, run_dir=None)
        trainer.model.train()
        batches = iter(train_stream(0))
        results = [trainer.train_step(batches) for _ in range(2)]
    finally:
        reset_accelerate_state()
    assert trainer.step == 2 and [len(result.outputs) for result in results] == [2, 2]
    state = accelerator.unwrap_model(trainer.model).state_dict()
    for key, value in final_weights(tmp_path / "runs" / "demo").items():
        assert torch.equal(state[key], value), key
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]


@pytest.mark.parametrize("task", ["pretrain", "irtr"])
def test_resume_continues_exactly(task, shapes_world, tmp_path, monkeypatch):
    """Retrieval too: its negatives are drawn from the step's generator, so a resumed run draws
    the captions a straight run would have (acceptance 6 of the fine-tuning issue). At the
    default thread count: bit-identical (see docs/reliability.md, "Exactness")."""
    n = 3
    common = [
        *TASK_OVERRIDES[task],
        f"schedule.max_steps={2 * n}",
        "schedule.warmup=2",
        f"trainer.ckpt_every={n}",
        "trainer.log_every=1",
        "evaluate=false",
    ]
    run(fast_config(shapes_world, tmp_path, "name=straight", *common))

    # Killed two steps after the checkpoint at step n: steps n+1 and n+2 were already logged.
    kill_after(monkeypatch, batches=n + 2)
    with pytest.raises(Killed):
        run(fast_config(shapes_world, tmp_path, "name=resumed", *common))
    monkeypatch.undo()
    assert [m["step"] for m in read_metrics(tmp_path / "resumed" / "metrics.jsonl")] == list(range(1, n + 3))
    run(fast_config(shapes_world, tmp_path, "name=resumed", "resume=latest", *common))

    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key
    steps = [m["step"] for m in read_metrics(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == list(range(1, 2 * n + 1)), "no duplicated or missing step"


def test_fresh_run_refuses_a_run_dir_with_checkpoints(shapes_world, tmp_path):
    cfg = fast_config(shapes_world, tmp_path, "evaluate=false")
    run(cfg)
    with pytest.raises(FileExistsError, match="resume=latest"):
        run(cfg)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run(fast_config(shapes_world, tmp_path, "name=other", "resume=latest"))


def test_run_dir_holds_config_overrides_git_summary(shapes_world, tmp_path):
    summary = run(fast_config(shapes_world, tmp_path), overrides=["debug=fast"])
    run_dir = tmp_path / "demo"
    assert "size: tiny" in (run_dir / "config.yaml").read_text()
    assert "debug=fast" in (run_dir / "overrides.yaml").read_text()
    assert "commit" in json.loads((run_dir / "git.json").read_text())
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["eval"] == summary["eval"] and "eval/itm/accuracy" in on_disk["eval"]
    assert not list((run_dir / "checkpoints").glob(".tmp-*")), "no temporary checkpoint is left"


def corrupt_samples(world: Path) -> list[dict]:
    """Four defective samples: truncated JPEG, non-image payload, missing and empty caption."""
    jpeg = next((world / "pretrain" / "train").glob("*.tar"))
    import webdataset as wds

    good = next(iter(wds.WebDataset(str(jpeg), shardshuffle=False)))
    image = good["jpg"]
    caption = json.dumps({"id": "x", "captions": ["a red circle"]})
    return [
        {"__key__": "truncated", "jpg": image[: len(image) // 3], "json": caption},
        {"__key__": "notimage", "jpg": b"this is not an image", "json": caption},
        {"__key__": "nocaption", "jpg": image, "json": json.dumps({"id": "y"})},
        {"__key__": "emptycaption", "jpg": image, "json": json.dumps({"id": "z", "captions": [""]})},
    ]


def test_corrupt_samples_train_through_and_are_counted(shapes_world, tmp_path, write_raw_shard):
    import webdataset as wds

    good = list(
        wds.WebDataset(str(next((shapes_world / "pretrain" / "train").glob("*.tar"))), shardshuffle=False)
    )
    samples = [{k: v for k, v in s.items() if k in ("__key__", "jpg", "json")} for s in good[:8]]
    bad_dir = write_raw_shard("corrupt", corrupt_samples(shapes_world) + samples)
    summary = run(
        fast_config(shapes_world, tmp_path, f"data.sources.shapes.urls={bad_dir}", "evaluate=false")
    )
    assert summary["samples_skipped"] >= 4
    logged = [m["train/samples_skipped"] for m in read_metrics(tmp_path / "demo" / "metrics.jsonl")]
    assert logged[-1] == summary["samples_skipped"]


def test_offline_wandb_run_holds_config_and_metrics(shapes_world, tmp_path):
    cfg = fast_config(shapes_world, tmp_path, "logger.mode=offline")
    run(cfg, overrides=["logger.mode=offline"])
    run_dir = tmp_path / "demo"
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    recorded = wait_for_offline_run(offline[0])
    assert recorded["finished"], "the run's exit record never reached the file"
    assert recorded["config"]["model"]["size"] == "tiny"
    assert recorded["config"]["overrides"] == ["logger.mode=offline"]
    assert recorded["config"]["objective"]["wpa"]["weight"] == cfg.objective.wpa.weight
    logged = {m["step"]: m for m in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in m}
    history = {row["_step"]: row for row in recorded["history"] if "train/loss" in row}
    assert history.keys() == logged.keys()
    for step, row in history.items():
        assert row["train/loss"] == pytest.approx(logged[step]["train/loss"])
    assert any("eval/itm/accuracy" in row for row in recorded["history"])


def test_slurm_launcher_composes(tmp_path):
    cfg = compose_config(["experiment=demo", "launcher=slurm", f"paths.runs_dir={tmp_path}"])
    assert cfg.launcher.name == "slurm"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("train", overrides=["launcher=slurm"], return_hydra_config=True)
    assert hydra_cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert hydra_cfg.hydra.launcher.tasks_per_node == hydra_cfg.hydra.launcher.gpus_per_node
