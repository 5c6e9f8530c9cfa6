"""Weight conversion between vilt_lab and HF transformers' ViLT classes.

One rename table serves both directions; the only non-rename is the fused qkv projection
(timm and the official checkpoint) versus HF's separate query/key/value Linears. The backbone
converts on its own (`from_hf`, `to_hf`) or with a head, as a whole checkpoint (`save_hf`,
`load_hf`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..model.backbone import ViltBackbone
from ..model.config import ViltConfig
from ..model.heads import MLPClassifier
from .checkpoint_io import BACKBONE_PREFIX, ViltCheckpoint

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


def rename_key(key: str, table: Sequence[tuple[str, str]], src_col: int) -> str | None:
    """`key` renamed by the first (ours, theirs) prefix pair of `table` that matches it, reading
    column `src_col` as the source; `{i}` in a pair stands for a layer index. None if none matches."""
    for pair in table:
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
        new = rename_key(key, _RENAMES, src_col=1)
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
        new = rename_key(key, _RENAMES, src_col=0)
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


# Heads HF transformers has a class for: head name -> (class name, (our key in the head, HF key)).
# HF has no ViLT image-text matching class, so the ITM head cannot be exported.
HF_HEAD_CLASSES: dict[str, str] = {
    "mlm": "ViltForMaskedLM",
    "vqa": "ViltForQuestionAnswering",
    "nlvr2": "ViltForImagesAndTextClassification",
    "irtr": "ViltForImageAndTextRetrieval",
}


def _hf_classifier(ours: str) -> list[tuple[str, str]]:
    return [
        (f"{ours}{name}.", f"classifier.{index}.") for index, name in MLPClassifier.SEQUENTIAL_LAYERS.items()
    ]


# (our checkpoint key, HF task-model key) prefixes of each exportable head.
HF_HEAD_RENAMES: dict[str, list[tuple[str, str]]] = {
    # HF folds our separate decoder bias into the decoder Linear.
    "mlm": [
        ("heads.mlm.transform.", "mlm_score.transform."),
        ("heads.mlm.decoder.weight", "mlm_score.decoder.weight"),
        ("heads.mlm.bias", "mlm_score.decoder.bias"),
    ],
    "vqa": _hf_classifier("heads.vqa."),
    "nlvr2": _hf_classifier("heads.nlvr2."),
    "irtr": [("heads.irtr.fc.", "rank_output.")],
}
HF_BACKBONE_PREFIX = "vilt."


def checkpoint_to_hf(checkpoint: ViltCheckpoint, head: str) -> tuple[Any, dict[str, torch.Tensor], list[str]]:
    """HF config, HF state dict and notes for exporting `checkpoint` with its head `head`.

    Each HF task class holds one head; the notes name the checkpoint's other heads (not exported)
    and any number HF cannot represent.
    """
    if head not in HF_HEAD_CLASSES:
        raise ValueError(
            f"head {head!r} has no HF transformers class; exportable heads: {sorted(HF_HEAD_CLASSES)}"
            + (" (HF has no ViLT image-text matching class)" if head == "itm" else "")
        )
    if head not in checkpoint.heads:
        raise KeyError(f"the checkpoint has no {head!r} head; it has {sorted(checkpoint.heads) or 'none'}")
    config = checkpoint.config
    extra: dict[str, Any] = {"architectures": [HF_HEAD_CLASSES[head]]}
    if head in ("vqa", "nlvr2"):
        num_labels = checkpoint.heads[head]["num_labels"]
        labels = checkpoint.heads[head].get("labels") or [f"LABEL_{i}" for i in range(num_labels)]
        extra["id2label"] = dict(enumerate(labels))
        extra["label2id"] = {label: i for i, label in enumerate(labels)}
    if head == "nlvr2":
        if config.num_modality_types != 3:
            raise ValueError(
                f"an nlvr2 export needs model.num_modality_types=3 (one type per image), it is "
                f"{config.num_modality_types}"
            )
        extra["num_images"] = 2
    hf_config = config_to_hf(config, **extra)
    state = state_dict_to_hf(checkpoint.backbone_state(), prefix=HF_BACKBONE_PREFIX)
    for key, value in checkpoint.state.items():
        if key.startswith(f"heads.{head}."):
            state[rename_key(key, HF_HEAD_RENAMES[head], src_col=0)] = value
    notes = [
        f"head {name!r} not exported: "
        + (
            "HF transformers has no ViLT image-text matching class"
            if name == "itm"
            else f"the export holds {head!r}"
        )
        + "; it stays in the vilt_lab checkpoint"
        for name in sorted(checkpoint.heads)
        if name != head
    ]
    if config.text_ln_eps != config.ln_eps:
        notes.append(
            f"HF ViLT has one LayerNorm eps: exported with the blocks' {config.ln_eps}; the text "
            f"embedding{' and MLM head' if head == 'mlm' else ''} LayerNorm used {config.text_ln_eps}"
        )
    return hf_config, state, notes


def save_hf(checkpoint: ViltCheckpoint, head: str, directory: str | os.PathLike) -> list[str]:
    """Write a `save_pretrained` directory (config.json + model.safetensors) that
    `transformers.<HF_HEAD_CLASSES[head]>.from_pretrained(directory)` loads; returns the notes.

    The weights are written directly rather than through an HF model, because HF ties
    `ViltForMaskedLM`'s decoder to the word embeddings in memory, and an untied official MLM
    decoder would be overwritten. Both tensors are saved; HF keeps them apart when they differ.
    """
    hf_config, state, notes = checkpoint_to_hf(checkpoint, head)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    tmp = directory / f".model.safetensors.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / "model.safetensors")
    hf_config.save_pretrained(directory)
    return notes


def hf_model_to_checkpoint(hf_model) -> ViltCheckpoint:
    """Our checkpoint from an HF `ViltModel` or one of the task classes in `HF_HEAD_CLASSES`."""
    class_name = type(hf_model).__name__
    heads_by_class = {cls: head for head, cls in HF_HEAD_CLASSES.items()}
    if class_name != "ViltModel" and class_name not in heads_by_class:
        raise ValueError(
            f"cannot convert HF {class_name}: expected ViltModel or one of {sorted(heads_by_class)}"
        )
    head = heads_by_class.get(class_name)
    backbone = hf_model.vilt if head else hf_model
    if backbone.pooler is None:
        raise ValueError("the HF ViltModel has no pooler (add_pooling_layer=False); vilt_lab needs one")
    hf_state = hf_model.state_dict()
    prefix = HF_BACKBONE_PREFIX if head else ""
    state = {BACKBONE_PREFIX + k: v for k, v in hf_to_state_dict(hf_state, prefix=prefix).items()}
    heads: dict[str, dict[str, Any]] = {}
    if head:
        for key, value in hf_state.items():
            if key.startswith(HF_BACKBONE_PREFIX):
                continue
            new = rename_key(key, HF_HEAD_RENAMES[head], src_col=1)
            if new is None:
                raise KeyError(f"HF {class_name} weight {key!r} has no vilt_lab name")
            state[new] = value
        heads[head] = {}
        if head in ("vqa", "nlvr2"):
            id2label = hf_model.config.id2label
            heads[head] = {"num_labels": len(id2label), "labels": [id2label[i] for i in range(len(id2label))]}
    return ViltCheckpoint(config=config_from_hf(hf_model.config), heads=heads, state=state)


def load_hf(directory: str | os.PathLike) -> ViltCheckpoint:
    """Our checkpoint from an HF `save_pretrained` directory of a ViLT class (read by transformers)."""
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(directory)
    if hf_config.model_type != "vilt":
        raise ValueError(f"{directory}: model_type is {hf_config.model_type!r}, not 'vilt'")
    architectures = hf_config.architectures or ["ViltModel"]
    class_name = architectures[0]
    if class_name != "ViltModel" and class_name not in HF_HEAD_CLASSES.values():
        raise ValueError(f"{directory}: architecture {class_name} is not one vilt_lab converts")
    hf_model = getattr(transformers, class_name).from_pretrained(directory)
    return hf_model_to_checkpoint(hf_model)
