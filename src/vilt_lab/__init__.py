"""vilt_lab: ViLT pre-training and fine-tuning as a Hydra + Accelerate + WebDataset framework.

The Python API (`vilt_lab.api`, which shows a whole prediction):

    create_model_and_transforms(name_or_path)  (model, preprocess, tokenizer) of a run dir, a run's
                                               checkpoints/step_N, a checkpoint directory, an
                                               official .ckpt or a released name
    list_pretrained()                          the released checkpoints' names
    ViltWithHeads                              the backbone with its heads; from_pretrained reads
                                               the same local checkpoints, or a Hub repo id
    ViltBackbone, ViltConfig                   the backbone without heads, and its configuration
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The module each exported name is taken from. They are imported on first access (PEP 562), not
# here: the API pulls in torch, transformers and the training builders (seconds), and every entry
# point (`vilt-shards`, `vilt-report`, ...) imports this package first, most of them needing none
# of it. `ViltWithHeads` (defined in `vilt_lab.weights.with_heads`) comes through `vilt_lab.api`,
# whose import lends its `from_pretrained` the reader of training runs.
_EXPORTS = {
    "create_model_and_transforms": "vilt_lab.api",
    "list_pretrained": "vilt_lab.api",
    "ViltWithHeads": "vilt_lab.api",
    "ViltBackbone": "vilt_lab.model.backbone",
    "ViltConfig": "vilt_lab.model.config",
}

__all__ = ["ViltBackbone", "ViltConfig", "ViltWithHeads", "create_model_and_transforms", "list_pretrained"]

if TYPE_CHECKING:
    from .api import create_model_and_transforms, list_pretrained
    from .model.backbone import ViltBackbone
    from .model.config import ViltConfig
    from .weights.with_heads import ViltWithHeads


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vilt_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
