"""A full disk, an I/O error or a read-only filesystem stops a run with one message naming the
path and the free space, leaves no checkpoint that looks complete, keeps the last good one, and
never leaves half a line in metrics.jsonl or half a summary.json.

The storage's refusals are raised where vilt_lab writes (monkeypatched), at each point of a
checkpoint save; where the machine lets us mount a tmpfs, real full filesystems too: one under
vilt-train's run dir, which continues from its last checkpoint once the filesystem grows.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vilt_lab
import vilt_lab.training.checkpoint as checkpoint_module
from helpers.configs import FAST, fast_config
from helpers.ports import torchrun
from vilt_lab.config.errors import USER_ERROR_STATUS, UserError
from vilt_lab.train import run
from vilt_lab.training.checkpoint import (
    MANIFEST,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    verify,
)
from vilt_lab.training.metrics_log import MetricsFile, read_metrics
from vilt_lab.training.run_dir import RunDir
from vilt_lab.training.state_io import write_tensors
from vilt_lab.training.storage import StorageError, append_line, write_text_atomically

RUN = ("evaluate=false",)  # FAST: 4 steps, checkpoints at steps 2 and 4
SECOND_SAVE = f".tmp-{checkpoint_name(4)}"
# The package the tests import: the subprocess runs the same copy.
SOURCE = str(Path(vilt_lab.__file__).resolve().parents[1])


def refused(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def refuse_in_second_save(monkeypatch, name: str, code: int, file: str | None = None) -> None:
    """Make checkpoint.<name> (a function taking a path first) raise OSError(code) while the save
    of step 4 writes (``file``: only for that file)."""
    real = getattr(checkpoint_module, name)

    def refusing(path, *args, **kwargs):
        path = Path(path)
        in_second_save = SECOND_SAVE in (path.name, path.parent.name)
        if in_second_save and (file is None or path.name == file):
            raise refused(code)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, name, refusing)


def refuse_renaming_the_second_save(monkeypatch, code: int) -> None:
    real = os.replace

    def refusing(src, dst):
        if Path(src).name == SECOND_SAVE:
            raise refused(code)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refusing)


# Where the save of step 4 fails -> how, and what the storage says.
FAILURES = {
    "weights, full disk": (
        lambda mp: refuse_in_second_save(mp, "write_tensors", errno.ENOSPC, "model.safetensors"),
        errno.ENOSPC,
    ),
    "a random state, quota": (
        lambda mp: refuse_in_second_save(mp, "write_tensors", errno.EDQUOT, "random_states_0.safetensors"),
        errno.EDQUOT,
    ),
    "optimizer state, I/O error": (
        lambda mp: refuse_in_second_save(mp, "write_json", errno.EIO, "optimizer.json"),
        errno.EIO,
    ),
    "flush to disk, I/O error": (lambda mp: refuse_in_second_save(mp, "_fsync_tree", errno.EIO), errno.EIO),
    "manifest, full disk": (
        lambda mp: refuse_in_second_save(mp, "write_json", errno.ENOSPC, MANIFEST),
        errno.ENOSPC,
    ),
    "rename into place, read-only": (
        lambda mp: refuse_renaming_the_second_save(mp, errno.EROFS),
        errno.EROFS,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_refused_save_stops_the_run_and_keeps_the_last_good_checkpoint(
    failure, shapes_world, tmp_path, monkeypatch
):
    inject, code = FAILURES[failure]
    inject(monkeypatch)
    with pytest.raises(StorageError) as stopped:
        run(fast_config(shapes_world, tmp_path, *RUN))
    checkpoints = RunDir(tmp_path / "demo").checkpoints
    message = str(stopped.value)
    assert isinstance(stopped.value, UserError), "one message, no traceback, from the entry point"
    assert f"{checkpoints / checkpoint_name(4)} failed: {os.strerror(code)}" in message
    assert " free of " in message and str(checkpoints) in message, "the free space where it failed"
    good = checkpoints / checkpoint_name(2)
    assert f"the last complete checkpoint, {good}, is kept" in message
    assert stopped.value.errno == code
    assert latest_checkpoint(checkpoints) == (good, [])
    assert [p.name for p in list_checkpoints(checkpoints)] == [good.name], "nothing that looks like step 4"
    assert all(verify(p) is None for p in list_checkpoints(checkpoints))


@pytest.mark.slow
def test_a_refused_resave_puts_the_old_copy_back(shapes_world, tmp_path, monkeypatch):
    """Resumed from step 2 of a finished run, step 4 is saved again: its old copy is moved aside
    first; when the new one cannot take its place, the old one comes back."""
    run(fast_config(shapes_world, tmp_path, *RUN))
    checkpoints = RunDir(tmp_path / "demo").checkpoints
    old_weights = (checkpoints / checkpoint_name(4) / "model.safetensors").read_bytes()
    refuse_renaming_the_second_save(monkeypatch, errno.EIO)
    with pytest.raises(
        StorageError, match=f"the last complete checkpoint, {checkpoints / checkpoint_name(4)}, is kept"
    ):
        run(fast_config(shapes_world, tmp_path, *RUN, f"resume={checkpoints / checkpoint_name(2)}"))
    assert sorted(p.name for p in checkpoints.iterdir()) == [checkpoint_name(2), checkpoint_name(4)]
    assert verify(checkpoints / checkpoint_name(4)) is None
    assert (checkpoints / checkpoint_name(4) / "model.safetensors").read_bytes() == old_weights


@pytest.mark.slow
def test_a_refused_first_save_says_there_is_no_checkpoint(shapes_world, tmp_path, monkeypatch):
    real = checkpoint_module.write_tensors

    def full(path, tensors):
        raise refused(errno.ENOSPC)

    monkeypatch.setattr(checkpoint_module, "write_tensors", full)
    with pytest.raises(StorageError, match="the run has no complete checkpoint yet"):
        run(fast_config(shapes_world, tmp_path, *RUN))
    assert real is not full and list_checkpoints(RunDir(tmp_path / "demo").checkpoints) == []
    assert not list(RunDir(tmp_path / "demo").checkpoints.iterdir()), "the incomplete copy is removed"


def test_safetensors_full_disk_is_the_os_error_it_wraps(tmp_path, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError with the OS error in words."""
    from safetensors import SafetensorError

    import vilt_lab.training.state_io as state_io

    def full(tensors, filename):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(state_io, "save_file", full)
    with pytest.raises(OSError) as err:
        write_tensors(tmp_path / "model.safetensors", {"w": torch.zeros(2)})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "model.safetensors")


