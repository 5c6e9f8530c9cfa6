"""save_pretrained / from_pretrained / push_to_hub carry the backbone and every head,
offline: a local directory, and the Hub calls against a stand-in."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers.batches import model_inputs
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.model.heads import build_head
from vilt_lab.weights.hub import CARD_NAME
from vilt_lab.weights.with_heads import ViltWithHeads

HEADS = {
    "itm": {},
    "mlm": {},
    "mpp": {"bins": 8},
    "vqa": {"num_labels": 5},
    "nlvr2": {"num_labels": 2},
    "irtr": {},
}


def all_heads_model() -> ViltWithHeads:
    torch.manual_seed(0)
    config = get_config("tiny", vocab_size=50, num_modality_types=3)  # NLVR2: a second image type
    heads = {name: build_head(name, config, **sizes) for name, sizes in HEADS.items()}
    specs = {name: dict(sizes) for name, sizes in HEADS.items()}
    specs["vqa"]["labels"] = ["yes", "no", "2", "red", "circle"]
    return ViltWithHeads(ViltBackbone(config), heads, specs).eval()


def batch(num_images: int = 1):
    return model_inputs([7, 7], [[(64, 96)] * 2] * num_images, vocab=50, seed=1, pixels="normal")


def test_round_trip_reproduces_every_head_exactly(tmp_path):
    model = all_heads_model()
    directory = model.save_pretrained(tmp_path / "hub")
    assert {p.name for p in directory.iterdir()} >= {"config.json", "model.safetensors", CARD_NAME}
    loaded = ViltWithHeads.from_pretrained(directory).eval()
    assert loaded.head_specs == model.head_specs  # VQA's answers included
    with torch.no_grad():
        for head in HEADS:
            inputs = batch(2 if head == "nlvr2" else 1)
            assert torch.equal(loaded(head, *inputs), model(head, *inputs)), head
    card = (directory / CARD_NAME).read_text()
    assert "library_name: vilt_lab" in card and "`itm`" in card and "5 label names" in card


def test_push_to_hub_uploads_the_checkpoint_and_card(tmp_path, monkeypatch):
    uploaded = {}

    class StandInApi:
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private, exist_ok):
            uploaded["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["card"] = (Path(folder_path) / CARD_NAME).read_text()
            return f"https://huggingface.co/{repo_id}/commit/abc"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", StandInApi)
    url = all_heads_model().push_to_hub("someone/vilt-tiny", private=True, token="t")
    assert url.endswith("/commit/abc") and uploaded["repo"] == ("someone/vilt-tiny", True, True)
    assert uploaded["files"] == sorted(["config.json", "model.safetensors", CARD_NAME])
    assert 'from_pretrained("someone/vilt-tiny")' in uploaded["card"]


def test_from_pretrained_downloads_a_repo_id_through_the_hub(tmp_path, monkeypatch):
    model = all_heads_model()
    model.save_pretrained(tmp_path / "snapshot")
    asked = {}

    def snapshot_download(repo_id, revision, cache_dir, allow_patterns):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(tmp_path / "snapshot")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = ViltWithHeads.from_pretrained("someone/vilt-tiny", revision="v1")
    assert asked["repo_id"] == "someone/vilt-tiny" and asked["revision"] == "v1"
    assert set(asked["allow_patterns"]) == {"config.json", "model.safetensors", CARD_NAME}
    assert sorted(loaded.heads) == sorted(HEADS)
