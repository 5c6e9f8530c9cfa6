"""Named points where the fault-injection test kills a run (and nothing else ever happens).

`VILT_LAB_FAULT=<point>[:<n>]` makes the process SIGKILL itself the n-th time (default 1st) it
reaches `<point>`: a kill at an exact instant of a checkpoint write, re-save or prune, which
random timing alone would hit only by luck. Points: ``save:written`` (files written, no manifest
yet), ``save:manifest`` (complete, not yet renamed into place), ``save:aside`` (re-save: the old
copy moved aside, the new not yet in place), ``prune`` (before a deletion), ``remove:renamed``
(a deletion half done), ``step`` (after an optimizer step).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "VILT_LAB_FAULT"
_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.rpartition(":")
    if not nth.isdigit():  # no count given: the first time
        point, nth = wanted, "1"
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