@pytest.mark.slow
def test_a_write_refused_on_one_process_stops_both_with_one_message(shapes_world, tmp_path):
    """Two CPU processes (gloo): rank 1's random states are refused in the save of step 4. Both
    stop at the save (none waits for the other at the next collective); rank 0 says why."""
    runs = tmp_path / "runs"
    overrides = [
        *FAST,
        f"data.root={shapes_world}",
        f"paths.runs_dir={runs}",
        "evaluate=false",
        "trainer.micro_batch_size=2",
    ]
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), SOURCE, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    job = str(Path(__file__).parent / "helpers" / "refused_save_job.py")
    proc = subprocess.run(
        torchrun(job, *overrides),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    (message,) = [line for line in proc.stderr.splitlines() if line.startswith("vilt-train: ")]
    assert re.match(
        r"vilt-train: saving checkpoint \S+/step_00000004 failed: another process could not write its part "
        r"\(its reason is in train.log\); .* free of .*; the last complete checkpoint, \S+/step_00000002, is kept",
        message,
    ), message
    assert f"exitcode  : {USER_ERROR_STATUS}" in proc.stderr, proc.stderr[-3000:]
    (checkpoints,) = runs.rglob("checkpoints")
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step_00000002"]
    train_log = RunDir(checkpoints.parent).train_log.read_text()
    assert re.search(r"\[rank 1\] ERROR .*No space left on device", train_log), train_log[-3000:]


# ------------------------------------------------------------------------ metrics and summary
def test_a_refused_append_leaves_no_half_line(tmp_path, monkeypatch):
    metrics = MetricsFile(tmp_path / "metrics.jsonl")
    metrics.append(1, {"loss": 2.5})
    real_write, calls = os.write, []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:  # the disk takes part of the line, then refuses the rest
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise refused(errno.ENOSPC)

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageError) as stopped:
        metrics.append(2, {"loss": 2.25, "lr": 1e-4})
    monkeypatch.undo()
    assert len(calls) == 2
    assert read_metrics(metrics.path) == [{"step": 1, "loss": 2.5}], "the file as it was"
    assert f"appending to {metrics.path} failed: {os.strerror(errno.ENOSPC)}; " in str(stopped.value)
    assert " free of " in str(stopped.value)
    metrics.append(2, {"loss": 2.25})  # room again: the log goes on
    assert [line["step"] for line in read_metrics(metrics.path)] == [1, 2]


