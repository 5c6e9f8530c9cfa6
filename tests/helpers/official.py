"""Official ViLT checkpoints with random weights: every tensor of a released Lightning checkpoint
(reference Sec. 1.8/1.9) at small sizes, written as the released files are. The released files
cannot be downloaded here."""

from __future__ import annotations

import math
from pathlib import Path

import torch

HIDDEN, LAYERS, PATCH, GRID, VOCAB, TEXT_LEN = 128, 2, 16, 4, 120, 12
VQA_ANSWERS = 3129
# Which heads each released checkpoint holds (the official code builds a head only for the
# losses it trains; retrieval keeps its frozen ITM head).
VARIANTS = {
    "mlm_itm": ("itm", "mlm"),
    "vqa": ("vqa",),
    "nlvr2": ("nlvr2",),
    "irtr": ("itm", "irtr"),
}


def official_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Every weight of an official checkpoint with its shape, written from the reference."""
    H, V = HIDDEN, VOCAB
    shapes: dict[str, tuple[int, ...]] = {
        "text_embeddings.word_embeddings.weight": (V, H),
        "text_embeddings.position_embeddings.weight": (TEXT_LEN, H),
        "text_embeddings.token_type_embeddings.weight": (2, H),
        "text_embeddings.LayerNorm.weight": (H,),
        "text_embeddings.LayerNorm.bias": (H,),
        # NLVR2 grows the modality-type table to 3 rows: image 2 has its own type.
        "token_type_embeddings.weight": (3 if variant == "nlvr2" else 2, H),
        "transformer.cls_token": (1, 1, H),
        "transformer.pos_embed": (1, 1 + GRID * GRID, H),
        "transformer.patch_embed.proj.weight": (H, 3, PATCH, PATCH),
        "transformer.patch_embed.proj.bias": (H,),
        "transformer.norm.weight": (H,),
        "transformer.norm.bias": (H,),
        "pooler.dense.weight": (H, H),
        "pooler.dense.bias": (H,),
    }
    for i in range(LAYERS):
        b = f"transformer.blocks.{i}."
        shapes |= {
            b + "norm1.weight": (H,),
            b + "norm1.bias": (H,),
            b + "attn.qkv.weight": (3 * H, H),
            b + "attn.qkv.bias": (3 * H,),
            b + "attn.proj.weight": (H, H),
            b + "attn.proj.bias": (H,),
            b + "norm2.weight": (H,),
            b + "norm2.bias": (H,),
            b + "mlp.fc1.weight": (4 * H, H),
            b + "mlp.fc1.bias": (4 * H,),
            b + "mlp.fc2.weight": (H, 4 * H),
            b + "mlp.fc2.bias": (H,),
        }
    heads = VARIANTS[variant]
    if "itm" in heads:
        shapes |= {"itm_score.fc.weight": (2, H), "itm_score.fc.bias": (2,)}
    if "mlm" in heads:
        shapes |= {
            "mlm_score.transform.dense.weight": (H, H),
            "mlm_score.transform.dense.bias": (H,),
            "mlm_score.transform.LayerNorm.weight": (H,),
            "mlm_score.transform.LayerNorm.bias": (H,),
            "mlm_score.decoder.weight": (V, H),
            "mlm_score.bias": (V,),
        }
    if "vqa" in heads:
        shapes |= {
            "vqa_classifier.0.weight": (2 * H, H),
            "vqa_classifier.0.bias": (2 * H,),
            "vqa_classifier.1.weight": (2 * H,),
            "vqa_classifier.1.bias": (2 * H,),
            "vqa_classifier.3.weight": (VQA_ANSWERS, 2 * H),
            "vqa_classifier.3.bias": (VQA_ANSWERS,),
        }
    if "nlvr2" in heads:
        shapes |= {
            "nlvr2_classifier.0.weight": (2 * H, 2 * H),
            "nlvr2_classifier.0.bias": (2 * H,),
            "nlvr2_classifier.1.weight": (2 * H,),
            "nlvr2_classifier.1.bias": (2 * H,),
            "nlvr2_classifier.3.weight": (2, 2 * H),
            "nlvr2_classifier.3.bias": (2,),
        }
    if "irtr" in heads:
        shapes |= {"rank_output.weight": (1, H), "rank_output.bias": (1,)}
    return shapes


def random_official_state(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights at unit activation scale: matrices ~ N(0, 1/fan_in), tables ~ N(0, 1),
    LayerNorm weights near 1. At that scale the one LayerNorm eps HF has (1e-6, against the text
    LayerNorm's 1e-12) moves outputs by ~1e-7, far below the 1e-5 compared."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(variant).items():
        x = torch.randn(shape, generator=g)
        if key.endswith(".weight") and any(tag in key for tag in ("norm", "Norm", "classifier.1.")):
            x = 1 + 0.1 * x
        elif key.endswith("bias"):
            x = 0.1 * x
        elif (
            len(shape) >= 2 and "embeddings" not in key and "cls_token" not in key and "pos_embed" not in key
        ):
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    state["text_embeddings.position_ids"] = torch.arange(TEXT_LEN).unsqueeze(0)
    return state


def write_lightning_ckpt(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """`state` saved at `path` as the released files hold it: a Lightning checkpoint."""
    torch.save({"epoch": 9, "global_step": 1000, "state_dict": state, "hyper_parameters": {"lr": 1e-4}}, path)
    return path
