"""Every exception vilt_lab defines survives pickling with its message and attributes: a SLURM
job sends its failure back to the submitting terminal pickled, and a process pool its workers'.

The classes are found by walking the package, so a new exception class is checked as soon as it
exists; one whose constructor takes something else than a message needs an entry in
`CONSTRUCTED`.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import pickle
import pkgutil
import signal

import pytest

import vilt_lab

# Classes whose constructor is not ``cls(message)`` -> an instance made as the code makes it.
CONSTRUCTED = {
    "vilt_lab.config.errors.ConfigError": lambda cls: cls(
        ["optim.lr=-1: expected a number > 0", "seed: missing"]
    ),
    "vilt_lab.weights.checkpoint_io.CheckpointFileError": lambda cls: cls(
        "/runs/demo/model.safetensors", "truncated"
    ),
    "vilt_lab.data.sources.images.BadImage": lambda cls: cls("image file missing", "/raw/0001.jpg"),
    "vilt_lab.training.lost_peer.LostPeer": lambda cls: cls(1, 30.0, "Timed out waiting 1800000ms for recv"),
    "vilt_lab.training.preemption.Stopped": lambda cls: cls(signal.SIGTERM, 12),
    "vilt_lab.training.storage.StorageError": lambda cls: cls(
        "writing", "/runs/demo/summary.json", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    ),
}


def package_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of vilt_lab (not the ones it imports)."""
    found = {}
    modules = pkgutil.walk_packages(vilt_lab.__path__, prefix="vilt_lab.")
    for module_info in modules:
        if module_info.name.endswith(".__main__"):  # running it is what importing it does
            continue
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


EXCEPTIONS = package_exceptions()


def instance(name: str, cls: type[BaseException]) -> BaseException:
    make = CONSTRUCTED.get(name, lambda cls: cls("a message that says what to fix"))
    return make(cls)


def test_the_walk_finds_the_known_exceptions():
    assert set(CONSTRUCTED) <= set(EXCEPTIONS), "an entry names a class that no longer exists"
    assert "vilt_lab.config.errors.UserError" in EXCEPTIONS


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_an_exception_survives_pickling(name, protocol):
    err = instance(name, EXCEPTIONS[name])
    try:
        err.add_note("raised in job 7")
    except AttributeError:  # a class with __slots__ and no __dict__ keeps no notes
        pass
    back = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.args == err.args
    assert vars(back) == vars(err), "attributes (path, problems, notes) lost on the way"
