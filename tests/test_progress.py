"""Progress in a file is timed lines, never a carriage-return stream; every run writes train.log."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from tqdm import tqdm

from helpers.run_dirs import only_run_dir
from vilt_lab.training.run_log import run_log
from vilt_lab.utils import progress as progress_module
from vilt_lab.utils.progress import ProgressLines, ProgressStyle, progress_bar

INTERVAL_S = 0.2
# A training progress line as train.log holds it: "<asctime> INFO vilt_lab.progress: train 7/20 ...".
TRAIN_LINE = re.compile(r"^(\S+ \S+) INFO vilt_lab\.progress: (train \d+/\d+ .*)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_once_per_interval_with_rate_and_time_left(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    bar = ProgressLines(None, desc="train", total=100, initial=0, unit="step", every_s=30)
    with caplog.at_level(logging.INFO, logger="vilt_lab.progress"):
        for _ in range(50):
            clock.now += 1.0  # one step a second: lines at 30 s only
            bar.set_postfix(loss="1.234")
            bar.update()
    assert caplog.messages == ["train 30/100 (30%) loss=1.234 | 1 step/s, 00:30 elapsed, 01:10 left"]


def test_a_terminal_gets_a_bar_and_a_file_gets_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(progress_bar(desc="eval", total=3), tqdm)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(progress_bar(desc="eval", total=3), ProgressLines)
    assert isinstance(progress_bar(desc="eval", style=False), tqdm)  # disabled: tqdm's silent bar
    assert list(progress_bar(range(3), desc="eval", style=ProgressStyle(every_s=0))) == [0, 1, 2]


@pytest.fixture
def console_logging(caplog):
    """The console as Hydra's job logging makes it (INFO records on stdout), stdout then chosen by
    the test."""
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    with caplog.at_level(logging.INFO):
        yield handler
    root.removeHandler(handler)


@pytest.mark.parametrize("stdout", [Terminal, io.StringIO], ids=["terminal", "file"])
def test_train_log_holds_each_timed_line_once_and_no_bar(stdout, monkeypatch, tmp_path, console_logging):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    console = stdout()
    monkeypatch.setattr(sys, "stdout", console)
    console_logging.setStream(console)
    train_log = tmp_path / "train.log"
    with run_log(train_log, rank=0):
        with progress_bar(desc="train", style=ProgressStyle(every_s=30), total=100, unit="step") as bar:
            for _ in range(50):
                clock.now += 1.0
                bar.set_postfix(loss="1.234")
                bar.update()
        print("summary")
    expected = "train 30/100 (30%) loss=1.234 | 1 step/s, 00:30 elapsed, 01:10 left"
    with open(train_log, encoding="utf-8", newline="") as file:  # keeps carriage returns
        logged = file.read()
    assert [m[2] for line in logged.split("\n") if (m := TRAIN_LINE.match(line))] == [expected], logged
    assert "\r" not in logged and logged.endswith("left\nsummary\n")
    shown = console.getvalue()
    if stdout is Terminal:  # the bar, not the line
        assert "\r" in shown and "50/100" in shown and expected not in shown
    else:
        assert shown.splitlines() == [expected, "summary"]


def test_iterating_a_bar_on_a_terminal_writes_its_lines_to_the_log_files(
    monkeypatch, tmp_path, console_logging
):
    monkeypatch.setattr(sys, "stdout", Terminal())
    train_log = tmp_path / "train.log"
    with run_log(train_log, rank=0):
        assert list(progress_bar(range(3), desc="eval", total=3, style=ProgressStyle(every_s=0))) == [0, 1, 2]
    assert re.findall(r"INFO vilt_lab\.progress: eval (\d)/3", train_log.read_text()) == ["1", "2", "3"]


@pytest.mark.slow
def test_training_into_a_file_logs_timed_lines_and_train_log(shapes_world, tmp_path):
    steps = 20
    cmd = [
        sys.executable,
        "-m",
        "vilt_lab.train",
        "experiment=demo",
        "debug=fast",
        "data.generate_n=0",
        f"data.root={shapes_world}",
        f"paths.runs_dir={tmp_path}",
        f"schedule.max_steps={steps}",
        f"trainer.ckpt_every={steps}",
        "trainer.progress=true",
        f"trainer.progress_every_s={INTERVAL_S}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    stdout = tmp_path / "slurm-1234.out"
    with stdout.open("w") as out:
        proc = subprocess.run(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=300
        )
    printed = stdout.read_text()
    assert proc.returncode == 0, printed[-2000:] + proc.stderr[-3000:]
    assert "\r" not in printed and "\r" not in proc.stderr

    logged = (only_run_dir(tmp_path) / "train.log").read_text().splitlines()
    progress = [m.groups() for line in logged if (m := TRAIN_LINE.match(line))]
    assert len(progress) >= 2, "\n".join(logged)
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp, _ in progress]
    gaps = [(b - a).total_seconds() for a, b in zip(times[:-1], times[1:], strict=True)]
    assert min(gaps) >= INTERVAL_S - 0.002, gaps  # asctime has milliseconds
    # The console shows the same lines, each with the step's loss, samples/s and time left.
    printed_lines = [text for _, text in progress if text in printed.splitlines()]
    assert printed_lines == [text for _, text in progress]
    assert all(re.search(r"loss=\S+ .*samples/s=\S+ .* left$", text) for _, text in progress)
    assert any("training in precision no (from trainer.precision)" in line for line in logged)
    # The banner says what is about to run, on the console and in train.log.
    # (the summary table at the end has a run dir and steps too: these lines are the banner's alone)
    banner = [r"task\s+pretrain \(itm, mlm, wpa\)$", r"batch\s+\d+ = micro \d+ x \d+", r"logger\s+off$"]
    for line in banner:
        assert any(re.search(line, logged_line) for logged_line in logged), line
        assert any(re.search(line, printed_line) for printed_line in printed.splitlines()), line
