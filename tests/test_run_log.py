"""train.log: the main process's lines, the other ranks' warnings with their rank, no stacking."""

from __future__ import annotations

import logging

from vilt_lab.training.run_dir import RunDir
from vilt_lab.training.run_log import run_log

log = logging.getLogger("vilt_lab.test_run_log")


def test_main_process_logs_everything_and_other_ranks_their_warnings(tmp_path):
    log.setLevel(logging.INFO)
    with run_log(RunDir(tmp_path).train_log, rank=0):
        log.info("step 1")
    with run_log(RunDir(tmp_path).train_log, rank=3):
        log.info("rank 3 chatter")
        log.warning("rank 3 ran out of shards")
    lines = RunDir(tmp_path).train_log.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("INFO vilt_lab.test_run_log: step 1")
    assert "[rank 3] WARNING" in lines[1] and lines[1].endswith("rank 3 ran out of shards")


def test_the_handler_goes_with_the_run(tmp_path):
    """Sweep jobs in one process: each job's lines go to its own run dir only."""
    before = list(logging.getLogger().handlers)
    for job in ("a", "b"):
        (tmp_path / job).mkdir()
        with run_log(RunDir(tmp_path / job).train_log, rank=0):
            log.warning("job %s", job)
    assert logging.getLogger().handlers == before
    assert "job a" in RunDir(tmp_path / "a").train_log.read_text()
    assert "job a" not in RunDir(tmp_path / "b").train_log.read_text()


def test_a_rank_without_the_run_dir_keeps_its_warnings_on_its_console(tmp_path):
    with run_log(RunDir(tmp_path / "on another node").train_log, rank=1):
        log.warning("not here")
    assert not (tmp_path / "on another node").exists()


def test_what_the_run_prints_and_the_exception_that_ends_it_are_in_train_log(tmp_path, capsys):
    train_log = RunDir(tmp_path).train_log
    try:
        with run_log(train_log, rank=0):
            print("init from ckpt: 50 tensors loaded")  # the init report, the summary table
            raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    text = train_log.read_text()
    assert "init from ckpt: 50 tensors loaded" in text
    assert "ERROR vilt_lab.train: run ended by RuntimeError('out of memory')" in text
    assert "Traceback (most recent call last)" in text and text.endswith("RuntimeError: out of memory\n")
    # The console still shows the print, once; the traceback is left to whoever catches it.
    assert capsys.readouterr().out == "init from ckpt: 50 tensors loaded\n"
