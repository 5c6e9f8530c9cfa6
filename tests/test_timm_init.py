"""`model.init_from=timm:<name>` with a local weights file: a random timm ViT saved by the test."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from helpers.configs import compose_config, train_settings
from helpers.models import small_vit_config
from vilt_lab.build.task import build_task
from vilt_lab.model import ITMHead, MLMHead, ViltBackbone, ViltConfig
from vilt_lab.weights.init_from import init_model

# timm's small test ViT: 64 wide, 6 blocks of 2 heads, MLP 192, 10x10 patches of 16 (160 px).
TIMM_NAME = "test_vit"
# The names the paper leaves freshly initialised (reference Sec. 1.2, 1.6, 1.8).
EXPECTED_NEW = [
    "backbone.text_embeddings.word_embeddings.weight",
    "backbone.text_embeddings.position_embeddings.weight",
    "backbone.text_embeddings.token_type_embeddings.weight",
    "backbone.text_embeddings.LayerNorm.weight",
    "backbone.text_embeddings.LayerNorm.bias",
    "backbone.token_type_embeddings.weight",
    "backbone.pooler.dense.weight",
    "backbone.pooler.dense.bias",
    "heads.itm.fc.weight",
    "heads.itm.fc.bias",
    "heads.mlm.transform.dense.weight",
    "heads.mlm.transform.dense.bias",
    "heads.mlm.transform.LayerNorm.weight",
    "heads.mlm.transform.LayerNorm.bias",
    "heads.mlm.decoder.weight",
    "heads.mlm.bias",
]


def save_random_timm(name: str, directory):
    """(path, state) of a random timm ViT saved with its classifier, as a downloaded one would be."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():  # LayerNorms start at 1/0 and the [CLS] at 0: randomise everything
        for p in model.parameters():
            p.normal_(0, 0.1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = directory / f"{name}.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    return save_random_timm(TIMM_NAME, tmp_path_factory.mktemp("timm"))


def init(image_size: int, timm_file):
    backbone = ViltBackbone(small_vit_config(image_size))
    heads = {"itm": ITMHead(64), "mlm": MLMHead(64, 50)}
    report = init_model(backbone, heads, f"timm:{TIMM_NAME}", str(timm_file[0]))
    return backbone, report


def test_same_grid_copies_every_vit_tensor(timm_file):
    backbone, report = init(160, timm_file)
    source = timm_file[1]
    ours = backbone.state_dict()
    mapped = [k for k in source if not k.startswith("head.")]
    assert len(mapped) == 4 + 6 * 12 + 2  # cls, pos, patch w/b; 12 per block; final norm
    for key in mapped:
        assert torch.equal(ours[key], source[key]), key
    assert sorted(report.loaded) == sorted("backbone." + k for k in mapped)
    assert sorted(report.new) == sorted(EXPECTED_NEW)
    assert report.adapted == {} and report.unused == []


def test_other_grid_resizes_the_position_table_bilinearly(timm_file):
    backbone, report = init(128, timm_file)
    pos = timm_file[1]["pos_embed"]
    grid = pos[:, 1:].reshape(1, 10, 10, 64).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=True)
    expected = torch.cat([pos[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 64, 64)], dim=1)
    torch.testing.assert_close(backbone.pos_embed.data, expected, atol=1e-6, rtol=0)
    assert torch.equal(backbone.pos_embed.data[:, 0], pos[:, 0])  # the [CLS] position
    assert report.adapted == {"backbone.pos_embed": "position table resized from 10x10 to 8x8"}
    assert sorted(report.new) == sorted(EXPECTED_NEW)
    assert torch.equal(backbone.blocks[5].attn.qkv.weight, timm_file[1]["blocks.5.attn.qkv.weight"])


def test_a_model_that_does_not_fit_names_the_config_keys(timm_file):
    backbone = ViltBackbone(
        ViltConfig(hidden_size=32, num_layers=2, num_heads=2, patch_size=16, image_size=64)
    )
    with pytest.raises(
        ValueError, match=r"model\.hidden_size: timm 64, config 32.*model\.num_layers: timm 6"
    ):
        init_model(backbone, {}, f"timm:{TIMM_NAME}", str(timm_file[0]))
    with pytest.raises(FileNotFoundError, match="model.init_file"):
        init_model(backbone, {}, f"timm:{TIMM_NAME}", "/nonexistent/vit.pth")
    with pytest.raises(ValueError, match="init_from is null"):
        init_model(backbone, {}, None, str(timm_file[0]))


def test_a_vit_with_extra_weights_is_refused(tmp_path):
    """timm's test_vit2 has layer scale (`ls1.gamma`): vilt_lab's blocks have no place for it."""
    path, _ = save_random_timm("test_vit2", tmp_path)
    with pytest.raises(ValueError, match=r"no place for.*ls1\.gamma"):
        init_model(ViltBackbone(small_vit_config(160, num_layers=8)), {}, "timm:test_vit2", str(path))


def test_build_task_applies_init_from(timm_file, shapes_tokenizer, capsys):
    """Through the Hydra config, as a run would: `model.init_from=timm:... model.init_file=...`."""
    cfg = compose_config(
        [
            "model=tiny",
            "+model.num_layers=6",
            "+model.mlp_ratio=3.0",
            "+model.image_size=160",
            f"model.init_from=timm:{TIMM_NAME}",
            f"model.init_file={timm_file[0]}",
            "objective=[itm,mlm]",
        ]
    )
    task = build_task(train_settings(cfg), vocab_size=shapes_tokenizer.vocab_size)
    assert torch.equal(task.backbone.blocks[0].mlp.fc1.weight, timm_file[1]["blocks.0.mlp.fc1.weight"])
    out = capsys.readouterr().out
    assert f"init from timm {TIMM_NAME}" in out and "78 tensors loaded" in out
    assert "new heads.itm.fc.weight" in out
