"""The backbone against HF transformers' ViltModel, a reference we did not write."""

import pytest
import torch
from transformers import ViltConfig as HFViltConfig
from transformers import ViltModel

from helpers.batches import model_inputs
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.weights.hf import config_to_hf, from_hf, hf_to_state_dict, state_dict_to_hf, to_hf

HF_SIZES = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        patch_size=16,
        image_size=128,
        vocab_size=1000,
    ),
    "base32": dict(),  # HF's defaults are ViLT-B/32
}


def padded_batch(patch: int, vocab: int, seed: int = 0):
    """Three images of different sizes (multiples of the patch) and texts with padding."""
    sizes = [(6 * patch, 10 * patch), (4 * patch, 7 * patch), (5 * patch, 3 * patch)]
    return model_inputs(
        [40, 17, 9],
        [sizes],
        vocab=vocab,
        seed=seed,
        padded_pixels="zero",
        padded_ids="zero",
        images_first=True,
    )


def random_hf(size: str, seed: int = 0) -> ViltModel:
    torch.manual_seed(seed)
    model = ViltModel(HFViltConfig(max_image_length=-1, **HF_SIZES[size])).eval()
    # HF initialises LayerNorms to 1/0 and some tables to zero; randomise everything so that a
    # swapped or dropped tensor cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def assert_same_outputs(ours: ViltBackbone, hf: ViltModel, patch: int, vocab: int, tol: float = 1e-5):
    ids, am, pix, pm = padded_batch(patch, vocab)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=am, pixel_values=pix, pixel_mask=pm)
        out = ours(ids, am, pix, pm, max_image_len=-1)
    # Pooled and text features do not depend on patch order (HF permutes the largest image's
    # patches, ours keeps raster order), so they are compared directly.
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=tol, rtol=tol)
    valid = am.bool()
    torch.testing.assert_close(
        out.text_feats[valid], ref.last_hidden_state[:, :40][valid], atol=tol, rtol=tol
    )
    # Every valid patch is kept: image [CLS] + 6x10, 4x7 and 5x3 grids.
    assert out.image_mask.sum(1).tolist() == [61, 29, 16]


@pytest.mark.parametrize("size", ["tiny", "base32"])
def test_from_hf_matches_hf(size):
    hf = random_hf(size)
    ours = from_hf(hf).eval()
    assert_same_outputs(ours, hf, hf.config.patch_size, hf.config.vocab_size)


@pytest.mark.parametrize("size", ["tiny", "base32"])
def test_to_hf_matches_ours(size):
    hf = random_hf(size, seed=1)
    ours = from_hf(hf).eval()
    back = to_hf(ours).eval()
    assert_same_outputs(ours, back, hf.config.patch_size, hf.config.vocab_size)
    for key, value in hf.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def test_state_dict_round_trip_is_exact():
    ours = ViltBackbone(get_config("tiny"))
    state = ours.state_dict()
    back = hf_to_state_dict(state_dict_to_hf(state, prefix="vilt."), prefix="vilt.")
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(state[key], back[key]), key


def test_native_model_exports_to_hf():
    """A model built here (blocks eps 1e-6, text eps 1e-12) exports with HF's single eps."""
    torch.manual_seed(0)
    ours = ViltBackbone(get_config("tiny")).eval()
    hf = to_hf(ours)
    assert hf.config.layer_norm_eps == 1e-6
    assert config_to_hf(ours.config).max_image_length == -1
    # HF's one eps (1e-6) also lands on the text LayerNorm, which had 1e-12: a bounded difference.
    assert_same_outputs(ours, hf, 16, 1000, tol=5e-4)


def test_unknown_hf_key_is_named():
    with pytest.raises(KeyError, match="mystery"):
        hf_to_state_dict({"mystery.weight": torch.zeros(1)})
