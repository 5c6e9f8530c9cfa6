"""`vilt-eval checkpoint=<run dir>` evaluates what the run trained: its task, data, objectives,
resize and seed come from the run's config.yaml, and what the command line sets still wins.

Each config here is composed as vilt-eval's command line composes it: the keys it sets under a
node the run brings are forced (`forced_under_run_keys`), and the run's config is taken before
the config is resolved (`take_run_config`), so an interpolation typed on the command line
resolves against the run's values.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import vilt_lab
from helpers.configs import TASK_OVERRIDES, eval_settings, fast_config
from vilt_lab.build.task import build_eval_task
from vilt_lab.config.errors import ConfigError
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.eval import RUN_KEYS, evaluate, forced_under_run_keys, take_run_config
from vilt_lab.train import run

VQA_METRICS = {"eval/vqa/score", "eval/vqa/accuracy", "eval/vqa/accuracy/yes/no", "eval/vqa/questions"}
# The runs' evaluation batches (debug=fast: micro batches of 4), so the same batches are drawn.
AS_THE_RUN_EVALUATED = ["trainer.micro_batch_size=4", "data.num_workers=0", "trainer.progress=false"]


def eval_config(overrides: list[str]) -> DictConfig:
    """The config `vilt-eval <overrides>` runs with: composed, the run's config taken, resolved."""
    overrides = forced_under_run_keys(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    take_run_config(cfg, overrides)
    OmegaConf.resolve(cfg)
    return cfg


def evaluated(checkpoint: Path, out: Path, *overrides: str) -> dict:
    """vilt-eval's summary for `checkpoint=<checkpoint>`, batched as the runs evaluated, into `out`."""
    return evaluate(
        eval_config([f"checkpoint={checkpoint}", f"out_dir={out}", *AS_THE_RUN_EVALUATED, *overrides])
    )


@pytest.fixture(scope="module")
def vqa_run(shapes_world, tmp_path_factory) -> tuple[Path, dict]:
    """(run dir, summary) of a 4-step VQA fine-tuning run."""
    runs = tmp_path_factory.mktemp("vqa_runs")
    summary = run(fast_config(shapes_world, runs, *TASK_OVERRIDES["vqa"]))
    return Path(summary["run_dir"]), summary


@pytest.fixture(scope="module")
def pretrain_run(shapes_world, tmp_path_factory) -> tuple[Path, dict]:
    """(run dir, summary) of a 4-step pre-training run of ITM and MLM (the demo recipe weighs MLM
    0.3, vilt-eval's own objective=[itm,mlm] 1: the held-out loss tells them apart)."""
    runs = tmp_path_factory.mktemp("pretrain_runs")
    summary = run(fast_config(shapes_world, runs, "objective=[itm,mlm]"))
    return Path(summary["run_dir"]), summary


@pytest.mark.parametrize("where", ["run dir", "checkpoint"])
def test_a_vqa_run_evaluates_its_own_task_and_data(where, vqa_run, tmp_path, caplog) -> None:
    run_dir, trained = vqa_run
    best = run_dir / "checkpoints" / f"step_{trained['best']['step']:08d}"
    checkpoint = run_dir if where == "run dir" else best
    with caplog.at_level(logging.INFO, logger="vilt_lab.eval"):
        summary = evaluated(checkpoint, tmp_path)
    assert summary["task"] == "vqa" and VQA_METRICS <= set(summary["eval"])
    # The selected checkpoint on the run's validation split: the score that selected it.
    assert summary["eval"]["eval/vqa/score"] == pytest.approx(trained["best"]["value"], abs=1e-9)
    assert f"from {run_dir / 'config.yaml'}: {', '.join(RUN_KEYS)}" in caplog.text


def test_the_command_lines_task_and_data_win(vqa_run, pretrain_run, shapes_world, tmp_path) -> None:
    run_dir, _ = vqa_run
    own = evaluated(run_dir, tmp_path / "own")
    named = evaluated(run_dir, tmp_path / "named", "task=vqa", "data=shapes_vqa", f"data.root={shapes_world}")
    assert named["eval"] == own["eval"]
    # Zero-shot retrieval of the pre-training run: the command line's task and data, not the run's.
    retrieval = [o for o in TASK_OVERRIDES["irtr"] if o != "task.image_negatives=1"]
    zero_shot = evaluated(pretrain_run[0], tmp_path / "irtr", *retrieval, f"data.root={shapes_world}")
    assert zero_shot["task"] == "irtr" and "eval/irtr/ir_r1" in zero_shot["eval"]


def test_keys_under_a_taken_node_apply_on_top(vqa_run, shapes_world, tmp_path) -> None:
    run_dir, _ = vqa_run
    # The interpolation resolves against the run's data.root (vilt-eval's own is another).
    overrides = [f"checkpoint={run_dir}", "data.val_urls=${data.root}/vqa/train", "task.eval_test=true"]
    cfg = eval_config(overrides)
    # task.eval_test: a key of the run's task=vqa that vilt-eval's own task=pretrain lacks.
    assert (cfg.task.name, cfg.data.name, cfg.task.eval_test) == ("vqa", "shapes_vqa", True)
    assert cfg.data.val_urls == f"{shapes_world}/vqa/train"
    assert cfg.data.answers == f"{shapes_world}/vqa/answers.json"


def test_only_keys_under_the_runs_nodes_are_forced(vqa_run, tmp_path) -> None:
    run_dir, _ = vqa_run
    typed = [f"checkpoint={run_dir}", "task.text_batch_size=8", "data.root=/d", "split=test", "+data.x=1"]
    forced = [typed[0], "++task.text_batch_size=8", "++data.root=/d", "split=test", "+data.x=1"]
    assert forced_under_run_keys(typed) == forced
    # A node the command line chooses is vilt-eval's own: Hydra checks its keys as they are.
    assert forced_under_run_keys([*typed, "data=shapes_vqa"]) == [*forced[:2], *typed[2:], "data=shapes_vqa"]
    assert forced_under_run_keys([f"checkpoint={tmp_path}", *typed[1:]]) == [
        f"checkpoint={tmp_path}",
        *typed[1:],
    ]


def test_a_checkpoint_of_no_run_takes_nothing(tmp_path) -> None:
    overrides = [f"checkpoint={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    before = OmegaConf.to_container(cfg)
    assert take_run_config(cfg, overrides) == []
    assert OmegaConf.to_container(cfg) == before


def test_a_pretraining_run_reports_its_own_objectives(pretrain_run, tmp_path) -> None:
    run_dir, trained = pretrain_run
    # The run's evaluation read 2 batches (debug=fast): so does this one, on the same split.
    summary = evaluated(run_dir, tmp_path, "trainer.eval_batches=2")
    names = {key.split("/")[1] for key in summary["eval"] if key.count("/") == 2}
    assert names == {"itm", "mlm"}
    assert summary["eval"]["eval/samples"] == trained["eval"]["eval/samples"]
    # The run's objectives and weights (MLM at 0.3), the run's draws: the run's held-out loss.
    assert summary["eval"]["eval/loss"] == pytest.approx(trained["eval"]["eval/loss"], rel=1e-3)


def test_a_task_the_run_did_not_train_names_what_it_did(vqa_run, shapes_world, tmp_path) -> None:
    run_dir, _ = vqa_run
    with pytest.raises(ConfigError, match=r"its run trained task=vqa data=shapes_vqa; leave task=, data="):
        evaluated(run_dir, tmp_path, "task=pretrain", "data=shapes", f"data.root={shapes_world}")


def test_other_vqa_answers_name_the_runs_own(vqa_run, shapes_world, tmp_path) -> None:
    run_dir, _ = vqa_run
    answers = json.loads((shapes_world / "vqa" / "answers.json").read_text())
    other = tmp_path / "answers.json"
    other.write_text(json.dumps(answers[::-1]))
    own = f"data.answers={shapes_world / 'vqa' / 'answers.json'}"
    with pytest.raises(ConfigError, match=f"another vocabulary than data.answers={other}.*pass {own}"):
        evaluated(run_dir, tmp_path / "out", f"data.answers={other}")


def test_another_vocabulary_names_the_runs_tokenizer(vqa_run, shapes_world, tmp_path) -> None:
    run_dir, _ = vqa_run
    settings = eval_settings(eval_config([f"checkpoint={run_dir}"]))
    three_tokens = ["[PAD]", "[CLS]", "[SEP]"]  # a tokenizer's length is all the check reads
    with pytest.raises(ConfigError, match=f"has 3: pass data.tokenizer={shapes_world / 'tokenizer'}$"):
        build_eval_task(settings, three_tokens, str(run_dir))


@pytest.mark.slow
def test_the_command_line_evaluates_a_run_dir(vqa_run, shapes_world, tmp_path) -> None:
    """`vilt-eval checkpoint=<run dir>` as a user types it: `main` forces the keys under the run's
    nodes, the Hydra app reads the overrides."""
    run_dir, _ = vqa_run
    source = str(Path(vilt_lab.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "vilt_lab.eval", f"checkpoint={run_dir}", f"paths.runs_dir={tmp_path}"),
            # A key of the run's data that vilt-eval's own data=shapes lacks: set as typed.
            f"data.answers={shapes_world / 'vqa' / 'answers.json'}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"from {run_dir / 'config.yaml'}: {', '.join(RUN_KEYS)}" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "eval" / f"vqa-val-{run_dir.name}" / "summary.json").read_text())
    assert VQA_METRICS <= set(summary["eval"])
