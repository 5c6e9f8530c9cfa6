"""Transforms, tokenizer loading, collate and the streaming loaders."""

from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from helpers.images import encode_image
from helpers.worlds import SHAPES_VAL
from vilt_lab.data import transforms
from vilt_lab.data.collate import TEXT_PADDING, ItemCollator, pad_images
from vilt_lab.data.masking import MaskingStep
from vilt_lab.data.pipeline import (
    LoaderConfig,
    ResampledMix,
    SkipCounter,
    Source,
    build_eval_loader,
    build_train_loader,
    mix_weights,
    stream_seed,
)
from vilt_lab.data.tokenizer import load_tokenizer
from vilt_lab.data.transforms import (
    PAPER_LONGER,
    MinMaxResize,
    decode_image,
    min_max_size,
    resize_bicubic,
)
from vilt_lab.model import ViltBackbone
from vilt_lab.model.config import get_config

SHAPES = dict(image_shorter=96, image_longer=160, patch_size=16, shuffle_buffer=64, shuffle_initial=16)
TEXT_LEN = 40


def _config(**kw) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 8, **SHAPES, **kw})


# ----------------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize(
    ("size", "setting", "expected"),
    [
        ((640, 480), (384, 640, 32), (512, 384)),
        ((480, 640), (384, 640, 32), (384, 512)),
        ((1920, 1080), (384, PAPER_LONGER, 32), (608, 352)),  # the official code's real maximum
        ((1920, 1080), (384, 640, 32), (640, 352)),
        ((384, 384), (384, 640, 32), (384, 384)),
        ((64, 64), (96, 160, 16), (96, 96)),
        ((160, 90), (96, 160, 16), (160, 80)),
        ((4000, 10), (384, 640, 32), (640, 32)),  # extreme aspect: still at least one patch
    ],
)
def test_min_max_size(size, setting, expected) -> None:
    assert PAPER_LONGER == 639
    assert min_max_size(*size, *setting) == expected
    resized = MinMaxResize(*setting)(Image.new("RGB", size))
    assert resized.size == expected


def test_decode_image_drafts_large_jpegs_and_converts_modes() -> None:
    big = encode_image((2000, 1500), colour=(10, 200, 30))
    image = decode_image(big, MinMaxResize(384, 640, 32))
    assert image.dtype == torch.uint8 and image.shape == (3, 384, 512)
    assert (image[:, 100, 100].int() - torch.tensor([10, 200, 30])).abs().max() < 8
    buffer = io.BytesIO()
    Image.new("LA", (50, 40), (128, 255)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue(), MinMaxResize(96, 160, 16)).shape == (3, 96, 112)