def test_a_line_the_disk_takes_in_parts_is_whole(tmp_path, monkeypatch):
    real_write = os.write

    def by_halves(fd, data):
        return real_write(fd, bytes(data[: max(1, len(data) // 2)]))

    monkeypatch.setattr(os, "write", by_halves)
    append_line(tmp_path / "metrics.jsonl", json.dumps({"step": 1, "loss": 2.5}))
    monkeypatch.undo()
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.5}]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_refused_summary_keeps_the_one_before(failing, tmp_path, monkeypatch):
    layout = RunDir(tmp_path)
    layout.write_summary({"steps": 2})
    monkeypatch.setattr(os, failing, lambda *args: (_ for _ in ()).throw(refused(errno.EIO)))
    with pytest.raises(StorageError, match=rf"writing {layout.summary} failed: {os.strerror(errno.EIO)}; "):
        layout.write_summary({"steps": 4})
    monkeypatch.undo()
    assert json.loads(layout.summary.read_text()) == {"steps": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.summary.name], "no temporary file left"


def test_a_storage_error_survives_pickling_with_its_fields(tmp_path):
    import pickle

    err = StorageError("writing", tmp_path / "summary.json", refused(errno.ENOSPC))
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.path, back.errno) == (str(err), err.path, errno.ENOSPC)


# ---------------------------------------------------------------------- a real full filesystem
@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of a given size (``tmpfs("4m")``; again to resize it), where the machine lets
    this process mount one (root, a privileged container); skipped elsewhere."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()

    def mounted(size: str) -> Path:
        options = f"size={size}" if not os.path.ismount(mount) else f"remount,size={size}"
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        return mount

    yield mounted
    if os.path.ismount(mount):
        subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_filesystem(tmpfs):
    """safetensors, json and appends on a filesystem that is full for real."""
    tiny = tmpfs("1m")
    metrics = MetricsFile(tiny / "metrics.jsonl")
    metrics.append(1, {"loss": 2.5})
    with pytest.raises(StorageError):  # fills the filesystem, then is refused
        write_text_atomically(tiny / "big.json", "x" * 2**21)
    (tiny / "filler").write_bytes(b"\0" * (2**20 - 8192))
    with pytest.raises(OSError) as full:
        write_tensors(tiny / "model.safetensors", {"w": torch.zeros(2**18)})
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(StorageError, match=r" free of 1\.0 MiB on the filesystem of "):
        for step in range(2, 10_000):
            metrics.append(step, {"loss": 2.5, "padding": "y" * 4000})
    lines = read_metrics(metrics.path)  # every line whole
    assert [line["step"] for line in lines] == list(range(1, len(lines) + 1))
    assert sorted(p.name for p in tiny.iterdir()) == ["filler", "metrics.jsonl"]


@pytest.mark.slow
def test_vilt_train_on_a_full_disk_says_so_once_and_continues_when_there_is_room(
    shapes_world, tmpfs, tmp_path
):
    """The run dir on a 4 MiB filesystem: the step 2 checkpoint fits (about 2.6 MiB), step 4's
    does not. Then the filesystem grows and the same command continues from step 2."""
    runs = tmpfs("4m")
    args = [*FAST, f"data.root={shapes_world}", f"paths.runs_dir={runs}", "evaluate=false"]
    path = os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vilt_lab.train", *args, "resume=auto"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == USER_ERROR_STATUS, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr
    message = proc.stderr.splitlines()[0]
    assert re.fullmatch(
        r"vilt-train: saving checkpoint \S+/step_00000004 failed: No space left on device; "
        r"[\d.]+ [KM]iB free of 4\.0 MiB on the filesystem of \S+/checkpoints; "
        r"the last complete checkpoint, \S+/step_00000002, is kept: once there is room, resume=auto continues from it",
        message,
    ), message
    (checkpoints,) = runs.rglob("checkpoints")
    assert [p.name for p in checkpoints.iterdir()] == ["step_00000002"]
    assert verify(checkpoints / "step_00000002") is None

    tmpfs("16m")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(RunDir(checkpoints.parent).summary.read_text())
    assert summary["steps"] == 4
    assert [m["step"] for m in read_metrics(RunDir(checkpoints.parent).metrics)] == [1, 2, 3, 4], (
        "each step once"
    )
