"""Official ViLT checkpoints: conversion both ways, and every head's outputs against HF transformers.

The test writes Lightning checkpoints in the official key layout (reference Sec. 1.8/1.9) with
random weights; the released files cannot be downloaded here.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from helpers.batches import model_inputs
from helpers.official import (
    GRID,
    HIDDEN,
    LAYERS,
    PATCH,
    TEXT_LEN,
    VARIANTS,
    VOCAB,
    VQA_ANSWERS,
    random_official_state,
    write_lightning_ckpt,
)
from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.weights.checkpoint_io import load_checkpoint
from vilt_lab.weights.official import from_official, read_official, to_official
from vilt_lab.weights.with_heads import ViltWithHeads


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
    sizes = [[(4, 4), (3, 2)], [(2, 3), (4, 1)]][:num_images]  # in patches, per image slot
    return model_inputs(
        [TEXT_LEN, 7],
        [[(h * PATCH, w * PATCH) for h, w in per_text] for per_text in sizes],
        vocab=VOCAB,
        seed=seed,
        first_id=1,
        padded_pixels="zero",
        images_first=True,
    )


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
