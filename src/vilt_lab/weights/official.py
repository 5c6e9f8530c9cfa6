"""The official ViLT checkpoints (dandelin/ViLT, PyTorch Lightning `.ckpt`) to and from ours.

Key names are those of the reference's Sec. 1.9: the ViT part under `transformer.`, BERT's text
embedding, `token_type_embeddings`, `pooler`, and one prefix per head. The released files are
`vilt_200k_mlm_itm.ckpt` (ITM + MLM), `vilt_vqa.ckpt`, `vilt_nlvr2.ckpt` (3 modality types),
`vilt_irtr_coco.ckpt` and `vilt_irtr_f30k.ckpt`. Their shapes fix every config number except the
number of attention heads, which follows ViT's head width of 64 unless given.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..model.config import ViltConfig
from ..model.heads import MLPClassifier
from .checkpoint_io import BACKBONE_PREFIX, ViltCheckpoint, safe_torch_load
from .hf import rename_key

# The official code's fixed numbers that a state dict does not show (reference Sec. 1.2-1.5).
OFFICIAL_LN_EPS = 1e-6
OFFICIAL_TEXT_LN_EPS = 1e-12
OFFICIAL_DROP_RATE = 0.1
VIT_HEAD_DIM = 64
# NLVR2's labels: the official dataset maps the statement being "True" to 1.
NLVR2_LABELS = ["False", "True"]

_BACKBONE = [
    ("blocks.", "transformer.blocks."),
    ("cls_token", "transformer.cls_token"),
    ("pos_embed", "transformer.pos_embed"),
    ("patch_embed.", "transformer.patch_embed."),
    ("norm.", "transformer.norm."),
    ("text_embeddings.", "text_embeddings."),
    ("token_type_embeddings.", "token_type_embeddings."),
    ("pooler.", "pooler."),
]


def _mlp_classifier(ours: str, official: str) -> list[tuple[str, str]]:
    return [
        (f"{ours}{name}.", f"{official}{index}.") for index, name in MLPClassifier.SEQUENTIAL_LAYERS.items()
    ]


# (our checkpoint key prefix, official key prefix).
OFFICIAL_RENAMES: list[tuple[str, str]] = [
    *((BACKBONE_PREFIX + ours, official) for ours, official in _BACKBONE),
    ("heads.itm.", "itm_score."),
    ("heads.mlm.", "mlm_score."),
    ("heads.mpp.", "mpp_score."),
    ("heads.irtr.fc.", "rank_output."),
    *_mlp_classifier("heads.vqa.", "vqa_classifier."),
    *_mlp_classifier("heads.nlvr2.", "nlvr2_classifier."),
]
# A buffer (BERT's position index 0..max_len-1) with no weights in it.
POSITION_IDS = "text_embeddings.position_ids"
_BLOCK = re.compile(r"^transformer\.blocks\.(\d+)\.")


def infer_config(state: Mapping[str, torch.Tensor], num_heads: int | None = None) -> ViltConfig:
    """The `ViltConfig` an official state dict was trained with, read from its tensor shapes."""

    def shape(key: str) -> torch.Size:
        if key not in state:
            raise KeyError(f"official checkpoint has no {key!r}: not a ViLT checkpoint?")
        return state[key].shape

    vocab_size, hidden = shape("text_embeddings.word_embeddings.weight")
    blocks = {int(m.group(1)) for key in state if (m := _BLOCK.match(key))}
    if not blocks:
        raise KeyError("official checkpoint has no transformer.blocks.* weights")
    patch_size = shape("transformer.patch_embed.proj.weight")[-1]
    spatial = shape("transformer.pos_embed")[1] - 1
    grid = round(spatial**0.5)
    if grid * grid != spatial:
        raise ValueError(f"transformer.pos_embed has {spatial} spatial rows, not a square grid")
    if num_heads is None:
        if hidden % VIT_HEAD_DIM:
            raise ValueError(f"hidden size {hidden} is not a multiple of {VIT_HEAD_DIM}: give num_heads")
        num_heads = hidden // VIT_HEAD_DIM
    return ViltConfig(
        hidden_size=hidden,
        num_layers=max(blocks) + 1,
        num_heads=num_heads,
        mlp_ratio=shape("transformer.blocks.0.mlp.fc1.weight")[0] / hidden,
        patch_size=patch_size,
        image_size=grid * patch_size,
        max_text_len=shape("text_embeddings.position_embeddings.weight")[0],
        vocab_size=vocab_size,
        type_vocab_size=shape("text_embeddings.token_type_embeddings.weight")[0],
        num_modality_types=shape("token_type_embeddings.weight")[0],
        ln_eps=OFFICIAL_LN_EPS,
        text_ln_eps=OFFICIAL_TEXT_LN_EPS,
        drop_rate=OFFICIAL_DROP_RATE,
    )


def _head_specs(
    state: Mapping[str, torch.Tensor], vqa_labels: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    """Each head's build arguments, read from the shapes of our (renamed) state."""
    names = {key.split(".")[1] for key in state if key.startswith("heads.")}
    specs: dict[str, dict[str, Any]] = {name: {} for name in names}
    if "vqa" in specs:
        num_labels = state["heads.vqa.fc2.weight"].shape[0]
        specs["vqa"]["num_labels"] = num_labels
        if vqa_labels is not None:
            if len(vqa_labels) != num_labels:
                raise ValueError(f"{len(vqa_labels)} VQA answer labels given for a head with {num_labels}")
            specs["vqa"]["labels"] = list(vqa_labels)
    if "nlvr2" in specs:
        specs["nlvr2"].update(num_labels=state["heads.nlvr2.fc2.weight"].shape[0], labels=list(NLVR2_LABELS))
    if "mpp" in specs:
        specs["mpp"]["bins"] = state["heads.mpp.decoder.weight"].shape[0] // 3
    return specs


