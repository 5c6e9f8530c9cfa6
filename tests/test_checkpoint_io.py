"""vilt_lab's checkpoint directory (safetensors + JSON) and the refusal of code-running pickles."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from helpers.configs import compose_config, train_settings
from vilt_lab.build.task import build_task, model_config
from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.model.heads import ITMHead, VQAHead, build_head
from vilt_lab.weights.checkpoint_io import (
    UnsafeCheckpointError,
    ViltCheckpoint,
    load_checkpoint,
    safe_torch_load,
    save_checkpoint,
)
from vilt_lab.weights.init_from import init_model
from vilt_lab.weights.official import read_official
from vilt_lab.weights.with_heads import ViltWithHeads

HEADS = {"itm": {}, "vqa": {"num_labels": 4, "labels": ["a", "b", "c", "d"]}}


def tiny_model() -> ViltWithHeads:
    torch.manual_seed(0)
    cfg = get_config("tiny")
    heads = {
        name: build_head(name, cfg, num_labels=4) if name == "vqa" else build_head(name, cfg)
        for name in HEADS
    }
    return ViltWithHeads(ViltBackbone(cfg), heads, HEADS)


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    save_checkpoint(model.to_checkpoint(), tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]  # no temp files left
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["format"] == "vilt_lab" and meta["model"]["hidden_size"] == 64
    assert meta["heads"]["vqa"] == {"num_labels": 4, "labels": ["a", "b", "c", "d"]}
    keys = load_file(tmp_path / "ckpt" / "model.safetensors").keys()
    assert "backbone.blocks.0.attn.qkv.weight" in keys and "heads.vqa.fc2.weight" in keys
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.backbone.config and loaded.heads == HEADS
    rebuilt = ViltWithHeads.from_checkpoint(loaded)
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_loading_names_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)
    save_checkpoint(tiny_model().to_checkpoint(), tmp_path / "ckpt")
    config = tmp_path / "ckpt" / "config.json"
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, "model": {**meta["model"], "hiden_size": 3}}))
    with pytest.raises(KeyError, match="hiden_size"):
        load_checkpoint(tmp_path / "ckpt")
    config.write_text(json.dumps({**meta, "format": "transformers"}))
    with pytest.raises(ValueError, match="from-hf"):
        load_checkpoint(tmp_path / "ckpt")


def test_checkpoint_rejects_unlisted_heads_and_stray_keys():
    state = tiny_model().to_checkpoint().state
    with pytest.raises(KeyError, match="'vqa'"):
        ViltCheckpoint(get_config("tiny"), heads={"itm": {}}, state=state)
    with pytest.raises(KeyError, match="must start with"):
        ViltCheckpoint(get_config("tiny"), heads=HEADS, state={**state, "mystery": torch.zeros(1)})


class RunsCode:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """Control: plain unpickling of `RunsCode` does run its command, so its absence below means
    that the safe loader refused it."""
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle", "inside state_dict"])
def test_code_running_pickle_is_refused(tmp_path, how, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    if how == "torch.save":
        torch.save({"state_dict": {}, "hyper_parameters": RunsCode(marker)}, path)
    elif how == "pickle":  # a legacy, non-zip file
        path.write_bytes(pickle.dumps({"state_dict": RunsCode(marker)}, protocol=2))
    else:
        torch.save({"state_dict": {"pooler.dense.weight": RunsCode(marker)}}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load") as err:
        read_official(path)
    if how != "pickle":
        assert "system" in str(err.value)  # the refused global is named
    assert vilt_convert(["official", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "nothing in the file was run" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_plain_state_dict_loads_safely(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ok.ckpt")
    assert torch.equal(safe_torch_load(tmp_path / "ok.ckpt")["state_dict"]["w"], torch.ones(2))


def test_init_from_a_checkpoint_dir_loads_everything(tmp_path):
    model = tiny_model()
    save_checkpoint(model.to_checkpoint(), tmp_path / "ckpt")
    fresh = {"itm": ITMHead(64), "vqa": VQAHead(64, 4)}
    backbone = ViltBackbone(get_config("tiny"))
    report = init_model(backbone, fresh, str(tmp_path / "ckpt"))
    assert report.new == [] and report.adapted == {} and report.unused == []
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key
    assert torch.equal(fresh["vqa"].fc2.weight, model.heads["vqa"].fc2.weight)


def test_fine_tuning_adaptations_follow_the_official_code(tmp_path):
    """NLVR2's third modality row starts as the image row; retrieval starts from ITM's match row."""
    model = tiny_model()
    save_checkpoint(model.to_checkpoint(), tmp_path / "ckpt")
    backbone = ViltBackbone(get_config("tiny", num_modality_types=3))
    heads = {"nlvr2": build_head("nlvr2", backbone.config), "irtr": build_head("irtr", backbone.config)}
    report = init_model(backbone, heads, str(tmp_path / "ckpt"))
    types = backbone.token_type_embeddings.weight
    source = model.backbone.token_type_embeddings.weight
    assert torch.equal(types[:2], source) and torch.equal(types[2], source[1])
    itm = model.heads["itm"].fc
    assert (
        torch.equal(heads["irtr"].fc.weight[0], itm.weight[1])
        and heads["irtr"].fc.bias.item() == itm.bias[1].item()
    )
    assert set(report.adapted) == {
        "backbone.token_type_embeddings.weight",
        "heads.irtr.fc.weight",
        "heads.irtr.fc.bias",
    }
    assert all(name.startswith("heads.nlvr2.") for name in report.new)
    assert report.unused == sorted(
        k for k in model.state_dict() if k.startswith(("heads.itm.", "heads.vqa."))
    )


def test_init_from_names_what_does_not_fit(tmp_path):
    save_checkpoint(tiny_model().to_checkpoint(), tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"vocabulary of 1000 tokens, the model has 500 \(data.tokenizer"):
        init_model(ViltBackbone(get_config("tiny", vocab_size=500)), {}, str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="model.num_heads=4"):
        init_model(ViltBackbone(get_config("tiny", num_heads=4)), {}, str(tmp_path / "ckpt"))
    torch.save({"state_dict": {}}, tmp_path / "vilt.ckpt")
    with pytest.raises(FileNotFoundError, match="vilt-convert official"):
        init_model(ViltBackbone(get_config("tiny")), {}, str(tmp_path / "vilt.ckpt"))


def test_build_task_starts_from_a_checkpoint_dir(tmp_path, shapes_tokenizer, capsys):
    cfg = train_settings(
        compose_config(["model=tiny", f"model.init_from={tmp_path / 'ckpt'}", "objective=[itm,mlm]"])
    )
    config = model_config(cfg, shapes_tokenizer.vocab_size)
    heads = {"itm": build_head("itm", config), "mlm": build_head("mlm", config)}
    source = ViltWithHeads(ViltBackbone(config), heads, {"itm": {}, "mlm": {}})
    save_checkpoint(source.to_checkpoint(), tmp_path / "ckpt")
    task = build_task(cfg, vocab_size=shapes_tokenizer.vocab_size)
    assert torch.equal(task.objectives["mlm"].head.decoder.weight, heads["mlm"].decoder.weight)
    assert torch.equal(task.backbone.pooler.dense.weight, source.backbone.pooler.dense.weight)
    assert "0 left new" in capsys.readouterr().out
