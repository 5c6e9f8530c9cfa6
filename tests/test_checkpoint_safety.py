"""Checkpoints are data (never code), complete or ignored, and never hold non-finite weights;
a resume honours the run's record or refuses."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.configs import fast_config, train_settings
from helpers.faults import poison_loss_from_call
from helpers.run_dirs import set_manifest_size
from vilt_lab import convert_cli
from vilt_lab.build.data import build_tokenizer
from vilt_lab.build.task import build_task
from vilt_lab.train import run
from vilt_lab.training.checkpoint import MANIFEST, latest_checkpoint, verify
from vilt_lab.training.nonfinite import NonFiniteError
from vilt_lab.training.run_dir import ResumeRefused, RunDir, resolve_run_dir
from vilt_lab.training.run_name import command_run_name
from vilt_lab.weights.checkpoint_io import CheckpointFileError

RUN = ("evaluate=false", "trainer.log_every=1")


class Marker:
    """Unpickling this creates the marker file: proof that a pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path(self.path).touch, ())


def crafted_pickle(marker: Path) -> bytes:
    return pickle.dumps({"state": Marker(marker)})


@pytest.fixture(scope="module")
def finished_run(shapes_world, tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4."""
    runs = tmp_path_factory.mktemp("runs")
    run(fast_config(shapes_world, runs, *RUN))
    return runs / "demo"


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_checkpoint_files_are_safetensors_and_json(finished_run):
    checkpoint = finished_run / "checkpoints" / "step_00000004"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert all(name.endswith((".safetensors", ".json")) for name in names), names
    assert verify(checkpoint) is None
    assert set(json.loads((checkpoint / MANIFEST).read_text())["files"]) == set(names) - {MANIFEST}


CHECKPOINT_FILES = [
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "random_states_0.safetensors",
    "random_states_0.json",
    "trainer_state.json",
]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_crafted_pickle_in_any_file_is_refused_by_resume(name, finished_run, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    copy_run(finished_run, runs / "demo")
    checkpoint = runs / "demo" / "checkpoints" / "step_00000004"
    marker = tmp_path / "marker"
    (checkpoint / name).write_bytes(crafted_pickle(marker))
    # Caught by the manifest (the size changed) ...
    with pytest.raises(CheckpointFileError, match=MANIFEST):
        run(fast_config(shapes_world, runs, *RUN, f"resume={checkpoint}"))
    # ... and by the file's own reader when the manifest is made to agree.
    set_manifest_size(checkpoint, name)
    with pytest.raises(CheckpointFileError, match=name):
        run(fast_config(shapes_world, runs, *RUN, f"resume={checkpoint}"))
    assert not marker.exists(), "the pickle's code ran"


def test_accelerate_pickles_in_a_checkpoint_are_never_read(finished_run, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    copy_run(finished_run, runs / "demo")
    checkpoint = runs / "demo" / "checkpoints" / "step_00000002"
    marker = tmp_path / "marker"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scaler.pt"):
        (checkpoint / name).write_bytes(crafted_pickle(marker))
    run(fast_config(shapes_world, runs, *RUN, f"resume={checkpoint}"))
    assert not marker.exists()


def test_crafted_pickle_is_refused_by_init_from_and_vilt_convert(
    finished_run, shapes_world, tmp_path, capsys
):
    """Weights are all that `init_from` and `vilt-convert run` read from a checkpoint."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    checkpoint = run_dir / "checkpoints" / "step_00000004"
    marker = tmp_path / "marker"
    (checkpoint / "model.safetensors").write_bytes(crafted_pickle(marker))
    cfg = train_settings(fast_config(shapes_world, tmp_path / "runs", f"model.init_from={checkpoint}"))
    with pytest.raises(CheckpointFileError, match="model.safetensors"):
        build_task(cfg, build_tokenizer(cfg))
    assert convert_cli.main(["run", str(checkpoint), "--out", str(tmp_path / "out")]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not marker.exists()


def test_truncated_weights_name_the_file(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    weights = run_dir / "checkpoints" / "step_00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert convert_cli.main(["run", str(weights.parent), "--out", str(tmp_path / "out")]) == 2
    assert str(weights) in capsys.readouterr().err


def test_latest_falls_back_to_the_newest_complete_checkpoint(finished_run, shapes_world, tmp_path, caplog):
    runs = tmp_path / "runs"
    copy_run(finished_run, runs / "demo")
    newest = runs / "demo" / "checkpoints" / "step_00000004"
    (newest / "optimizer.safetensors").unlink()
    found, skipped = latest_checkpoint(newest.parent)
    assert found.name == "step_00000002" and skipped[0][0] == newest
    with caplog.at_level(logging.WARNING):
        summary = run(fast_config(shapes_world, runs, *RUN, "resume=latest"))
    assert "skipping" in caplog.text and "optimizer.safetensors is missing" in caplog.text
    assert summary["steps"] == 4 and verify(newest) is None, "step 4 trained again and re-saved"


# ------------------------------------------------------------------------------- non-finite
def test_huge_learning_rate_stops_with_no_nonfinite_checkpoint(shapes_world, tmp_path):
    cfg = fast_config(shapes_world, tmp_path, *RUN, "optim.lr=1e12", "trainer.ckpt_every=1")
    with pytest.raises(NonFiniteError, match=r"step \d+: non-finite") as err:
        run(cfg)
    assert "no optimizer step was taken" in str(err.value)
    for checkpoint in (tmp_path / "demo" / "checkpoints").glob("step_*"):
        for key, tensor in load_file(checkpoint / "model.safetensors").items():
            assert torch.isfinite(tensor).all(), f"{checkpoint.name}: {key}"


def test_a_run_turning_nonfinite_keeps_its_finite_checkpoints(shapes_world, tmp_path, monkeypatch):
    poison_loss_from_call(monkeypatch, first_bad_call=6)
    cfg = fast_config(shapes_world, tmp_path, *RUN, "schedule.max_steps=10", "trainer.keep_last=1")
    with pytest.raises(NonFiniteError, match=r"step 6: non-finite itm/loss"):
        run(cfg)
    checkpoints = sorted((tmp_path / "demo" / "checkpoints").glob("step_*"))
    assert [p.name for p in checkpoints] == ["step_00000004"]
    assert all(torch.isfinite(t).all() for t in load_file(checkpoints[0] / "model.safetensors").values())


def test_skip_leaves_out_a_bounded_number_of_steps(shapes_world, tmp_path, monkeypatch):
    from vilt_lab.tasks.module import TaskModule

    forward, calls = TaskModule.forward, [0]

    def nan_on_step_3(self, batch, generator=None):
        out = forward(self, batch, generator)
        calls[0] += self.training
        if self.training and calls[0] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(TaskModule, "forward", nan_on_step_3)
    summary = run(fast_config(shapes_world, tmp_path, *RUN, "trainer.nonfinite=skip"))
    assert summary["steps"] == 4
    state = json.loads(
        (tmp_path / "demo" / "checkpoints" / "step_00000004" / "trainer_state.json").read_text()
    )
    assert state["steps_skipped"] == 1

    poison_loss_from_call(monkeypatch, first_bad_call=1)
    cfg = fast_config(
        shapes_world, tmp_path, *RUN, "name=all_bad", "trainer.nonfinite=skip", "trainer.max_skipped_steps=2"
    )
    with pytest.raises(NonFiniteError, match="max_skipped_steps=2 already skipped"):
        run(cfg)


# ------------------------------------------------------------------------------- resume record
def test_resume_refuses_changed_settings_and_keeps_config_yaml(finished_run, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    copy_run(finished_run, runs / "demo")
    record = (runs / "demo" / "config.yaml").read_bytes()
    for change, keys in [
        (["optim.lr=1e12"], ["optim.lr"]),
        (["model.num_layers=2", "seed=3"], ["model.num_layers", "seed"]),
    ]:
        with pytest.raises(ResumeRefused) as err:
            run(fast_config(shapes_world, runs, *RUN, "resume=latest", *change))
        assert sorted(line.split(":")[0].strip() for line in str(err.value).splitlines()[1:-1]) == keys
        assert (runs / "demo" / "config.yaml").read_bytes() == record
    assert not RunDir(runs / "demo").resume_history.exists()


def test_resume_applies_what_may_change_and_records_it(finished_run, shapes_world, tmp_path):
    runs = tmp_path / "runs"
    copy_run(finished_run, runs / "demo")
    record = (runs / "demo" / "config.yaml").read_bytes()
    overrides = ["resume=latest", "trainer.micro_batch_size=2", "trainer.grad_checkpointing=true"]
    summary = run(fast_config(shapes_world, runs, *RUN, *overrides))
    assert summary["steps"] == 4
    assert (runs / "demo" / "config.yaml").read_bytes() == record
    history = [json.loads(line) for line in RunDir(runs / "demo").resume_history.read_text().splitlines()]
    assert history[-1]["step"] == 4
    # (paths.runs_dir changed too: the run dir was copied)
    assert set(history[-1]["changes"]) - {"paths.runs_dir"} == {
        "trainer.micro_batch_size",
        "trainer.grad_checkpointing",
    }


def test_run_dir_name_ignores_what_may_change(shapes_world, tmp_path):
    """The same command plus a setting a resume may change finds the same run dir."""
    command = [f"data.root={shapes_world}", f"paths.runs_dir={tmp_path}", "experiment=demo", "debug=fast"]

    def run_dir_of(*extra: str):
        overrides = [*command, *extra]
        cfg = fast_config(shapes_world, tmp_path, *extra)
        cfg.name = command_run_name(cfg, overrides, 0)
        return resolve_run_dir(cfg)

    base = run_dir_of()
    for change in [
        "trainer.grad_checkpointing=true",
        "trainer.compile=true",
        "trainer.micro_batch_size=2",
        "trainer.ckpt_every=1",
    ]:
        assert run_dir_of(change) == base, change
    assert run_dir_of("optim.lr=1e-3") != base


def test_fresh_start_sets_aside_an_earlier_attempts_metrics(shapes_world, tmp_path):
    """A kill during the first save leaves metrics.jsonl but no checkpoint: resume=auto starts
    fresh, and logs each step once."""
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    earlier = "".join(json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in (1, 2))
    (run_dir / "metrics.jsonl").write_text(earlier)
    (run_dir / "checkpoints" / ".tmp-step_00000002").mkdir(parents=True)
    run(fast_config(shapes_world, tmp_path, *RUN, "resume=auto"))
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert (run_dir / "earlier_attempts" / "0" / "metrics.jsonl").read_text() == earlier
    assert not (run_dir / "checkpoints" / ".tmp-step_00000002").exists()
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["step_00000002", "step_00000004"]