def _pil_decode(data: bytes, resize: MinMaxResize) -> torch.Tensor:
    """The reference: PIL decode to RGB, then our resize (the path every non-JPEG takes)."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = pil_to_tensor(image.convert("RGB"))
    return resize_bicubic(rgb, resize.size(rgb.shape[2], rgb.shape[1]))


@pytest.mark.parametrize(
    "mode, size, save",
    [
        ("RGB", (640, 480), {}),  # 4:2:0, shrunk to 512x384 without a draft
        ("RGB", (300, 200), {"subsampling": 0}),  # 4:4:4, enlarged
        ("RGB", (500, 400), {"progressive": True}),
        ("L", (400, 300), {}),
        ("CMYK", (400, 300), {}),  # libjpeg-turbo cannot make RGB of it: PIL does
    ],
)
def test_jpeg_fast_path_matches_pil_exactly(mode: str, size: tuple[int, int], save: dict) -> None:
    buffer = io.BytesIO()
    _noise_image(size).convert(mode).save(buffer, format="JPEG", quality=90, **save)
    resize = MinMaxResize(384, PAPER_LONGER, 32)
    decoded = decode_image(buffer.getvalue(), resize)
    assert decoded.dtype == torch.uint8 and decoded.shape[0] == 3
    assert torch.equal(decoded, _pil_decode(buffer.getvalue(), resize))
    took_fast_path = transforms._decode_jpeg_direct(buffer.getvalue(), resize) is not None
    assert took_fast_path == (mode != "CMYK")


def test_truncated_jpeg_is_refused_by_both_paths() -> None:
    buffer = io.BytesIO()
    _noise_image((640, 480)).save(buffer, format="JPEG", quality=90)
    truncated = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    with pytest.raises(OSError):
        decode_image(truncated, MinMaxResize(384, PAPER_LONGER, 32))


def _noise_image(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(640, 480), (300, 200), (1000, 90)])  # shrink, enlarge, both
def test_resize_bicubic_is_pils_bicubic(size: tuple[int, int]) -> None:
    image = _noise_image(size)
    target = MinMaxResize(384, PAPER_LONGER, 32).size(*size)
    ours = resize_bicubic(torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), target).int()
    reference = torch.from_numpy(np.array(image.resize(target, Image.Resampling.BICUBIC))).permute(2, 0, 1)
    assert (ours - reference.int()).abs().max() <= 1


# ----------------------------------------------------------------------------------------------
# Tokenizer and collate


def test_load_tokenizer_offline_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        OSError,
        match=r"'vilt-lab-test/no-such-tokenizer' is neither in the local Hugging Face cache nor reachable .*hf download.* local directory",
    ):
        load_tokenizer("vilt-lab-test/no-such-tokenizer")


def test_pad_images_top_left_with_mask() -> None:
    a = torch.full((3, 32, 48), 7, dtype=torch.uint8)
    b = torch.full((3, 64, 16), 9, dtype=torch.uint8)
    images, mask = pad_images([a, b])
    assert images.shape == (2, 3, 64, 48) and mask.shape == (2, 64, 48) and mask.dtype == torch.bool
    assert torch.equal(images[0, :, :32, :48], a) and images[0, :, 32:].sum() == 0
    assert torch.equal(images[1, :, :, :16], b) and images[1, :, :, 16:].sum() == 0
    assert mask[0].sum() == 32 * 48 and mask[0, :32, :48].all()
    assert mask[1].sum() == 64 * 16 and mask[1, :, :16].all()


def test_text_padding_longest_matches_max_length(shapes_tokenizer) -> None:
    samples = [
        {"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "text": text}
        for text in ("a red circle", "two shapes: a small red circle and a large blue square")
    ]
    collate = {
        padding: ItemCollator(
            shapes_tokenizer,
            TEXT_LEN,
            text_padding=padding,
            steps=[MaskingStep(len(shapes_tokenizer), shapes_tokenizer.mask_token_id)],
        )
        for padding in TEXT_PADDING
    }
    full = collate["max_length"](samples, torch.Generator().manual_seed(0))
    short = collate["longest"](samples, torch.Generator().manual_seed(0))
    T = int(full["attention_mask"].sum(1).max())
    assert full["input_ids"].shape == (2, TEXT_LEN) and short["input_ids"].shape == (2, T) and T < TEXT_LEN
    for key in ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels"):
        assert torch.equal(short[key], full[key][:, :T]), key
        assert not full["attention_mask"][:, T:].any()
    # The backbone gives the same features on real tokens either way: padding keys are masked.
    torch.manual_seed(0)
    model = ViltBackbone(get_config("tiny", vocab_size=len(shapes_tokenizer))).eval()
    pixels = torch.zeros(2, 3, 32, 32)
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.bool)
    with torch.no_grad():
        a = model(full["input_ids"], full["attention_mask"], pixels, pixel_mask)
        b = model(short["input_ids"], short["attention_mask"], pixels, pixel_mask)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.text_feats[:, :T], b.text_feats, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.image_feats, b.image_feats, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="data.text_padding"):
        ItemCollator(shapes_tokenizer, TEXT_LEN, text_padding="max")


# ----------------------------------------------------------------------------------------------
# Loaders


def _check_batch(batch: dict, tokenizer, batch_size: int) -> None:
    # Text is padded to the batch's longest caption (data.text_padding=longest).
    longest = int(batch["attention_mask"].sum(1).max())
    assert longest <= TEXT_LEN
    for key in ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels"):
        assert batch[key].shape == (batch_size, longest) and batch[key].dtype == torch.long
    image, mask = batch["image"], batch["pixel_mask"]
    assert image.dtype == torch.uint8 and image.shape[:2] == (batch_size, 3)
    assert mask.shape == (batch_size, *image.shape[2:]) and mask.dtype == torch.bool
    assert image.shape[2] % 16 == 0 and image.shape[3] % 16 == 0 and max(image.shape[2:]) <= 160
    assert isinstance(batch["skipped"], int)
    for i in range(batch_size):
        h, w = int(mask[i].any(1).sum()), int(mask[i].any(0).sum())
        assert mask[i, :h, :w].all() and mask[i].sum() == h * w  # a top-left rectangle
        assert min(h, w) == 96 or max(h, w) == 160  # MinMaxResize(96, 160, 16)
        assert image[i][:, ~mask[i]].sum() == 0
    ids = batch["input_ids"]
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    assert torch.equal(batch["attention_mask"].bool(), ids != tokenizer.pad_token_id)
    labels = batch["mlm_labels"]
    masked = labels != -100
    assert masked.any() and torch.equal(labels[masked], ids[masked])
    assert torch.equal(batch["mlm_input_ids"][~masked], ids[~masked])
    assert not masked[~batch["attention_mask"].bool()].any()  # never on padding


def test_train_batches(shapes_world: Path, shapes_tokenizer) -> None:
    loader = build_train_loader(Source(shapes_world / "pretrain" / "train"), shapes_tokenizer, _config())
    for batch in islice(loader, 4):
        _check_batch(batch, shapes_tokenizer, 8)
        assert batch["skipped"] == 0


def test_train_stream_is_deterministic_and_reseeded(shapes_world: Path, shapes_tokenizer) -> None:
    source = Source(shapes_world / "pretrain" / "train")

    def first(**kw) -> list[torch.Tensor]:
        loader = build_train_loader(source, shapes_tokenizer, _config(seed=kw.pop("seed", 0)), **kw)
        return [b["mlm_input_ids"] for b in islice(loader, 3)]

    reference = first()
    assert all(torch.equal(a, b) for a, b in zip(reference, first(), strict=True))
    assert not torch.equal(reference[0], first(seed=1)[0])
    assert not torch.equal(reference[0], first(start_step=100)[0])  # a resumed run: a new stream
    assert stream_seed(0, 0, 0, 0, 0) != stream_seed(0, 0, 0, 1, 0) != stream_seed(0, 0, 0, 0, 1)


def test_two_workers_epochs_and_determinism(shapes_world: Path, shapes_tokenizer) -> None:
    def passes() -> list[list[torch.Tensor]]:
        config = _config(num_workers=2)
        loader = build_train_loader(
            Source(shapes_world / "pretrain" / "train"), shapes_tokenizer, config, epoch_batches=3
        )
        assert len(loader) == 3
        return [[b["input_ids"] for b in loader] for _ in range(2)]

    first_run, second_run = passes(), passes()
    assert [len(p) for p in first_run] == [3, 3]  # exact per rank, whatever the worker count
    assert all(
        torch.equal(a, b)
        for p, q in zip(first_run, second_run, strict=True)
        for a, b in zip(p, q, strict=True)
    )
    assert not torch.equal(first_run[0][0], first_run[1][0])  # the second pass is a new epoch


def test_eval_pass_is_exact_and_repeatable(shapes_world: Path, shapes_tokenizer) -> None:
    val = shapes_world / "pretrain" / "val"
    loader = build_eval_loader(val, shapes_tokenizer, _config(num_workers=2))
    first, second = list(loader), list(loader)
    assert sum(len(b["input_ids"]) for b in first) == SHAPES_VAL
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["mlm_input_ids"], b["mlm_input_ids"]) and torch.equal(a["image"], b["image"])
    _check_batch(first[0], shapes_tokenizer, 8)


def test_eval_splits_by_rank_and_falls_back_to_fewer_workers(
    shapes_world: Path, shapes_tokenizer, caplog
) -> None:
    val = shapes_world / "pretrain" / "val"  # 2 shards
    with caplog.at_level(logging.WARNING):
        ranks = [
            list(build_eval_loader(val, shapes_tokenizer, _config(num_workers=3, rank=r, world_size=2)))
            for r in (0, 1)
        ]
    assert "using 1 workers per rank" in caplog.text
    sizes = [sum(len(b["input_ids"]) for b in batches) for batches in ranks]
    assert sum(sizes) == SHAPES_VAL and all(sizes)
    with pytest.raises(ValueError, match="cannot be split over 3 ranks"):
        build_eval_loader(val, shapes_tokenizer, _config(world_size=3))


def _solid_source(write_raw_shard, name: str, size: tuple[int, int], n: int = 40, captions: int = 1) -> Path:
    samples = [
        {
            "__key__": f"{name}{i}",
            "jpg": encode_image(size),
            "json": json.dumps({"captions": [f"a red square {i}"] * captions}),
        }
        for i in range(n)
    ]
    return write_raw_shard(name, samples)


def test_mixing_weights_are_honoured(write_raw_shard, shapes_tokenizer) -> None:
    square = _solid_source(write_raw_shard, "square", (32, 32))  # -> 96 x 96
    wide = _solid_source(write_raw_shard, "wide", (64, 32))  # -> 160 x 80
    sources = [Source(square, weight=3.0), Source(wide, weight=1.0)]
    loader = build_train_loader(sources, shapes_tokenizer, _config(batch_size=16))
    widths = torch.cat([b["pixel_mask"].any(1).sum(1) for b in islice(loader, 25)])
    share = (widths == 96).float().mean().item()
    assert set(widths.tolist()) == {96, 160}
    assert 0.67 < share < 0.83  # 0.75 expected; 400 samples give a standard error of ~0.02
    # Without weights the mix follows the texts.json counts (uniform over captions, as the
    # official ConcatDataset): 40 images x 2 captions vs 40 x 1.
    square = _solid_source(write_raw_shard, "square2", (32, 32), captions=2)
    loader = build_train_loader([Source(square), Source(wide)], shapes_tokenizer, _config(batch_size=16))
    widths = torch.cat([b["pixel_mask"].any(1).sum(1) for b in islice(loader, 25)])
    assert 0.58 < (widths == 96).float().mean().item() < 0.75  # 2/3 expected


def test_resampled_mix_matches_its_weights_over_20k_draws(write_raw_shard) -> None:
    """The mixing primitive itself (acceptance: 20k draws within +-2% of each source's weight)."""
    weights = {"coco": 0.1, "vg": 0.55, "gcc": 0.3, "sbu": 0.05}
    urls = []
    for name in weights:
        samples = [{"__key__": f"{name}{i}", "json": json.dumps({"captions": ["c"]})} for i in range(50)]
        urls.append((str(write_raw_shard(name, samples) / "shard-000000.tar"),))
    mix = ResampledMix(tuple(urls), tuple(weights.values()))
    draws = islice(mix(random.Random(0), 0, 1, SkipCounter(), 0), 20_000)
    counts = Counter(sample["__key__"].rstrip("0123456789") for sample in draws)
    for name, weight in weights.items():
        assert abs(counts[name] / 20_000 - weight) <= 0.02, (name, counts)


def test_mix_weights_all_or_none_names_the_missing(write_raw_shard) -> None:
    a = _solid_source(write_raw_shard, "a", (32, 32), n=2, captions=5)
    b = _solid_source(write_raw_shard, "b", (32, 32), n=2, captions=1)
    urls = [[str(a / "shard-000000.tar")], [str(b / "shard-000000.tar")]]
    assert mix_weights([Source(a, name="a"), Source(b, name="b")], urls) == pytest.approx((10 / 12, 2 / 12))
    assert mix_weights([Source(a, 1.0), Source(b, 3.0)], urls) == pytest.approx((0.25, 0.75))
    with pytest.raises(ValueError, match=r"not for \['b'\].*data.sources.<name>.weight"):
        mix_weights([Source(a, 2.0, name="a"), Source(b, name="b")], urls)
    with pytest.raises(ValueError, match="must be positive"):
        mix_weights([Source(a, 0.0, name="a"), Source(b, 1.0, name="b")], urls)


def test_missing_local_shards_name_the_source_and_path(tmp_path: Path, shapes_tokenizer) -> None:
    missing = tmp_path / "coco" / "pretrain" / "train"
    with pytest.raises(FileNotFoundError, match=rf"data coco: 1 of 1 shards do not exist, e.g. {missing}"):
        build_train_loader(Source(missing, name="coco"), shapes_tokenizer, _config())
    with pytest.raises(FileNotFoundError, match="data eval: 2 of 2 shards"):
        build_eval_loader(str(tmp_path / "val-{0..1}.tar"), shapes_tokenizer, _config())


def test_corrupt_samples_are_skipped_and_counted(write_raw_shard, shapes_tokenizer, caplog) -> None:
    good = encode_image((48, 32))
    caption = json.dumps({"captions": ["a red square"]})
    bad = [
        {"__key__": "truncated", "jpg": good[: len(good) // 2], "json": caption},
        {"__key__": "notimage", "jpg": b"<html>404 not found</html>", "json": caption},
        {"__key__": "nocaption", "jpg": good, "json": json.dumps({"id": "x"})},
        {"__key__": "emptycaption", "jpg": good, "json": json.dumps({"captions": ["  "]})},
        {"__key__": "brokenjson", "jpg": good, "json": b"{not json"},
        {"__key__": "noimage", "json": caption},
    ]
    samples = []
    for i in range(12):
        samples.append({"__key__": f"good{i}", "jpg": good, "json": caption})
        if i < len(bad):
            samples.append(bad[i])
    samples.append({"__key__": "img2dataset", "jpg": good, "txt": "a caption in a txt member"})
    directory = write_raw_shard("corrupt", samples)

    with caplog.at_level(logging.WARNING):
        batches = list(build_eval_loader(directory, shapes_tokenizer, _config(batch_size=4)))
    assert sum(len(b["input_ids"]) for b in batches) == 13
    assert sum(b["skipped"] for b in batches) == len(bad)
    for key in ("truncated", "notimage", "nocaption", "emptycaption", "brokenjson", "noimage"):
        assert key in caplog.text

    # The same shard through the infinite train stream with two workers: no crash either.
    loader = build_train_loader(Source(directory), shapes_tokenizer, _config(batch_size=4, num_workers=2))
    batches = list(islice(loader, 10))
    assert sum(b["skipped"] for b in batches) > 0


def test_exact_epochs_give_ranks_disjoint_fixed_shares(shapes_world: Path, shapes_tokenizer) -> None:
    """resampled=False: 5 shards over 2 ranks x 2 workers; ranks never share a sample, across
    passes and across a resume, and each pass of a rank reorders its shards."""
    source = Source(shapes_world / "pretrain" / "train")

    def keys(rank: int, start_step: int = 0, passes: int = 2) -> list[list[str]]:
        config = _config(rank=rank, world_size=2, num_workers=2)
        loader = build_train_loader(
            source, shapes_tokenizer, config, resampled=False, start_step=start_step, epoch_batches=4
        )
        return [[k for batch in loader for k in batch["keys"]] for _ in range(passes)]

    rank0 = keys(0) + keys(0, start_step=50)
    rank1 = keys(1) + keys(1, start_step=50)
    assert not {k for p in rank0 for k in p} & {k for p in rank1 for k in p}
    assert rank0[0] != rank0[1], "a new pass reshuffles"
    with pytest.raises(ValueError, match="data.resampled=true"):
        build_train_loader([source, source], shapes_tokenizer, _config(), resampled=False)
