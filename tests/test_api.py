"""`vilt_lab.create_model_and_transforms`, `ViltWithHeads.from_pretrained` and `vilt-convert run`
exports: a run dir, its checkpoints and its export load with their own tokenizer and resize, and
predict what `vilt-predict` predicts; a released name that cannot be downloaded says what to do
instead."""

from __future__ import annotations

import json
import os
import pydoc
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import vilt_lab
import vilt_lab.convert_cli
from helpers.configs import fast_config
from helpers.run_dirs import record_best
from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.data.shards import iter_samples
from vilt_lab.data.transforms import PAPER_LONGER
from vilt_lab.predict import main as vilt_predict
from vilt_lab.train import run
from vilt_lab.training.run_dir import RunDir
from vilt_lab.weights.checkpoint_io import CONFIG_NAME, INPUTS_KEY, load_checkpoint
from vilt_lab.weights.released import RELEASED

# The shapes world's resize (conf/data/shapes.yaml), not the paper's default.
SHAPES_SHORTER, SHAPES_LONGER = 96, 160


@pytest.fixture(scope="module")
def finished_run(shapes_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a few-steps pre-training run on the session's shapes world."""
    summary = run(fast_config(shapes_world, tmp_path_factory.mktemp("runs"), "logger.mode=disabled"))
    return Path(summary["run_dir"])


@pytest.fixture(scope="module")
def export(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`vilt-convert run` of the run dir: its last checkpoint (pre-training selects none)."""
    out = tmp_path_factory.mktemp("export") / "demo"
    assert vilt_convert(["run", str(finished_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def scene(shapes_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A held-out scene of the shapes world as a JPEG file, with one of its captions."""
    _, images, meta = next(iter_samples(shapes_world / "pretrain" / "val"))
    path = tmp_path_factory.mktemp("scene") / "scene.jpg"
    path.write_bytes(images[0])
    return path, meta["captions"][0]


def itm_probability(checkpoint: Path, image, caption: str) -> float:
    """The match probability of `caption` for `image` through the Python API alone."""
    model, preprocess, tokenizer = vilt_lab.create_model_and_transforms(checkpoint)
    max_len = model.backbone.config.max_text_len  # as the module docstring of vilt_lab.api shows
    text = tokenizer([caption], truncation=True, max_length=max_len, return_tensors="pt")
    with torch.no_grad():
        logits = model("itm", text["input_ids"], text["attention_mask"], **preprocess(image))
    return logits.softmax(-1)[0, 1].item()


def predicted_itm(capsys, checkpoint: Path, image: Path, caption: str) -> float:
    """vilt-predict's match probability, with no flag but the inputs."""
    assert vilt_predict([str(checkpoint), "--image", str(image), "--text", caption, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["predictions"][0]["match_probability"]


def predicted_itm_offline(checkpoint: Path, image: Path, caption: str) -> float:
    """`vilt-predict`'s match probability in a process of its own that may not use the network."""
    command = [sys.executable, "-m", "vilt_lab.predict", str(checkpoint), "--image", str(image)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, "--text", caption, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["predictions"][0]["match_probability"]


def test_import_is_cheap_and_exports_the_api():
    code = "import sys, vilt_lab; assert 'torch' not in sys.modules, 'import vilt_lab imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(vilt_lab.__all__) <= set(dir(vilt_lab))
    shown = pydoc.render_doc(vilt_lab, renderer=pydoc.plaintext)  # what help(vilt_lab) shows
    for name in vilt_lab.__all__:
        assert re.search(rf"^ +(class )?{name}\(", shown, re.MULTILINE), f"help(vilt_lab) leaves out {name}"
    assert vilt_lab.ViltWithHeads.__module__ == "vilt_lab.weights.with_heads"
    assert vilt_lab.list_pretrained() == list(RELEASED)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        vilt_lab.nothing  # noqa: B018


def test_a_run_dir_loads_with_its_tokenizer_and_resize(finished_run: Path, shapes_tokenizer, scene):
    model, preprocess, tokenizer = vilt_lab.create_model_and_transforms(finished_run)
    assert not model.training and {"itm", "mlm"} <= set(model.heads)
    assert tokenizer.get_vocab() == shapes_tokenizer.get_vocab()
    pixels = preprocess(scene[0])
    assert pixels["pixel_values"].dtype == torch.float32 and pixels["pixel_mask"].dtype == torch.bool
    assert min(pixels["pixel_values"].shape[-2:]) <= SHAPES_SHORTER  # the run's resize, not 384
    assert len(tokenizer) == model.backbone.config.vocab_size


@pytest.mark.parametrize("which", ["run dir", "export"])
def test_the_api_predicts_what_vilt_predict_predicts(which, finished_run, export, scene, capsys):
    checkpoint = finished_run if which == "run dir" else export
    image, caption = scene
    expected = predicted_itm(capsys, checkpoint, image, caption)
    assert itm_probability(checkpoint, image, caption) == pytest.approx(expected, abs=1e-5)
    with Image.open(image) as pil:  # a PIL image is prepared as its file is
        assert itm_probability(checkpoint, pil, caption) == pytest.approx(expected, abs=1e-5)


def test_an_export_carries_its_tokenizer_and_resize(finished_run, export, scene, capsys):
    inputs = json.loads((export / CONFIG_NAME).read_text())[INPUTS_KEY]
    assert inputs == {"tokenizer": "tokenizer", "shorter": SHAPES_SHORTER, "longer": SHAPES_LONGER}
    assert (export / "tokenizer" / "tokenizer.json").is_file()
    image, caption = scene
    # The export is the run's last checkpoint: both answer alike with no flags, the export offline.
    last = sorted(RunDir(finished_run).checkpoints.glob("step_*"))[-1]
    assert predicted_itm_offline(export, image, caption) == pytest.approx(
        predicted_itm(capsys, last, image, caption), abs=1e-6
    )


def test_a_run_that_selected_a_best_checkpoint_exports_and_loads_that_one(finished_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run, run_copy)
    first, last = sorted(RunDir(run_copy).checkpoints.glob("step_*"))
    record_best(last, step=int(first.name.removeprefix("step_")))
    assert vilt_convert(["run", str(run_copy), "--out", str(tmp_path / "best")]) == 0
    assert vilt_convert(["run", str(first), "--out", str(tmp_path / "first")]) == 0
    assert vilt_convert(["run", str(last), "--out", str(tmp_path / "last")]) == 0
    best, expected, newest = (load_checkpoint(tmp_path / name).state for name in ("best", "first", "last"))
    assert any(not torch.equal(expected[k], newest[k]) for k in expected), "the steps trained nothing"
    assert all(torch.equal(best[k], v) for k, v in expected.items())
    loaded = vilt_lab.ViltWithHeads.from_pretrained(run_copy).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


@pytest.mark.parametrize("left", ["no checkpoints dir", "only incomplete checkpoints"])
def test_an_export_of_a_run_without_a_complete_checkpoint_says_so(left, finished_run, tmp_path, capsys):
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run, run_copy)
    checkpoints = RunDir(run_copy).checkpoints
    if left == "no checkpoints dir":  # killed before its first save
        shutil.rmtree(checkpoints)
    else:  # every save interrupted before its manifest
        for step in checkpoints.glob("step_*"):
            (step / "manifest.json").unlink()
    assert vilt_convert(["run", str(run_copy), "--out", str(tmp_path / "export")]) == 2
    assert f"run dir {run_copy} holds no complete checkpoint" in capsys.readouterr().err
    # The Python API says the same of it.
    with pytest.raises(FileNotFoundError, match=f"run dir {run_copy} holds no complete checkpoint"):
        vilt_lab.create_model_and_transforms(run_copy)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("which", ["export", "run dir", "step"])
def test_from_pretrained_reads_what_the_api_reads(which, finished_run, export):
    checkpoint = {
        "export": export,
        "run dir": finished_run,
        "step": sorted(RunDir(finished_run).checkpoints.glob("step_*"))[0],
    }[which]
    loaded = vilt_lab.ViltWithHeads.from_pretrained(checkpoint)
    model, _, _ = vilt_lab.create_model_and_transforms(checkpoint)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert loaded.head_specs == model.head_specs


def test_from_pretrained_without_the_package_root_points_a_run_dir_to_it(finished_run):
    """Imported from its own room alone, `ViltWithHeads` has no reader of training runs (it
    lives a room above): the error says how to read one."""
    code = (
        "import sys; from vilt_lab.weights.with_heads import ViltWithHeads\n"
        "try:\n    ViltWithHeads.from_pretrained(sys.argv[1])\n"
        "except FileNotFoundError as err:\n    print(err)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(finished_run)], capture_output=True, text=True, check=True
    )
    assert f"vilt_lab.ViltWithHeads.from_pretrained('{finished_run}')" in done.stdout
    assert f"vilt_lab.create_model_and_transforms('{finished_run}')" in done.stdout


def test_an_export_of_a_run_with_a_hub_tokenizer_saves_it(
    finished_run, shapes_tokenizer, tmp_path, monkeypatch
):
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run, run_copy)
    config = RunDir(run_copy).config
    cfg = OmegaConf.load(config)
    cfg.data.tokenizer = "someone/tokenizer"
    OmegaConf.save(cfg, config)
    asked = []

    def from_the_hf_cache(name, key=None):  # what load_tokenizer finds in the HF cache
        asked.append(name)
        return shapes_tokenizer

    monkeypatch.setattr(vilt_lab.convert_cli, "load_tokenizer", from_the_hf_cache)
    step = sorted(RunDir(run_copy).checkpoints.glob("step_*"))[-1]
    assert vilt_convert(["run", str(step), "--out", str(tmp_path / "export")]) == 0
    assert asked == ["someone/tokenizer"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, _, tokenizer = vilt_lab.create_model_and_transforms(tmp_path / "export")
    assert tokenizer.get_vocab() == shapes_tokenizer.get_vocab()


def test_an_export_without_inputs_still_loads_with_the_papers(export, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    meta = json.loads((export / CONFIG_NAME).read_text())
    del meta[INPUTS_KEY]
    (old / CONFIG_NAME).write_text(json.dumps(meta))
    (old / "model.safetensors").write_bytes((export / "model.safetensors").read_bytes())
    assert set(load_checkpoint(old).heads) == set(load_checkpoint(export).heads)
    _, preprocess, _ = vilt_lab.create_model_and_transforms(old, tokenizer=str(export / "tokenizer"))
    assert preprocess.resize.longer == PAPER_LONGER


def test_a_released_name_offline_names_the_url_and_the_local_way(tmp_path, monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    entry = RELEASED["vilt_200k_mlm_itm"]
    with pytest.raises(OSError) as err:
        vilt_lab.create_model_and_transforms(entry.name, cache_dir=tmp_path)
    message = str(err.value)
    assert entry.name in message and entry.url in message and "no route to host" in message
    assert f"create_model_and_transforms('path/to/{entry.filename}')" in message
    assert not any(tmp_path.rglob("*.ckpt*"))  # nothing half-downloaded is left behind
