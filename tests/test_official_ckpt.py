"""Official ViLT checkpoints: conversion both ways, and every head's outputs against HF transformers.

The test writes Lightning checkpoints in the official key layout (reference Sec. 1.8/1.9) with
random weights; the released files cannot be downloaded here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers

from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.weights.checkpoint_io import load_checkpoint
from vilt_lab.weights.official import from_official, read_official, to_official
from vilt_lab.weights.with_heads import ViltWithHeads

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
    torch.save({"epoch": 9, "global_step": 1000, "state_dict": state, "hyper_parameters": {"lr": 1e-4}}, path)
    return path


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def converted(request, tmp_path_factory):
    """(variant, official state, directory of its vilt_lab conversion made by the CLI)."""
    variant = request.param
    tmp = tmp_path_factory.mktemp(f"official_{variant}")
    state = random_official_state(variant)
    ckpt = write_lightning_ckpt(tmp / f"vilt_{variant}.ckpt", state)
    assert vilt_convert(["official", str(ckpt), "--out", str(tmp / "ours")]) == 0
    return variant, state, tmp / "ours"


def test_conversion_keeps_every_tensor(converted):
    variant, state, ours = converted
    checkpoint = load_checkpoint(ours)
    assert sorted(checkpoint.heads) == sorted(VARIANTS[variant])
    assert checkpoint.config.num_modality_types == (3 if variant == "nlvr2" else 2)
    assert (checkpoint.config.hidden_size, checkpoint.config.num_layers) == (HIDDEN, LAYERS)
    assert (checkpoint.config.image_size, checkpoint.config.max_text_len) == (GRID * PATCH, TEXT_LEN)
    if variant == "vqa":
        assert checkpoint.heads["vqa"]["num_labels"] == VQA_ANSWERS
    back = to_official(checkpoint)
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key


def batch(num_images: int = 1, seed: int = 0):
    """Two texts with padding, and per text `num_images` padded images of different sizes."""
    g = torch.Generator().manual_seed(seed)
    sizes = [[(4, 4), (3, 2)], [(2, 3), (4, 1)]][:num_images]
    H, W = GRID * PATCH, GRID * PATCH
    pixel_values = torch.zeros(2, num_images, 3, H, W)
    pixel_mask = torch.zeros(2, num_images, H, W, dtype=torch.long)
    for j, per_text in enumerate(sizes):
        for i, (h, w) in enumerate(per_text):
            pixel_values[i, j, :, : h * PATCH, : w * PATCH] = (
                torch.rand(3, h * PATCH, w * PATCH, generator=g) * 2 - 1
            )
            pixel_mask[i, j, : h * PATCH, : w * PATCH] = 1
    input_ids = torch.randint(1, VOCAB, (2, TEXT_LEN), generator=g)
    attention_mask = torch.ones(2, TEXT_LEN, dtype=torch.long)
    attention_mask[1, 7:] = 0
    if num_images == 1:
        pixel_values, pixel_mask = pixel_values[:, 0], pixel_mask[:, 0]
    return input_ids, attention_mask, pixel_values, pixel_mask


HF_OUTPUT = {
    "mlm": (transformers.ViltForMaskedLM, 1),
    "vqa": (transformers.ViltForQuestionAnswering, 1),
    "nlvr2": (transformers.ViltForImagesAndTextClassification, 2),
    "irtr": (transformers.ViltForImageAndTextRetrieval, 1),
}


def test_heads_match_hf_transformers(converted, tmp_path):
    """Each exportable head: our logits equal HF's, loaded from our `to-hf` export; ITM (HF has no
    class for it) equals its Linear applied by hand, with the official tensors, to HF's pooled vector.

    Measured on this data: MLM differs by up to ~6e-6 (~4e-6 of it the LayerNorm eps HF cannot
    carry, see `random_official_state`), the pooled heads by ~1e-6 or less.
    """
    variant, state, ours_dir = converted
    ours = ViltWithHeads.from_checkpoint(load_checkpoint(ours_dir)).eval()
    hf_backbone = None
    for head in VARIANTS[variant]:
        if head == "itm":
            continue
        hf_class, num_images = HF_OUTPUT[head]
        assert vilt_convert(["to-hf", str(ours_dir), "--head", head, "--out", str(tmp_path / head)]) == 0
        hf = hf_class.from_pretrained(tmp_path / head).eval()
        ids, am, pix, pm = batch(num_images)
        with torch.no_grad():
            expected = hf(input_ids=ids, attention_mask=am, pixel_values=pix, pixel_mask=pm).logits
            got = ours(head, ids, am, pix, pm)
        if head == "mlm":  # padded text positions are compared too: their logits are defined
            assert got.shape == (2, TEXT_LEN, VOCAB)
        if head == "irtr":
            expected = expected.squeeze(-1)
        if head == "vqa":
            assert got.shape == (2, VQA_ANSWERS)
            assert hf.config.num_labels == VQA_ANSWERS
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        hf_backbone = hf.vilt
    if "itm" in VARIANTS[variant]:
        ids, am, pix, pm = batch()
        with torch.no_grad():
            pooled = hf_backbone(
                input_ids=ids, attention_mask=am, pixel_values=pix, pixel_mask=pm
            ).pooler_output
            expected = pooled @ state["itm_score.fc.weight"].T + state["itm_score.fc.bias"]
            got = ours("itm", ids, am, pix, pm)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_nlvr2_second_image_uses_the_third_modality_row():
    """Giving row 2 of the modality table row 1's values changes the NLVR2 logits: image 2 is typed 2."""
    model = ViltWithHeads.from_checkpoint(from_official(random_official_state("nlvr2"))).eval()
    ids, am, pix, pm = batch(2)
    with torch.no_grad():
        before = model("nlvr2", ids, am, pix, pm)
        table = model.backbone.token_type_embeddings.weight
        table[2] = table[1]
        after = model("nlvr2", ids, am, pix, pm)
    assert not torch.allclose(before, after, atol=1e-4)


def test_unknown_official_key_is_named():
    state = random_official_state("vqa")
    state["vqa_classifier.9.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"vqa_classifier\.9\.weight"):
        from_official(state)


def test_vqa_answer_names_are_attached(tmp_path):
    state = random_official_state("vqa")
    labels = {str(i): f"answer {i}" for i in range(VQA_ANSWERS)}
    (tmp_path / "vqa_dict.json").write_text(json.dumps(labels))
    ckpt = write_lightning_ckpt(tmp_path / "vilt_vqa.ckpt", state)
    out = tmp_path / "ours"
    assert (
        vilt_convert(
            ["official", str(ckpt), "--vqa-labels", str(tmp_path / "vqa_dict.json"), "--out", str(out)]
        )
        == 0
    )
    assert load_checkpoint(out).heads["vqa"]["labels"][7] == "answer 7"
    assert vilt_convert(["to-hf", str(out), "--head", "vqa", "--out", str(tmp_path / "hf")]) == 0
    assert transformers.AutoConfig.from_pretrained(tmp_path / "hf").id2label[7] == "answer 7"


def test_bare_state_dict_and_non_checkpoint(tmp_path):
    state = random_official_state("irtr")
    torch.save(state, tmp_path / "bare.ckpt")
    assert sorted(read_official(tmp_path / "bare.ckpt").heads) == ["irtr", "itm"]
    torch.save({"state_dict": {"x": 1}}, tmp_path / "odd.ckpt")
    with pytest.raises(ValueError, match="state_dict"):
        read_official(tmp_path / "odd.ckpt")
