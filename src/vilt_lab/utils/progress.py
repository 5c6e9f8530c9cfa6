"""Progress of training and evaluation: a live tqdm bar on a terminal, timed lines in a file.

A bar redraws itself with carriage returns, which a SLURM output file or a CI log keeps as one
endless line (1,600 updates for a 1,600-step run). When stdout is not a terminal, progress is
instead one log line every `every_s` seconds (counts, rate, time left, the latest values), through
logging, so the run's train.log holds the same lines. On a terminal the bar shows the progress and
the same timed lines go to the log files alone (`LOG_FILES_ONLY`): a run's train.log reads the
same wherever the run was started.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

log = logging.getLogger("vilt_lab.progress")

# Records here reach only the handlers a run adds to this logger (`training.run_log` adds
# train.log's), never the console, where a live bar already shows the same progress.
LOG_FILES_ONLY = logging.getLogger("vilt_lab.log_files_only")
LOG_FILES_ONLY.propagate = False


@dataclass(frozen=True)
class ProgressStyle:
    """Whether to show progress, and how often to write a line (on stdout when it is a file, in
    the log files always)."""

    enabled: bool = True
    every_s: float = 30.0

    @classmethod
    def of(cls, value: ProgressStyle | bool) -> ProgressStyle:
        """A plain bool (what callers outside a run pass) means the default interval."""
        return value if isinstance(value, ProgressStyle) else cls(enabled=bool(value))

    def only_if(self, condition: bool) -> ProgressStyle:
        """This style where `condition` holds (the main process), else none: one bar per job."""
        return ProgressStyle(self.enabled and condition, self.every_s)


def progress_style(trainer: Any) -> ProgressStyle:
    """The run's style from its typed `trainer` settings (`progress`, `progress_every_s`)."""
    return ProgressStyle(trainer.progress, trainer.progress_every_s)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m:02d}:{s:02d}"


class ProgressLines:
    """tqdm's `update` / `set_postfix` / `close` / iteration, written as one line per interval.

    No line at the end: the caller's summary follows, and a closing line could come right after
    an interval's line.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        *,
        desc: str,
        total: int | None,
        initial: int,
        unit: str,
        every_s: float,
        write: Callable[[str], None] = log.info,
    ) -> None:
        self.iterable = iterable
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
        self.write = write
        self.n = self.start_n = initial
        self.start = self.last_line = time.monotonic()
        self.postfix: dict[str, Any] = {}

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.start
        rate = (self.n - self.start_n) / max(elapsed, 1e-9)
        if self.total:
            count = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
            left = f", {_duration((self.total - self.n) / rate)} left" if rate > 0 else ""
        else:
            count, left = f"{self.n} {self.unit}", ""
        values = "".join(f" {k}={v}" for k, v in self.postfix.items())
        return f"{self.desc} {count}{values} | {rate:.3g} {self.unit}/s, {_duration(elapsed)} elapsed{left}"

    def close(self) -> None:
        """Nothing to flush: every line is written whole when it is due."""


def _into_log_files_only(line: str) -> None:
    """`line` as `log.info` would write it (same logger name in train.log), to the log files alone."""
    if log.isEnabledFor(logging.INFO):
        LOG_FILES_ONLY.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None))


class BarWithLogLines(tqdm):
    """tqdm's live bar on the console, plus `lines`, the timed lines a file would get, written to
    the log files alone (`ProgressLines` with `write=_into_log_files_only`)."""

    def __init__(self, iterable: Iterable[Any] | None, lines: ProgressLines, **bar_options: Any) -> None:
        self.lines = lines
        super().__init__(iterable, **bar_options)

    def __iter__(self) -> Iterator[Any]:
        # tqdm's own iteration counts without calling `update`.
        for item in super().__iter__():
            yield item
            self.lines.update(1)

    def update(self, n: float = 1) -> bool | None:
        self.lines.update(n)
        return super().update(n)

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **values: Any) -> None:
        self.lines.set_postfix(**dict(ordered_dict or {}, **values))
        super().set_postfix(ordered_dict, refresh, **values)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    style: ProgressStyle | bool = True,
    total: int | None = None,
    initial: int = 0,
    unit: str = "it",
    unit_scale: bool = False,
) -> tqdm | ProgressLines:
    """A progress bar over `iterable` (or updated by hand): tqdm on a terminal (its timed lines in
    the log files), else timed lines."""
    style = ProgressStyle.of(style)
    line_options = {"desc": desc, "total": total, "initial": initial, "unit": unit, "every_s": style.every_s}
    if style.enabled and not sys.stdout.isatty():
        return ProgressLines(iterable, **line_options)
    bar_options = {
        "desc": desc,
        "total": total,
        "initial": initial,
        "unit": unit,
        "unit_scale": unit_scale,  # the bar's "1.2M pairs"; a line prints whole counts
        "dynamic_ncols": True,
        "file": sys.stdout,
    }
    if not style.enabled:
        return tqdm(iterable, disable=True, **bar_options)
    lines = ProgressLines(None, **line_options, write=_into_log_files_only)
    return BarWithLogLines(iterable, lines, **bar_options)
