"""The backbone and a set of named heads as one module: what a checkpoint holds, ready to run.

Its `state_dict()` keys are exactly a `ViltCheckpoint`'s (`backbone.*`, `heads.<name>.*`), so
checkpoints load into it strictly and come out of it unchanged.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model.backbone import ViltBackbone
from ..model.heads import NLVR2Head, build_head
from . import hub
from .checkpoint_io import CONFIG_NAME, WEIGHTS_NAME, ViltCheckpoint, is_checkpoint_dir

# A training run's directories (a run dir, its `checkpoints/step_N`) hold the task module's weights,
# which only the task builders rebuild (from the run's config), and they live in a room above this
# one (`build/`). So the root API lends `from_pretrained` their reader when it is imported
# (`vilt_lab.api`, which `vilt_lab.ViltWithHeads` imports) instead of this room importing upwards.
_checkpoint_reader: Callable[[Path], ViltCheckpoint] | None = None


def use_checkpoint_reader(reader: Callable[[Path], ViltCheckpoint]) -> None:
    """Let `ViltWithHeads.from_pretrained` read a local path that is no checkpoint directory
    with `reader` (the root API's: a training run dir, its `checkpoints/step_N`, an official
    `.ckpt`)."""
    global _checkpoint_reader
    _checkpoint_reader = reader


class ViltWithHeads(nn.Module):
    """A backbone plus heads by name (see `heads.HEAD_FACTORIES`), with each head's build record.

    head_specs: name -> build arguments and optional label names, as in `ViltCheckpoint.heads`.
    """

    def __init__(
        self, backbone: ViltBackbone, heads: Mapping[str, nn.Module], head_specs: Mapping[str, dict[str, Any]]
    ) -> None:
        super().__init__()
        missing = sorted(set(heads) - set(head_specs))
        if missing:
            raise KeyError(f"no head spec for head(s) {missing}")
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        self.head_specs = {name: copy.deepcopy(dict(head_specs[name])) for name in heads}

    @classmethod
    def from_checkpoint(cls, checkpoint: ViltCheckpoint) -> ViltWithHeads:
        """Build the modules `checkpoint` describes and load its weights strictly."""
        heads = {
            name: build_head(name, checkpoint.config, **checkpoint.head_sizes(name))
            for name in checkpoint.heads
        }
        model = cls(ViltBackbone(checkpoint.config), heads, checkpoint.heads)
        model.load_state_dict(checkpoint.state, strict=True)
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None) -> ViltWithHeads:
        """A local checkpoint directory or a Hub repo id (see `hub.load_pretrained`); through the
        package root (`vilt_lab.ViltWithHeads`) also every local checkpoint
        `vilt_lab.create_model_and_transforms` reads: a training run dir (its selected checkpoint:
        the best, else the newest), a run's `checkpoints/step_N`, an official `.ckpt`.

        The model comes in training mode, as `from_checkpoint` builds it: call `.eval()` to predict.
        """
        path = Path(name_or_path)
        if path.exists() and not is_checkpoint_dir(path):
            if _checkpoint_reader is None:
                raise FileNotFoundError(
                    f"{path} is not a vilt_lab checkpoint directory ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                    "a training run dir, its checkpoints/step_N and an official .ckpt are read by the "
                    "package root: `import vilt_lab` and then "
                    f"`vilt_lab.ViltWithHeads.from_pretrained({str(path)!r})` or "
                    f"`model, preprocess, tokenizer = vilt_lab.create_model_and_transforms({str(path)!r})`, "
                    "or export it with `vilt-convert run`"
                )
            return cls.from_checkpoint(_checkpoint_reader(path))
        return cls.from_checkpoint(hub.load_pretrained(name_or_path, revision=revision))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """The checkpoint directory with every head and a model card (see `hub.save_pretrained`)."""
        return hub.save_pretrained(self.to_checkpoint(), directory)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Upload to the Hub repo `repo_id` (created if needed); returns the commit URL."""
        return hub.push_to_hub(self.to_checkpoint(), repo_id, private=private, token=token)

    def to_checkpoint(self) -> ViltCheckpoint:
        return ViltCheckpoint(
            config=self.backbone.config,
            heads=copy.deepcopy(self.head_specs),
            state={k: v.detach() for k, v in self.state_dict().items()},
        )

    def forward(
        self,
        head: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Logits of head `head` with all patches of every image (as at evaluation).

        mlm: (B, T, vocab) on the text features; mpp: (B, L, 3, bins) on the patch features; mim:
        (B, L, outputs) from its decoder over the image tokens;
        itm, vqa: (B, labels) and irtr: (B,) on the pooled vector. nlvr2 takes two images per
        text, `pixel_values` (B, 2, 3, H, W) and `pixel_mask` (B, 2, H, W) as HF's
        `ViltForImagesAndTextClassification`, and runs image i with modality type i + 1.
        """
        module = self.heads[head]
        if isinstance(module, NLVR2Head):
            if pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
                raise ValueError(
                    f"nlvr2 needs pixel_values of shape (B, 2, 3, H, W), got {tuple(pixel_values.shape)}"
                )
            pooled = [
                self.backbone(
                    input_ids,
                    attention_mask,
                    pixel_values[:, i],
                    pixel_mask[:, i],
                    image_token_type_idx=i + 1,
                    rows=1,
                ).pooled
                for i in range(2)
            ]
            return module(*pooled)
        # The last block computes only what the head reads: the text for MLM, the [CLS] for pooled heads.
        rows = {"mlm": input_ids.shape[1], "mpp": None, "mim": None}.get(head, 1)
        out = self.backbone(input_ids, attention_mask, pixel_values, pixel_mask, rows=rows)
        if head == "mlm":
            return module(out.text_feats)
        if head == "mpp":
            return module(out.image_feats[:, 1:])
        if head == "mim":
            return module(out.image_feats, out.image_mask)
        return module(out.pooled)
