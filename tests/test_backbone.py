"""Backbone behaviour: patch sampling, position tables, parameter counts, options."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers.batches import model_inputs
from vilt_lab.measure.param_count import count_parameters
from vilt_lab.model import ViltBackbone, create_backbone, get_config
from vilt_lab.model.embeddings import interpolate_pos_embed, patch_validity, select_patches


def grid_mask(sizes, grid):
    """(B, Hp, Wp) valid-patch masks for images covering the top-left h x w patches."""
    mask = torch.zeros(len(sizes), *grid, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        mask[i, :h, :w] = True
    return mask


@pytest.mark.parametrize("max_len", [1, 7, 20, 35, 100])
def test_sampling_keeps_min_of_limit_and_valid(max_len):
    sizes = [(5, 7), (3, 4), (2, 2), (6, 6)]
    valid = grid_mask(sizes, (6, 8))
    sel = select_patches(valid, max_len, torch.Generator().manual_seed(0))
    counts = [h * w for h, w in sizes]
    L = min(max_len, max(counts))
    assert sel.index.shape == (4, L)
    flat = valid.flatten(1)
    for i, n in enumerate(counts):
        idx = sel.index[i]
        assert len(set(idx.tolist())) == L, "patches are drawn without replacement"
        kept = idx[sel.valid[i]]
        assert len(kept) == min(L, n)
        assert flat[i, kept].all(), "every kept patch is a valid patch"
        assert not flat[i, idx[~sel.valid[i]]].any(), "fill positions are padding and masked"


def test_sampling_is_uniform_over_valid_patches():
    valid = grid_mask([(4, 5)], (4, 5))
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(20)
    for _ in range(2000):
        hits[select_patches(valid, 5, g).index[0]] += 1
    # Each patch is kept with probability 5/20: 500 expected, std ~19.
    assert (hits - 500).abs().max() < 100


def test_all_patches_is_deterministic_raster_order():
    valid = grid_mask([(3, 4), (2, 2)], (3, 4))
    sel = select_patches(valid, -1)
    assert sel.index[0].tolist() == list(range(12))
    assert sel.index[1, :4].tolist() == [0, 1, 4, 5]
    assert sel.valid.sum(1).tolist() == [12, 4]
    # A limit at or above the largest count samples nothing either.
    assert torch.equal(select_patches(valid, 12).index, sel.index)


def test_seeded_sampling_is_reproducible():
    valid = grid_mask([(6, 6), (4, 5)], (6, 6))
    a = select_patches(valid, 10, torch.Generator().manual_seed(3)).index
    b = select_patches(valid, 10, torch.Generator().manual_seed(3)).index
    c = select_patches(valid, 10, torch.Generator().manual_seed(4)).index
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_full_grid_gets_exactly_the_table():
    G, D = 12, 8
    table = torch.randn(G * G, D)
    sel = select_patches(grid_mask([(12, 12)], (12, 12)), -1)
    assert torch.equal(interpolate_pos_embed(table, sel)[0], table)


def test_other_grids_match_bilinear_align_corners():
    # float64, so that the two ways of computing the source coordinate round alike.
    G, D = 12, 8
    table = torch.randn(G * G, D, dtype=torch.float64)
    sizes = [(7, 12), (12, 19), (1, 5), (3, 1)]
    Hp, Wp = 12, 19
    sel = select_patches(grid_mask(sizes, (Hp, Wp)), -1)
    pos = interpolate_pos_embed(table, sel)
    spatial = table.T.reshape(1, D, G, G)
    for i, (h, w) in enumerate(sizes):
        ref = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True)
        ref = F.pad(ref, (0, Wp - w, 0, Hp - h))[0].flatten(1).T  # (Hp*Wp, D)
        torch.testing.assert_close(pos[i], ref[sel.index[i]], atol=1e-12, rtol=1e-12)


def test_a_bf16_table_interpolates_to_bf16_rounding_of_the_exact_result():
    """A pure-bf16 model (weights cast, no autocast): coordinates like 10.98 must not round to 11.

    The exact result is fp64 bilinear interpolation of the same bf16 table; ours may differ from
    it by the one rounding to bf16 (half a bf16 ulp) and a little fp32 arithmetic, not by rows
    taken from the wrong corner."""
    G, D = 12, 16
    table = torch.randn(G * G, D).to(torch.bfloat16)
    sizes = [(11, 19), (12, 17), (5, 12)]
    Hp, Wp = 12, 19
    sel = select_patches(grid_mask(sizes, (Hp, Wp)), -1)
    pos = interpolate_pos_embed(table, sel)
    assert pos.dtype == torch.bfloat16
    spatial = table.double().T.reshape(1, D, G, G)
    for i, (h, w) in enumerate(sizes):
        ref = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True)
        ref = F.pad(ref, (0, Wp - w, 0, Hp - h))[0].flatten(1).T[sel.index[i]]
        rounding = (ref.to(torch.bfloat16).double() - ref).abs()
        # Within one bf16 ulp of the exact value (the rounding is at most half of one).
        assert ((pos[i].double() - ref).abs() <= 2 * rounding.max() + 1e-6).all(), (h, w)


def test_patch_validity_from_pixel_mask():
    pm = torch.zeros(2, 64, 96)
    pm[0, :64, :96] = 1
    pm[1, :32, :48] = 1
    v = patch_validity(pm, (4, 6))
    assert v[0].all() and v[1, :2, :3].all() and v[1].sum() == 6


def batch():
    return model_inputs([40, 10], [[(64, 96), (32, 96)]], vocab=1000, pixels="normal")


def test_forward_shapes_and_seeded_determinism():
    model = create_backbone("tiny").eval()
    ids, am, pix, pm = batch()
    out = model(ids, am, pix, pm, max_image_len=10, generator=torch.Generator().manual_seed(0))
    assert out.text_feats.shape == (2, 40, 64) and out.image_feats.shape == (2, 11, 64)
    assert out.pooled.shape == (2, 64) and out.text_mask.dtype == torch.bool
    again = model(ids, am, pix, pm, max_image_len=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.image_feats, again.image_feats)


def test_padding_does_not_leak_into_valid_outputs():
    """Changing padded pixels or padded tokens leaves valid outputs unchanged."""
    model = create_backbone("tiny").eval()
    ids, am, pix, pm = batch()
    ref = model(ids, am, pix, pm)
    pix2, ids2 = pix.clone(), ids.clone()
    pix2[1, :, 32:] = 7.0
    ids2[1, 10:] = 3
    out = model(ids2, am, pix2, pm)
    torch.testing.assert_close(out.pooled, ref.pooled)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = create_backbone("tiny", drop_rate=0.0)
    ids, am, pix, pm = batch()
    model(ids, am, pix, pm).pooled.sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(ids, am, pix, pm).pooled.sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


def test_third_modality_type_for_nlvr2():
    model = create_backbone("tiny", num_modality_types=3).eval()
    ids, am, pix, pm = batch()
    assert not torch.equal(
        model(ids, am, pix, pm, image_token_type_idx=2).pooled, model(ids, am, pix, pm).pooled
    )
    with pytest.raises(ValueError, match="num_modality_types"):
        create_backbone("tiny")(ids, am, pix, pm, image_token_type_idx=2)


def test_timm_vit_names():
    names = {n for n, _ in ViltBackbone(get_config("tiny")).named_parameters()}
    for n in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.1.attn.qkv.bias",
        "blocks.0.mlp.fc2.weight",
        "norm.weight",
    ]:
        assert n in names


def test_bad_config_names_the_key():
    with pytest.raises(ValueError, match="num_heads"):
        get_config("tiny", num_heads=3)
    with pytest.raises(KeyError, match="hiden_size"):
        type(get_config("tiny")).from_dict({"hiden_size": 3})
    with pytest.raises(KeyError, match="base32"):
        get_config("huge")


def test_base32_counts_match_the_paper():
    counts = count_parameters(ViltBackbone(get_config("base32")))
    # Table 6: 87.4M (our exact architecture count: 87.53M with the 145-entry table);
    # footnote 9: text embedder 23.47M; full backbone 111.6M.
    assert counts["transformer + visual embedder"] == 87_528_192
    assert round(counts["text embedder"] / 1e6, 2) == 23.47
    assert round(counts["backbone"] / 1e6, 1) == 111.6


def test_param_count_command_prints_table6():
    out = subprocess.run(
        [sys.executable, "-m", "vilt_lab.measure.param_count", "base32"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "87.53M" in out and "23.47M" in out and "111.60M" in out
