"""`model.init_from=original:<name>`: release files by name, SHA-256 checked, never run, cached.

No network: the registry's entry is pointed at a random timm test ViT saved as the release file
is (a plain `torch.save` state dict with its classifier), through a `file://` URL, and torch
hub's cache at a temporary directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import timm
import torch

from helpers.configs import compose_config, train_settings
from helpers.models import small_vit_config
from vilt_lab.build.task import build_task
from vilt_lab.model import ViltBackbone
from vilt_lab.weights import original_vit as ov
from vilt_lab.weights.checkpoint_io import UnsafeCheckpointError
from vilt_lab.weights.init_from import init_model

NAME = "vit_base_patch32_384"
OFFICIAL = f"original:{NAME}"


def save_release_file(directory, seed: int = 0):
    """(path, state) of a random timm `test_vit` saved like a timm 0.3 release file."""
    torch.manual_seed(seed)
    model = timm.create_model("test_vit", pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = directory / f"jx_test_vit-{seed}.pth"
    torch.save(state, path)
    return path, state


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def release(tmp_path, monkeypatch):
    """(path, state) of the release file the registry's `vit_base_patch32_384` now names, with its
    full digest; torch hub's cache in `tmp_path / "hub"`."""
    path, state = save_release_file(tmp_path)
    entry = ov.OriginalWeights(path.as_uri(), sha256(path), "test_vit")
    monkeypatch.setitem(ov.ORIGINAL_WEIGHTS, NAME, entry)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return path, state


def backbone() -> ViltBackbone:
    return ViltBackbone(small_vit_config(160))


def assert_loaded(model: ViltBackbone, state) -> None:
    ours = model.state_dict()
    for key, value in state.items():
        if not key.startswith("head."):
            assert torch.equal(ours[key], value), key


def test_the_registry_names_the_official_release_file() -> None:
    weights = ov.ORIGINAL_WEIGHTS[NAME]
    assert weights.url == (
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
        "jx_vit_base_p32_384-830016f5.pth"
    )
    assert weights.filename == f"jx_vit_base_p32_384-{weights.sha256}.pth"  # the published prefix
    assert weights.architecture == NAME
    with pytest.raises(ValueError, match=r"original:vit_base_patch16_224: unknown name; known: \['vit_base"):
        ov.original_weights("vit_base_patch16_224")


def test_loads_by_name_from_a_local_file(release) -> None:
    path, state = release
    model = backbone()
    report = init_model(model, {}, OFFICIAL, str(path))
    assert_loaded(model, state)
    assert report.source == f"original {NAME} ({path})"
    assert len(report.loaded) == 78 and report.unused == []  # the classifier is dropped
    assert not (ov.cache_dir() / path.name).exists()  # a local file is not copied into the cache


def test_downloads_once_into_the_cache(release) -> None:
    path, state = release
    init_model(backbone(), {}, OFFICIAL)
    cached = ov.cache_dir() / path.name
    assert cached.is_file() and sha256(cached) == sha256(path)
    path.unlink()  # the release is gone: the cached copy serves
    model = backbone()
    init_model(model, {}, OFFICIAL)
    assert_loaded(model, state)
    cached.write_bytes(cached.read_bytes()[:-1])  # damaged in the cache: checked on every use
    with pytest.raises(ValueError, match=rf"{cached}: SHA-256 {sha256(cached)} does not match"):
        init_model(backbone(), {}, OFFICIAL)


def test_a_wrong_file_names_itself_and_both_hashes(release, tmp_path, monkeypatch) -> None:
    wrong, _ = save_release_file(tmp_path, seed=1)
    expected = ov.ORIGINAL_WEIGHTS[NAME].sha256
    with pytest.raises(ValueError) as refused:
        init_model(backbone(), {}, OFFICIAL, str(wrong))
    message = str(refused.value)
    assert str(wrong) in message and sha256(wrong) in message and expected in message
    # A published prefix only, as for the real file: the same check on its digits.
    prefix = sha256(release[0])[:8]
    monkeypatch.setitem(
        ov.ORIGINAL_WEIGHTS, NAME, ov.OriginalWeights(release[0].as_uri(), prefix, "test_vit")
    )
    with pytest.raises(ValueError, match=rf"{sha256(wrong)} does not match {prefix} \(a prefix"):
        init_model(backbone(), {}, OFFICIAL, str(wrong))
    init_model(backbone(), {}, OFFICIAL, str(release[0]))


class MarkerOnLoad:
    """Unpickling this touches `path`: proof that a file's code ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_a_file_that_would_run_code_is_refused(release, tmp_path, monkeypatch) -> None:
    marker = tmp_path / "ran"
    crafted = tmp_path / "crafted.pth"
    torch.save({"blocks.0.norm1.weight": torch.ones(64), "run": MarkerOnLoad(marker)}, crafted)
    monkeypatch.setitem(
        ov.ORIGINAL_WEIGHTS, NAME, ov.OriginalWeights(crafted.as_uri(), sha256(crafted), "test_vit")
    )
    with pytest.raises(UnsafeCheckpointError):
        init_model(backbone(), {}, OFFICIAL, str(crafted))
    assert not marker.exists()


def test_build_task_starts_from_the_original_weights(release, shapes_tokenizer, capsys) -> None:
    path, state = release
    cfg = compose_config(
        [
            "model=tiny",
            "+model.num_layers=6",
            "+model.mlp_ratio=3.0",
            "+model.image_size=160",
            f"model.init_from={OFFICIAL}",
            f"model.init_file={path}",
            "objective=[itm,mlm]",
        ]
    )
    task = build_task(train_settings(cfg), vocab_size=shapes_tokenizer.vocab_size)
    assert torch.equal(task.backbone.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    assert f"init from original {NAME} ({path}): 78 tensors loaded" in capsys.readouterr().out
