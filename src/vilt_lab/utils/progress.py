"""Progress of training and evaluation: a live tqdm bar on a terminal, timed lines in a file.

A bar redraws itself with carriage returns, which a SLURM output file or a CI log keeps as one
endless line (1,600 updates for a 1,600-step run). When stdout is not a terminal, progress is
instead one log line every `every_s` seconds (counts, rate, time left, the latest values), through
logging, so the run's train.log holds the same lines.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

log = logging.getLogger("vilt_lab.progress")


@dataclass(frozen=True)
class ProgressStyle:
    """Whether to show progress, and how often to write a line when stdout is a file."""

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
    ) -> None:
        self.iterable = iterable
        self.desc, self.total, self.unit, self.every_s = desc, total, unit, every_s
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
            log.info(self.line(now))

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
    """A progress bar over `iterable` (or updated by hand): tqdm on a terminal, else timed lines."""
    style = ProgressStyle.of(style)
    if style.enabled and not sys.stdout.isatty():
        return ProgressLines(
            iterable, desc=desc, total=total, initial=initial, unit=unit, every_s=style.every_s
        )
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        initial=initial,
        unit=unit,
        unit_scale=unit_scale,  # the bar's "1.2M pairs"; a line prints whole counts
        disable=not style.enabled,
        dynamic_ncols=True,
        file=sys.stdout,
    )
