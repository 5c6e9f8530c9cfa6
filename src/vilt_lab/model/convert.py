"""Weight conversion between vilt_lab and HF transformers' ViLT classes.

One rename table serves both directions; the only non-rename is the fused qkv projection
(timm and the official checkpoint) versus HF's separate query/key/value Linears.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .backbone import ViltBackbone
from .config import ViltConfig

# (ours, HF ViltModel) key patterns; `{i}` is a block index.
_RENAMES: list[tuple[str, str]] = [
    ("text_embeddings.", "embeddings.text_embeddings."),
    ("cls_token", "embeddings.cls_token"),
    ("pos_embed", "embeddings.position_embeddings"),
    ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
    ("token_type_embeddings.", "embeddings.token_type_embeddings."),
    ("blocks.{i}.norm1.", "encoder.layer.{i}.layernorm_before."),
    ("blocks.{i}.attn.proj.", "encoder.layer.{i}.attention.output.dense."),
    ("blocks.{i}.norm2.", "encoder.layer.{i}.layernorm_after."),
    ("blocks.{i}.mlp.fc1.", "encoder.layer.{i}.intermediate.dense."),
    ("blocks.{i}.mlp.fc2.", "encoder.layer.{i}.output.dense."),
    ("norm.", "layernorm."),
    ("pooler.dense.", "pooler.dense."),
]
_QKV_OURS = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_HF = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
# HF registers these position/type index buffers; they carry no weights.
_HF_BUFFERS = ("embeddings.text_embeddings.position_ids", "embeddings.text_embeddings.token_type_ids")


def _rename(key: str, src_col: int) -> str | None:
    for pair in _RENAMES:
        src, dst = pair[src_col], pair[1 - src_col]
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)")
        m = re.match(pattern, key)
        if m:
            out = dst.replace("{i}", m.group(1)) if m.groups() else dst
            return out + key[m.end() :]
    return None


def hf_to_state_dict(hf_state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """HF `ViltModel` state dict (keys optionally under `prefix`, e.g. "vilt.") -> our backbone's."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in hf_state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        if key in _HF_BUFFERS:
            continue
        m = _QKV_HF.match(key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        new = _rename(key, src_col=1)
        if new is None:
            raise KeyError(f"no vilt_lab name for HF ViLT weight {prefix + key!r}")
        out[new] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise KeyError(f"HF layer {layer} {kind}: expected query, key and value, found {sorted(parts)}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def state_dict_to_hf(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our backbone's state dict -> HF `ViltModel` keys (each under `prefix`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _QKV_OURS.match(key)
        if m:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[f"{prefix}encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(2)}"] = part
            continue
        new = _rename(key, src_col=0)
        if new is None:
            raise KeyError(f"no HF ViLT name for vilt_lab weight {key!r}")
        out[prefix + new] = value
    return out


def config_from_hf(hf_config) -> ViltConfig:
    """Our `ViltConfig` from a `transformers.ViltConfig` (HF uses one LayerNorm eps everywhere)."""
    if getattr(hf_config, "hidden_act", "gelu") != "gelu":
        raise ValueError(f"HF config hidden_act={hf_config.hidden_act!r}: vilt_lab blocks use exact GELU")
    if not getattr(hf_config, "qkv_bias", True):
        raise ValueError("HF config qkv_bias=False: vilt_lab's fused qkv always has a bias")
    return ViltConfig(
        hidden_size=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        mlp_ratio=hf_config.intermediate_size / hf_config.hidden_size,
        patch_size=hf_config.patch_size,
        image_size=hf_config.image_size,
        max_text_len=hf_config.max_position_embeddings,
        vocab_size=hf_config.vocab_size,
        type_vocab_size=hf_config.type_vocab_size,
        num_modality_types=hf_config.modality_type_vocab_size,
        ln_eps=hf_config.layer_norm_eps,
        text_ln_eps=hf_config.layer_norm_eps,
        drop_rate=hf_config.hidden_dropout_prob,
        attn_drop_rate=hf_config.attention_probs_dropout_prob,
        init_std=hf_config.initializer_range,
    )


def config_to_hf(config: ViltConfig, **extra):
    """A `transformers.ViltConfig` for our config; `extra` sets head fields (num_labels, id2label...).

    HF has one LayerNorm eps; our text embedding's (1e-12 by default) differs from the blocks'
    (1e-6), so an export carries the block eps and the text LayerNorm is off by at most that.
    """
    from transformers import ViltConfig as HFViltConfig

    if config.mlp_dim != config.hidden_size * config.mlp_ratio:
        raise ValueError(f"model.mlp_ratio={config.mlp_ratio} gives a fractional MLP width")
    return HFViltConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_dim,
        hidden_act="gelu",
        patch_size=config.patch_size,
        image_size=config.image_size,
        max_position_embeddings=config.max_text_len,
        vocab_size=config.vocab_size,
        type_vocab_size=config.type_vocab_size,
        modality_type_vocab_size=config.num_modality_types,
        layer_norm_eps=config.ln_eps,
        hidden_dropout_prob=config.drop_rate,
        attention_probs_dropout_prob=config.attn_drop_rate,
        initializer_range=config.init_std,
        qkv_bias=True,
        max_image_length=-1,
        **extra,
    )


def from_hf(hf_model) -> ViltBackbone:
    """Our backbone with the weights and matching config of a `transformers.ViltModel`.

    Also accepts an HF task model (`ViltForMaskedLM`, ...): its `.vilt` is used.
    """
    hf_model = getattr(hf_model, "vilt", hf_model)
    backbone = ViltBackbone(config_from_hf(hf_model.config))
    state = hf_to_state_dict(hf_model.state_dict())
    if hf_model.pooler is None:
        raise ValueError("the HF ViltModel has no pooler (add_pooling_layer=False); vilt_lab needs one")
    backbone.load_state_dict(state, strict=True)
    return backbone


def to_hf(backbone: ViltBackbone):
    """A `transformers.ViltModel` holding this backbone's weights."""
    from transformers import ViltModel

    hf_model = ViltModel(config_to_hf(backbone.config))
    missing, unexpected = hf_model.load_state_dict(state_dict_to_hf(backbone.state_dict()), strict=False)
    missing = [k for k in missing if k not in _HF_BUFFERS]
    if missing or unexpected:
        raise RuntimeError(f"HF ViltModel load: missing {missing}, unexpected {unexpected}")
    return hf_model.eval() if not backbone.training else hf_model
