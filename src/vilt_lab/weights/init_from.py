"""`model.init_from`: start a model from ImageNet ViT weights or from a vilt_lab checkpoint.

    model.init_from=null                                  fresh initialisation
    model.init_from=timm:vit_base_patch32_384             timm's pretrained weights (downloaded;
                                                          timm 1.0's are AugReg, not the paper's)
    model.init_from=original:vit_base_patch32_384         the original release the official code
                                                          loaded (downloaded, SHA-256 checked)
    model.init_from=original:vit_large_patch32_384        the same release's ViT-L/32, for model=large32
    model.init_from=original:vit_base_patch32_384 model.init_file=/weights/jx_vit_base_p32_384-830016f5.pth
                                                          the same weights from a local file
    model.init_from=/ckpt/vilt_200k_mlm_itm               a vilt_lab checkpoint directory

Every parameter of the backbone and the heads is either loaded, adapted (with the reason), or
left new, and the `InitReport` lists which. Adaptations are those of the official fine-tuning:
a position table resized to the model's grid, extra modality-type rows (NLVR2's second image)
copied from the last image row, a retrieval head started from ITM's "match" row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..model.backbone import ViltBackbone
from ..model.config import ViltConfig
from ..model.embeddings import resize_pos_embed
from ..model.heads import RetrievalHead
from .checkpoint_io import BACKBONE_PREFIX, HEADS_PREFIX, is_checkpoint_dir, load_checkpoint
from .original_vit import original_backbone_state
from .timm_vit import timm_backbone_state

# `model.init_from=<prefix><name>` -> the ViT weights of `name` under checkpoint names, from
# `model.init_file` when it is set: (name, config, init_file) -> state.
VIT_SOURCES = {"timm:": timm_backbone_state, "original:": original_backbone_state}
INIT_FILE_USE = "init_file is for timm:<name> and original:<name>"


@dataclass
class InitReport:
    """What an initialisation did, by checkpoint name (`backbone.*`, `heads.<name>.*`).

    loaded: copied unchanged; adapted: name -> how it was derived; new: left freshly initialised;
    unused: source weights nothing took; notes: differences worth knowing (e.g. LayerNorm eps).
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"init from {self.source}: {len(self.loaded)} tensors loaded, {len(self.adapted)} adapted, "
            f"{len(self.new)} left new, {len(self.unused)} unused"
        ]
        lines += [f"  adapted {name}: {how}" for name, how in self.adapted.items()]
        lines += [f"  new {name}" for name in self.new]
        lines += [f"  unused {name}" for name in self.unused]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _targets(backbone: ViltBackbone, heads: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Checkpoint name -> the live tensor (state_dict tensors share the parameters' storage)."""
    out = {BACKBONE_PREFIX + k: v for k, v in backbone.state_dict().items()}
    for name, head in heads.items():
        out.update({f"{HEADS_PREFIX}{name}.{k}": v for k, v in head.state_dict().items()})
    return out


@torch.no_grad()
def load_into(
    backbone: ViltBackbone,
    heads: Mapping[str, nn.Module],
    state: Mapping[str, torch.Tensor],
    source: str,
    source_config: ViltConfig | None = None,
) -> InitReport:
    """Copy `state` (checkpoint names) into `backbone` and `heads` where it fits; see the module doc.

    A shape that cannot be adapted (another width or vocabulary, more labels) is an error that
    names the tensor and both shapes, never a silent skip.
    """
    config = backbone.config
    report = InitReport(source=source)
    if source_config is not None:
        if source_config.vocab_size != config.vocab_size:
            raise ValueError(
                f"{source} was trained with a vocabulary of {source_config.vocab_size} tokens, the model has "
                f"{config.vocab_size} (data.tokenizer, model.vocab_size): use the tokenizer it was trained with"
            )
        if source_config.num_heads != config.num_heads:
            raise ValueError(
                f"{source}: trained with {source_config.num_heads} heads, model.num_heads={config.num_heads}"
            )
        for key in ("ln_eps", "text_ln_eps"):
            if getattr(source_config, key) != getattr(config, key):
                report.notes.append(
                    f"{source} was trained with {key}={getattr(source_config, key)}, model.{key}={getattr(config, key)}"
                )
    targets = _targets(backbone, heads)
    for name, target in targets.items():
        if name not in state:
            report.new.append(name)
            continue
        source_tensor = state[name].to(target.dtype)
        if source_tensor.shape == target.shape:
            target.copy_(source_tensor)
            report.loaded.append(name)
        elif name == BACKBONE_PREFIX + "pos_embed" and source_tensor.shape[-1] == target.shape[-1]:
            target.copy_(resize_pos_embed(source_tensor, config.grid_size))
            g = round((source_tensor.shape[1] - 1) ** 0.5)
            report.adapted[name] = (
                f"position table resized from {g}x{g} to {config.grid_size}x{config.grid_size}"
            )
        elif name == BACKBONE_PREFIX + "token_type_embeddings.weight" and _grows_rows(source_tensor, target):
            rows = source_tensor.shape[0]
            target[:rows] = source_tensor
            target[rows:] = source_tensor[-1]
            report.adapted[name] = (
                f"modality types {rows} -> {target.shape[0]}, new rows copied from row {rows - 1}"
            )
        else:
            raise ValueError(
                f"{source}: {name} has shape {tuple(source_tensor.shape)}, the model's is {tuple(target.shape)}"
                " (check model.* sizes against the source)"
            )
    _retrieval_from_itm(heads, state, report)
    report.unused = sorted(set(state) - set(targets))
    return report


def _grows_rows(source: torch.Tensor, target: torch.Tensor) -> bool:
    return source.shape[1:] == target.shape[1:] and source.shape[0] < target.shape[0]


def _retrieval_from_itm(
    heads: Mapping[str, nn.Module], state: Mapping[str, torch.Tensor], report: InitReport
) -> None:
    """A new retrieval head starts from the source's ITM "match" row when the source has one."""
    head = heads.get("irtr")
    weight, bias = state.get("heads.itm.fc.weight"), state.get("heads.itm.fc.bias")
    names = [f"{HEADS_PREFIX}irtr.fc.weight", f"{HEADS_PREFIX}irtr.fc.bias"]
    if (
        isinstance(head, RetrievalHead)
        and weight is not None
        and bias is not None
        and set(names) <= set(report.new)
    ):
        head.copy_itm_match_row(weight, bias)
        for name in names:
            report.new.remove(name)
            report.adapted[name] = "from heads.itm row 1 (the match logit)"


def init_model(
    backbone: ViltBackbone,
    heads: Mapping[str, nn.Module],
    init_from: str | None,
    init_file: str | None = None,
) -> InitReport | None:
    """Apply `model.init_from` (and `model.init_file`) to `backbone` and `heads`; None if unset."""
    if init_from is None:
        if init_file is not None:
            raise ValueError(f"model.init_file is set but model.init_from is null ({INIT_FILE_USE})")
        return None
    for prefix, vit_state in VIT_SOURCES.items():
        if init_from.startswith(prefix):
            name = init_from[len(prefix) :]
            state = vit_state(name, backbone.config, init_file)
            source = f"{prefix[:-1]} {name}" + (f" ({init_file})" if init_file else "")
            return load_into(backbone, heads, state, source)
    if init_file is not None:
        raise ValueError(f"model.init_file is set for model.init_from={init_from} ({INIT_FILE_USE})")
    if not is_checkpoint_dir(init_from):
        hint = (
            " (an official .ckpt? convert it first: vilt-convert official)"
            if Path(init_from).is_file()
            else ""
        )
        raise FileNotFoundError(
            f"model.init_from={init_from}: not 'timm:<name>', 'original:<name>' nor a vilt_lab"
            f" checkpoint directory{hint}"
        )
    checkpoint = load_checkpoint(init_from)
    return load_into(backbone, heads, checkpoint.state, str(init_from), checkpoint.config)
