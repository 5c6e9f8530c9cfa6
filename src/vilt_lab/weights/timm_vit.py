"""ImageNet ViT weights from timm for the backbone's visual part and blocks (reference Sec. 1.7).

The backbone's parameter names are timm's (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.{i}.*`, `norm`), so a plain timm `VisionTransformer` maps by name. The paper starts from
`vit_base_patch32_384` (ImageNet-21k, fine-tuned on 1k at 384) as timm 0.3 released it; timm 1.0's
weights of that name are a later training (vilt_lab.weights.original_vit has the original ones).
ViLT-L/32 takes `vit_large_patch32_384` (the Hub's `timm/vit_large_patch32_384.orig_in21k_ft_in1k`,
the original release again). Nothing here depends on the size: `vit_backbone_state` checks the
ViT's width, depth, heads, patch and MLP against the model config and refuses any difference.
"""

from __future__ import annotations

import os

import torch

from ..model.backbone import ViltBackbone
from ..model.config import ViltConfig
from .checkpoint_io import BACKBONE_PREFIX


def create_timm_vit(name: str, file: str | os.PathLike | None = None):
    """timm model `name` with its pretrained weights and no classifier: downloaded by timm, or read
    from a local `file` (timm's pretrained-config overlay; `.npz` files take timm's npz loader)."""
    import timm

    overlay = None
    if file is not None:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"model.init_file={file} not found")
        overlay = dict(file=str(file), custom_load=str(file).endswith(".npz"))
    return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)


def _check_matches(model, name: str, config: ViltConfig) -> None:
    """Fail, naming the model.* key, where the timm ViT and the config disagree."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ValueError(f"timm model {name} is a {type(model).__name__}, not a VisionTransformer")
    if model.num_prefix_tokens != 1 or getattr(model, "no_embed_class", False):
        raise ValueError(
            f"timm model {name} has register tokens or a class token without position: not ViLT's ViT"
        )
    found = {
        "hidden_size": model.embed_dim,
        "num_layers": len(model.blocks),
        "num_heads": model.blocks[0].attn.num_heads,
        "patch_size": model.patch_embed.patch_size[0],
        "mlp_dim": model.blocks[0].mlp.fc1.out_features,
    }
    wanted = {key: getattr(config, key) for key in found}
    wrong = {key: (found[key], wanted[key]) for key in found if found[key] != wanted[key]}
    if wrong:
        details = ", ".join(f"model.{key}: timm {a}, config {b}" for key, (a, b) in wrong.items())
        raise ValueError(f"timm model {name} does not fit the model config ({details})")


def timm_backbone_state(
    name: str, config: ViltConfig, file: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """timm model `name`'s pretrained weights (`create_timm_vit`) as `vit_backbone_state`."""
    return vit_backbone_state(create_timm_vit(name, file), name, config)


def vit_backbone_state(model, name: str, config: ViltConfig) -> dict[str, torch.Tensor]:
    """The weights of timm ViT `model` (architecture `name`) under our checkpoint names
    (`backbone.*`), checked against `config`.

    Every timm weight must have a place in the backbone: a ViT variant with extra parameters
    (layer scale, register tokens, qk-norm, a pooling norm) is refused rather than partly loaded.
    """
    _check_matches(model, name, config)
    with torch.device("meta"):  # names only: nothing is allocated or initialised
        ours = set(ViltBackbone(config).state_dict())
    state = model.state_dict()
    foreign = sorted(set(state) - ours)
    if foreign:
        raise ValueError(f"timm model {name} has weights vilt_lab's backbone has no place for: {foreign[:8]}")
    return {BACKBONE_PREFIX + key: value for key, value in state.items()}
