"""Training state as data: tensors in safetensors, everything else in JSON. Nothing is unpickled.

Accelerate's `save_state` pickles the scheduler, the GradScaler and the random states, and
`load_state` unpickles them: a crafted `custom_checkpoint_0.pkl` in a checkpoint handed to
`resume=` runs its code. So vilt_lab writes and reads every part of a training checkpoint itself,
in two formats that cannot carry code. Every reader names the file it failed on: a corrupt or
foreign file is a `CheckpointFileError`, never a bare "incomplete metadata" from deep inside a
library.

JSON cannot hold tuples (Python's random state, AdamW's betas): they are written as
``{"__tuple__": [...]}`` and come back as tuples, so a restored state compares equal to the saved.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..weights.checkpoint_io import CheckpointFileError

_TUPLE = "__tuple__"
_OS_ERROR = re.compile(r"\(os error (?P<errno>\d+)\)")


# ------------------------------------------------------------------------------------ JSON
def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return {_TUPLE: [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{where}: a {type(value).__name__} cannot be written to a JSON state file")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_from_json(v) for v in value[_TUPLE])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def write_json(path: Path, value: Any) -> None:
    Path(path).write_text(json.dumps(_to_json(value, Path(path).name), indent=1))


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(path, "missing")
    try:
        return _from_json(json.loads(path.read_text()))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointFileError(path, f"not valid JSON ({err})") from err


# ------------------------------------------------------------------------------- tensors
def write_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    # safetensors wants contiguous CPU tensors that share no storage.
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    except SafetensorError as err:
        # A full disk reaches us as "I/O error: No space left on device (os error 28)": raised as
        # the OSError it is, so the storage's refusals are handled in one place (`storage`).
        os_error = _OS_ERROR.search(str(err))
        if os_error is None:
            raise
        raise OSError(int(os_error["errno"]), os.strerror(int(os_error["errno"])), str(path)) from err


# ----------------------------------------------------------------------------- optimizer
def split_optimizer_state(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's `state_dict()` as (tensors, JSON): `state/<param index>/<key>` tensors, and
    the param groups plus any non-tensor per-parameter values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"state/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Undo :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": list(meta["param_groups"])}


# ------------------------------------------------------------------------------ RNG state
def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's global random states (dropout draws from torch's): (tensors, JSON)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        # Its own device's only: every other visible device is another process's, and a resume
        # may see fewer of them (an 8-GPU node resumed on 4, one GPU per SLURM task).
        tensors["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": random.getstate(), "numpy": [kind, keys, pos, has_gauss, cached]}
    return tensors, meta


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng` in this process (its own device's state onto its own device)."""
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        # Checkpoints written before "cuda" held every visible device's state as "cuda/<index>":
        # this process's own is the one of its device, whatever the others were.
        state = tensors.get("cuda", tensors.get(f"cuda/{device}"))
        if state is not None:
            torch.cuda.set_rng_state(state, device)
    random.setstate(meta["python"])
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