def from_official(
    state: Mapping[str, torch.Tensor], num_heads: int | None = None, vqa_labels: Sequence[str] | None = None
) -> ViltCheckpoint:
    """Our checkpoint from an official ViLT state dict; every key must be known (none dropped)."""
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == POSITION_IDS:
            continue
        new = rename_key(key, OFFICIAL_RENAMES, src_col=1)
        if new is None:
            raise KeyError(f"official checkpoint key {key!r} has no vilt_lab name")
        ours[new] = value
    return ViltCheckpoint(
        config=infer_config(state, num_heads), heads=_head_specs(ours, vqa_labels), state=ours
    )


def to_official(checkpoint: ViltCheckpoint) -> dict[str, torch.Tensor]:
    """The official state dict (key names and layout) of our checkpoint."""
    out = {}
    for key, value in checkpoint.state.items():
        new = rename_key(key, OFFICIAL_RENAMES, src_col=0)
        if new is None:
            raise KeyError(f"vilt_lab checkpoint key {key!r} has no official ViLT name")
        out[new] = value
    out[POSITION_IDS] = torch.arange(checkpoint.config.max_text_len).unsqueeze(0)
    return out


def read_vqa_labels(path: str | os.PathLike) -> list[str]:
    """Answer names by index from a JSON list, or a JSON object of index -> answer
    (the release's `vqa_dict.json`)."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        return [str(label) for label in data]
    if isinstance(data, dict):
        try:
            by_index = {int(k): str(v) for k, v in data.items()}
        except ValueError as err:
            raise ValueError(f"{path}: keys must be answer indices: {err}") from err
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{path}: answer indices must be 0..{len(by_index) - 1} without gaps")
        return [by_index[i] for i in range(len(by_index))]
    raise ValueError(f"{path}: expected a JSON list of answers or an object index -> answer")


def read_official(
    path: str | os.PathLike, num_heads: int | None = None, vqa_labels: Sequence[str] | None = None
) -> ViltCheckpoint:
    """Our checkpoint from an official `.ckpt` file (a Lightning checkpoint with `state_dict`, or a
    bare state dict), read with `safe_torch_load`."""
    content = safe_torch_load(path)
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a Lightning checkpoint with a 'state_dict' of tensors")
    return from_official(state, num_heads, vqa_labels)
