"""vilt_lab's checkpoint format, and the one safe way to read a pickled PyTorch checkpoint.

A checkpoint is a directory holding `model.safetensors` (the backbone's weights under `backbone.`,
each head's under `heads.<name>.`) and `config.json` (the `ViltConfig` fields and, per head, the
sizes it was built with and optional label names; optionally, how its inputs are prepared:
`inputs`, its tokenizer and resize, the tokenizer a directory `tokenizer/` beside the weights).
A field added later is optional, so every older directory still reads; `format_version` rises
only for a change an older reader would misread. Safetensors cannot run code when read; pickled
files (`.ckpt`, `.pth`) are only ever read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..model.config import ViltConfig
from ..utils.picklable_errors import RebuiltFromMessage

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "vilt_lab"
FORMAT_VERSION = 1
INPUTS_KEY = "inputs"
TOKENIZER_DIR = "tokenizer"  # a checkpoint's own tokenizer, beside its weights
BACKBONE_PREFIX = "backbone."
HEADS_PREFIX = "heads."


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A pickled checkpoint that holds more than tensors and plain containers."""


class CheckpointFileError(RebuiltFromMessage, ValueError):
    """A checkpoint file that is missing, truncated, corrupt or not what vilt_lab writes."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"checkpoint file {path}: {reason}")
        self.path = Path(path)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing or unreadable one is an error naming it
    (safetensors itself says only "incomplete metadata" or "header too large")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(path, "missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointFileError(path, f"not a readable safetensors file ({err})") from err


@dataclass
class ViltCheckpoint:
    """Weights plus everything needed to rebuild the modules that hold them.

    config: the backbone's hyper-parameters.
    heads: head name -> its build arguments (`num_labels`, `bins`) and optional `labels` (label
        names by class index, e.g. VQA answers).
    state: `backbone.*` and `heads.<name>.*` tensors.
    """

    config: ViltConfig
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stray = sorted(k for k in self.state if not k.startswith((BACKBONE_PREFIX, HEADS_PREFIX)))
        if stray:
            raise KeyError(f"checkpoint keys must start with 'backbone.' or 'heads.': {stray[:5]}")
        for name in self.head_names_in_state():
            if name not in self.heads:
                raise KeyError(f"weights for head {name!r} but no entry for it in the checkpoint's heads")

    def head_names_in_state(self) -> list[str]:
        return sorted(
            {k[len(HEADS_PREFIX) :].split(".", 1)[0] for k in self.state if k.startswith(HEADS_PREFIX)}
        )

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors under its own names (no `backbone.` prefix)."""
        return _strip(self.state, BACKBONE_PREFIX)

    def head_state(self, name: str) -> dict[str, torch.Tensor]:
        """Head `name`'s tensors under the head module's own names."""
        return _strip(self.state, f"{HEADS_PREFIX}{name}.")

    def head_sizes(self, name: str) -> dict[str, int]:
        """The build arguments of head `name` (everything in its entry but the label names)."""
        return {k: v for k, v in self.heads[name].items() if k != "labels"}


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def save_checkpoint(
    checkpoint: ViltCheckpoint, directory: str | os.PathLike, inputs: Mapping[str, Any] | None = None
) -> Path:
    """Write `checkpoint` into `directory` (created if needed) and return the directory.

    inputs: how its inputs are prepared (`tokenizer`: a name, or `TOKENIZER_DIR` for the
    directory's own; `shorter`, `longer`: the resize), recorded in config.json.

    Each file is written under a temporary name and renamed into place, weights first and config
    last, so a reader never sees a half-written file and a config means the weights are complete.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (e.g. views of one fused tensor): own each one.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in checkpoint.state.items()}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": checkpoint.config.to_dict(),
        "heads": checkpoint.heads,
        **({INPUTS_KEY: dict(inputs)} if inputs else {}),
    }
    weights_tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    config_tmp = directory / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
    os.replace(weights_tmp, directory / WEIGHTS_NAME)
    config_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(config_tmp, directory / CONFIG_NAME)
    return directory


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_NAME).is_file() and (Path(path) / WEIGHTS_NAME).is_file()


def recorded_inputs(directory: str | os.PathLike) -> dict[str, Any]:
    """The `inputs` a checkpoint directory records (empty when it records none), its own
    tokenizer directory as a path."""
    directory = Path(directory)
    inputs = dict(json.loads((directory / CONFIG_NAME).read_text()).get(INPUTS_KEY, {}))
    if inputs.get("tokenizer") == TOKENIZER_DIR:
        inputs["tokenizer"] = str(directory / TOKENIZER_DIR)
    return inputs


def load_checkpoint(directory: str | os.PathLike) -> ViltCheckpoint:
    """Read a checkpoint written by `save_checkpoint`, naming the file and field that is wrong."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {directory} is not a vilt_lab checkpoint directory")
    try:
        meta = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointFileError(config_path, f"not valid JSON ({err})") from err
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{config_path}: format is {meta.get('format')!r}, not {FORMAT_NAME!r}"
            " (an HF transformers directory? convert it with `vilt-convert from-hf`)"
        )
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format_version {meta['format_version']} is newer than this vilt_lab "
            f"reads ({FORMAT_VERSION})"
        )
    try:
        config = ViltConfig.from_dict(meta["model"])
    except KeyError as err:
        raise KeyError(f"{config_path}: field 'model': {err}") from err
    return ViltCheckpoint(
        config=config, heads=dict(meta.get("heads", {})), state=read_safetensors(weights_path)
    )


def safe_torch_load(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with an error that names what was refused.

    weights_only unpickling only rebuilds tensors and plain containers; any other global (a class,
    a function such as `os.system`) is refused before it is called, so nothing in the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _unsafe_globals(path)
        # torch's message also suggests weights_only=False; keep only its diagnosis.
        reason = str(err).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        what = f"these globals: {', '.join(refused)}" if refused else f"what weights_only refuses: {reason}"
        raise UnsafeCheckpointError(
            f"{path}: refusing to load it: unpickling would need {what}. Only tensors and plain "
            "containers are read (torch.load(weights_only=True)), so nothing in the file was run. "
            "If you trust the file, re-save its state_dict (tensors only) with torch.save."
        ) from None


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a zip-format checkpoint imports beyond weights_only's allow-list, found by
    reading the pickle's opcodes (nothing is executed); empty if the file cannot be scanned."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy (non-zip) file or a corrupt one: the caller keeps torch's own message
        return []
