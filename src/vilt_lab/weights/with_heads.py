"""The backbone and a set of named heads as one module: what a checkpoint holds, ready to run.

Its `state_dict()` keys are exactly a `ViltCheckpoint`'s (`backbone.*`, `heads.<name>.*`), so
checkpoints load into it strictly and come out of it unchanged.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model.backbone import ViltBackbone
from ..model.heads import NLVR2Head, build_head
from . import hub
from .checkpoint_io import CONFIG_NAME, WEIGHTS_NAME, ViltCheckpoint, is_checkpoint_dir


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
        """A local checkpoint directory or a Hub repo id (see `hub.load_pretrained`).

        A training run's directories and the official `.ckpt` are read one room up (a run's
        checkpoint is rebuilt from its config by the task builders, which this module must not
        import): `vilt_lab.create_model_and_transforms` reads every checkpoint, and
        `vilt-convert run` exports a run's checkpoint as a directory this reads.
        """
        path = Path(name_or_path)
        if path.exists() and not is_checkpoint_dir(path):
            raise FileNotFoundError(
                f"{path} is not a vilt_lab checkpoint directory ({CONFIG_NAME} + {WEIGHTS_NAME}); "
                "for a training run dir, its checkpoints/step_N or an official .ckpt use "
                f"`model, preprocess, tokenizer = vilt_lab.create_model_and_transforms({str(path)!r})`, "
                "or export it with `vilt-convert run`"
            )
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

        mlm: (B, T, vocab) on the text features; mpp: (B, L, 3, bins) on the patch features;
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
        rows = {"mlm": input_ids.shape[1], "mpp": None}.get(head, 1)
        out = self.backbone(input_ids, attention_mask, pixel_values, pixel_mask, rows=rows)
        if head == "mlm":
            return module(out.text_feats)
        if head == "mpp":
            return module(out.image_feats[:, 1:])
        return module(out.pooled)
