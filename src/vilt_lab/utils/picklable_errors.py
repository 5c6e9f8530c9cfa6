"""Exceptions that survive pickling whatever their constructor takes.

An exception pickles as ``type(err)(*err.args)``, and ``args`` holds what ``Exception.__init__``
was last given: for a class whose ``__init__`` builds the message from other arguments
(``ConfigError(problems)``, ``CheckpointFileError(path, reason)``) that call fails or builds
another message when the exception is unpickled: in a SLURM job's result travelling back to the
submitting terminal, in a process pool's worker. `RebuiltFromMessage` rebuilds it from its
message and its attributes instead, without calling ``__init__``.
"""

from __future__ import annotations

import copyreg
from typing import Any


class RebuiltFromMessage(Exception):
    """A base for exceptions whose ``__init__`` takes something else than their message."""

    def __reduce__(self) -> tuple[Any, ...]:
        # copyreg.__newobj__ is cls.__new__(cls, *args): BaseException.__new__ sets ``args``, the
        # instance's __dict__ (path, problems, ...) is restored as its state.
        return copyreg.__newobj__, (type(self), *self.args), self.__dict__ or None
