"""The errors a user fixes by changing a setting, a file or the environment, and how the entry
points (vilt-train, vilt-eval) show them: one message on stderr, exit status 2, no traceback.

`run()` and `evaluate()` raise these like any exception (Python callers and tests catch them);
only the command-line `main` formats them. Any other exception is a bug in vilt_lab and keeps its
traceback. ``VILT_TRACEBACK=1`` shows the traceback of a user error too.

A job that a Hydra launcher runs in a process of its own (submitit: one SLURM job per run) ends
that process with a non-zero status whatever failed, so SLURM and submitit report it failed:
Hydra itself catches a job's exception and returns it as the job's result, which would end the
process with status 0 (SLURM: COMPLETED).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from omegaconf.errors import InterpolationResolutionError

from ..utils.picklable_errors import RebuiltFromMessage
from ..weights.checkpoint_io import CheckpointFileError, UnsafeCheckpointError
from ..weights.download import DownloadError

TRACEBACK_VARIABLE = "VILT_TRACEBACK"
USER_ERROR_STATUS = 2
BUG_STATUS = 1  # what Python itself exits with on an uncaught exception


class UserError(RebuiltFromMessage):
    """A refusal whose message says what to change; a project error that is not a bug. It pickles
    with its message and attributes (a SLURM job sends it back to the submitting terminal)."""


class ConfigError(UserError, ValueError):
    """Settings refused before any work; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("bad settings, nothing was run:\n" + "\n".join(f"  {p}" for p in self.problems))


class MissingPackageError(UserError, ImportError):
    """An optional package a setting needs is not installed (the message names the setting).
    Only this ImportError is a user error: any other is a bug in vilt_lab and keeps its traceback."""


# Raised below the config room (weights/), or by our checks as the standard exceptions that say
# what is wrong: a file that is missing or already there.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    CheckpointFileError,
    UnsafeCheckpointError,
    DownloadError,
    FileNotFoundError,
    FileExistsError,
)


def reports_to_the_user() -> bool:
    """Whether this process speaks for its machine: local rank 0 of a `torchrun` / `accelerate
    launch` job (RANK where a launcher sets no LOCAL_RANK), or a process started alone. A job's
    processes then say a thing once per machine: each node of a multi-node job has its own console,
    and a mistake on one node's disk is told on that node."""
    return os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) == "0"


@contextmanager
def user_errors_reported(
    program: str,
    explain: Callable[[Exception], str | None] = lambda err: None,
    *,
    ends_the_process: bool = False,
) -> Iterator[None]:
    """Around a command line's work: a user error, or an exception ``explain`` turns into a
    message, ends the process with that message and status 2; any other exception propagates.
    In a job of several processes, where every process meets the same mistake, only the one that
    `reports_to_the_user` prints the message; the others end with the same status silently.

    ``ends_the_process``: the block is a Hydra job in a process of its own (see the module
    docstring); an exception that would propagate is printed with its traceback (the job's log)
    and ends the process too, with status 1 (2 for a user error shown with its traceback)."""
    try:
        yield
    except Exception as err:
        # OmegaConf raises its own error while handling what a resolver raised (`required`).
        raised = err.__context__ if isinstance(err, InterpolationResolutionError) else err
        user_error = raised if isinstance(raised, USER_ERRORS) else None
        message = str(user_error) if user_error is not None else explain(err)
        if message is None or os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
            if not ends_the_process:
                raise
            traceback.print_exc()
            sys.exit(BUG_STATUS if message is None else USER_ERROR_STATUS)
        if reports_to_the_user():
            print(
                f"{program}: {message}\n(set {TRACEBACK_VARIABLE}=1 to see where it was raised)",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(USER_ERROR_STATUS)
