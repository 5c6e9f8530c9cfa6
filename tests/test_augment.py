"""RandAugment as ViLT fine-tunes with it: the op list, N and M from config, official magnitudes."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from timm.data.auto_augment import AugmentOp

from helpers.configs import compose_config
from vilt_lab.build.data import loader_config
from vilt_lab.data.augment import EXCLUDED_OPS, OPS, RandAugment, SolarizeAfterAdd
from vilt_lab.data.pipeline import LoaderConfig, Source, build_eval_loader, build_train_loader, item_decoder
from vilt_lab.data.shards import iter_samples
from vilt_lab.data.transforms import MinMaxResize, decode_image


def _photo(size: tuple[int, int] = (120, 80)) -> Image.Image:
    """A ramp with noise: every op visibly changes it."""
    ramp = np.linspace(0, 255, size[0])[None, :, None] * np.ones((size[1], 1, 3))
    noise = np.random.default_rng(0).normal(0, 30, (size[1], size[0], 3))
    return Image.fromarray((ramp + noise).clip(0, 255).astype(np.uint8))


def test_op_list_is_the_official_one_without_invert_and_cutout() -> None:
    names = RandAugment(2, 9).op_names
    assert names == list(OPS) and len(names) == 14
    assert not {"Invert", "Cutout", "CutoutAbs"} & set(names)
    assert set(EXCLUDED_OPS) == {"Invert", "Cutout"}


@pytest.mark.parametrize(("preset", "expected"), [("randaugment", (2, 9)), ("pixelbert", (0, 9))])
def test_n_and_m_come_from_the_augment_config(preset, expected, tmp_path) -> None:
    cfg = compose_config([f"augment={preset}", f"paths.runs_dir={tmp_path}"])
    config = loader_config(cfg, patch_size=32, rank=0, world_size=1, pin_memory=False)
    assert (config.randaugment_ops, config.randaugment_magnitude) == expected
    augment = item_decoder(config, train=True).augment
    assert (augment is None) == (expected[0] == 0)
    assert item_decoder(config, train=False).augment is None  # evaluation never augments


def test_overridden_n_and_m_reach_the_ops(tmp_path) -> None:
    cfg = compose_config(
        [
            "augment=randaugment",
            "augment.randaugment.n=3",
            "augment.randaugment.m=15",
            f"paths.runs_dir={tmp_path}",
        ]
    )
    augment = item_decoder(loader_config(cfg, 32, 0, 1, False), train=True).augment
    assert augment.num_ops == 3 and augment._transform.num_layers == 3
    assert {op.magnitude for op in augment.ops} == {15 * 10 / 30, 15}  # timm's level; ours on 0-30


def test_magnitudes_at_m9_are_the_official_values() -> None:
    """timm's level arguments at M=9 equal the official min + 9/30 * (max - min) per op."""
    official = {
        "Rotate": 9.0,  # 0-30 degrees
        "Posterize": 1,  # 0-4 bits, int(1.2)
        "Solarize": 76,  # 0-256 (76.8; timm floors the threshold)
        "Color": 0.64,  # 0.1-1.9
        "Contrast": 0.64,
        "Brightness": 0.64,
        "Sharpness": 0.64,
        "ShearX": 0.09,  # 0-0.3
        "ShearY": 0.09,
        "TranslateX": 30.0,  # 0-100 px, absolute
        "TranslateY": 30.0,
    }
    ops = {op.name: op for op in RandAugment(2, 9).ops}
    for name, value in official.items():
        op = ops[name]
        assert isinstance(op, AugmentOp) and op.prob == 1.0  # always applied, as the official ops
        (argument,) = op.level_fn(op.magnitude, op.hparams)
        assert abs(argument) == pytest.approx(value), name
        assert op.kwargs == {"fillcolor": (0, 0, 0), "resample": Image.Resampling.NEAREST}
    assert ops["AutoContrast"].level_fn is None and ops["Equalize"].level_fn is None


def test_solarize_add_is_the_official_add_then_solarize() -> None:
    image = _photo()
    # The official op: add 9/30 * 110 = 33 to every pixel, clip, truncate, solarize at 128.
    added = np.clip(np.asarray(image).astype(float) + 33.0, 0, 255).astype(np.uint8)
    expected = np.asarray(ImageOps.solarize(Image.fromarray(added), 128))
    ours = SolarizeAfterAdd(9)(image)
    assert np.array_equal(np.asarray(ours), expected)
    # Why it is not timm's: timm adds only below the threshold and never inverts.
    timm_op = AugmentOp("SolarizeAdd", prob=1.0, magnitude=3)
    assert not np.array_equal(np.asarray(timm_op(image)), expected)


def test_augmented_images_keep_size_and_mode_and_follow_the_rng() -> None:
    image, augment = _photo(), RandAugment(2, 9)
    outputs = [augment(image, random.Random(seed)) for seed in range(40)]
    assert all(out.size == image.size and out.mode == "RGB" for out in outputs)
    for op in augment.ops:  # each op alone too, not only the pairs the seeds happened to draw
        out = op(image)
        assert out.size == image.size and out.mode == "RGB", op.name
    assert sum(not np.array_equal(np.asarray(out), np.asarray(image)) for out in outputs) >= 35
    state = random.getstate(), np.random.get_state()[1].copy()
    again = augment(image, random.Random(7))
    assert np.array_equal(np.asarray(again), np.asarray(outputs[7]))  # seeded by the worker's rng
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])


def test_augmentation_runs_before_the_resize() -> None:
    seen = []

    def record(image: Image.Image) -> Image.Image:
        seen.append((image.size, image.mode))
        return ImageOps.mirror(image)

    buffer = io.BytesIO()
    _photo((200, 100)).save(buffer, "JPEG")
    out = decode_image(buffer.getvalue(), MinMaxResize(96, 160, 16), record)
    assert seen == [((200, 100), "RGB")] and out.shape == (3, 80, 160)
    plain = decode_image(buffer.getvalue(), MinMaxResize(96, 160, 16))
    assert (out.int() - plain.flip(-1).int()).abs().max() <= 2  # mirrored before the resize


def test_train_stream_augments_and_eval_stream_does_not(shapes_world, shapes_tokenizer) -> None:
    base = dict(
        batch_size=8, image_shorter=96, image_longer=160, patch_size=16, shuffle_buffer=16, shuffle_initial=8
    )
    plain, augmented = LoaderConfig(**base), LoaderConfig(**base, randaugment_ops=2, randaugment_magnitude=9)
    resize = MinMaxResize(96, 160, 16)
    train = shapes_world / "pretrain" / "train"
    unaugmented = {key: decode_image(images[0], resize) for key, images, _ in iter_samples(train)}
    batch = next(iter(build_train_loader(Source(train), shapes_tokenizer, augmented)))
    changed = 0
    for key, image, mask in zip(batch["keys"], batch["image"], batch["pixel_mask"], strict=True):
        reference = unaugmented[key]
        assert int(mask.sum()) == reference.shape[1] * reference.shape[2]  # size kept
        changed += not torch.equal(image[:, : reference.shape[1], : reference.shape[2]], reference)
    assert changed >= 6
    val = shapes_world / "pretrain" / "val"
    e1, e2 = (next(iter(build_eval_loader(val, shapes_tokenizer, c))) for c in (plain, augmented))
    assert e1["keys"] == e2["keys"] and torch.equal(e1["image"], e2["image"])


def test_bad_settings_name_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"augment.randaugment.m"):
        RandAugment(2, 31)
    with pytest.raises(ValueError, match=r"augment.randaugment.n"):
        RandAugment(0, 9)
