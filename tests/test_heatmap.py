"""The word-patch alignment heatmap (the paper's Figure 4) from WPA's transport plan."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vilt_lab.data.transforms import MinMaxResize
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.report.cli import main as report_main
from vilt_lab.report.heatmap import align_words
from vilt_lab.weights.checkpoint_io import save_checkpoint
from vilt_lab.weights.with_heads import ViltWithHeads


@pytest.fixture
def scene(tmp_path):
    image = Image.new("RGB", (160, 96), "white")
    ImageDraw.Draw(image).rectangle((10, 10, 50, 50), fill="red")
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def test_each_word_gets_its_share_of_the_plan(shapes_tokenizer, scene):
    backbone = ViltBackbone(get_config("tiny", vocab_size=len(shapes_tokenizer)))
    caption = "a red square left of a blue circle"
    with Image.open(scene) as image:
        alignment = align_words(backbone, shapes_tokenizer, image, caption, MinMaxResize(96, 160, 16))
    assert alignment.words == caption.split()
    assert all(mass.shape == (6, 10) for mass in alignment.maps)  # 96x160 at 16 px
    # Every text row of IPOT's plan sums to 1/m (m pieces): a word carries its pieces' share.
    pieces = [len(shapes_tokenizer.tokenize(word)) for word in alignment.words]
    np.testing.assert_allclose([m.sum() for m in alignment.maps], np.array(pieces) / sum(pieces), rtol=1e-4)


def test_vilt_report_heatmap_writes_a_png(shapes_world, shapes_tokenizer, scene, tmp_path):
    backbone = ViltBackbone(get_config("tiny", vocab_size=len(shapes_tokenizer)))
    checkpoint = save_checkpoint(ViltWithHeads(backbone, {}, {}).to_checkpoint(), tmp_path / "ckpt")
    out = tmp_path / "wpa.png"
    argv = [
        "heatmap",
        str(checkpoint),
        str(scene),
        "two red squares",
        "--tokenizer",
        str(shapes_world / "tokenizer"),
    ]
    assert report_main([*argv, "--out", str(out), "--shorter", "96", "--longer", "160"]) == 0
    assert out.stat().st_size > 1000
