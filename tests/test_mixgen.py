"""MixGen (augment.mixgen): the official algorithm on ViLT's variable-size images, off by default,
in pre-training streams only, before tokenisation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers.configs import TASK_OVERRIDES, fast_config, train_settings
from vilt_lab.build.data import build_streams, build_tokenizer, loader_config
from vilt_lab.build.task import build_task
from vilt_lab.config.validation import ConfigError, validate_train_config
from vilt_lab.data import pipeline
from vilt_lab.data.collate import ItemCollator
from vilt_lab.data.masking import MaskingStep
from vilt_lab.data.mixgen import MixGen, mixed_pairs
from vilt_lab.data.pipeline import ItemSpec, LoaderConfig, item_decoder, pretrain_items, stream_mixgen
from vilt_lab.tasks import get_task

CPU_PROCESS = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))
TEXTS = ("a red circle", "two blue squares", "a green triangle left of a circle", "one square", "a circle")
SIZES = ((32, 48), (48, 32), (64, 64), (32, 32), (16, 48))


def _samples(sizes=SIZES) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator),
            "text": text,
            "key": f"k{i}",
            "source": i % 2,
        }
        for i, ((h, w), text) in enumerate(zip(sizes, TEXTS, strict=True))
    ]


def _official_mixgen(image: torch.Tensor, text: list[str], num: int, lam: float):
    """The official mixgen.py's default MixGen, on a float batch of one image size."""
    for i in range(num):
        image[i, :] = lam * image[i, :] + (1 - lam) * image[i + num, :]
        text[i] = text[i] + " " + text[i + num]
    return image, text


def test_pairs_are_the_share_of_the_batch_capped_at_half() -> None:
    assert mixed_pairs(0.25, 64) == 16  # the MixGen README's 16 of ALBEF's 64 per GPU
    assert mixed_pairs(0.0, 64) == 0
    assert mixed_pairs(1.0, 5) == 2
    assert mixed_pairs(0.5, 1) == 0


def test_same_size_images_mix_as_the_official_code() -> None:
    samples = _samples(((32, 32),) * 5)
    mixed = MixGen(share=0.4, lam=0.3)(samples)  # round(0.4 * 5) = 2 pairs
    images, texts = _official_mixgen(
        torch.stack([s["image"] for s in samples]).float(), [s["text"] for s in samples], 2, 0.3
    )
    assert [s["text"] for s in mixed] == texts
    ours = torch.stack([s["image"] for s in mixed]).float()
    assert (ours - images).abs().max() <= 0.5  # uint8 rounding of the same blend


def test_mixed_pixels_and_text_with_different_sizes() -> None:
    samples = _samples()
    lam = 0.3
    mixed = MixGen(share=0.4, lam=lam)(samples)
    assert len(mixed) == len(samples)
    for i, j in ((0, 2), (1, 3)):
        own, other = samples[i]["image"], samples[j]["image"]
        h, w = own.shape[1:]
        resized = F.interpolate(other[None], size=(h, w), mode="bicubic", antialias=True)[0]
        expected = (lam * own.float() + (1 - lam) * resized.float()).round().to(torch.uint8)
        assert mixed[i]["image"].shape == own.shape  # the pair keeps its own size
        assert torch.equal(mixed[i]["image"], expected)
        assert mixed[i]["text"] == f"{TEXTS[i]} {TEXTS[j]}"
        assert (mixed[i]["key"], mixed[i]["source"]) == (samples[i]["key"], samples[i]["source"])
    assert mixed[2:] == samples[2:]  # unmixed items are the very same objects
    assert samples[0]["text"] == TEXTS[0], "the caller's items are not changed"


def test_share_zero_gives_the_batch_unchanged(shapes_tokenizer) -> None:
    masking = MaskingStep(len(shapes_tokenizer), shapes_tokenizer.mask_token_id, padded_length=40)

    def collate(mix):
        collator = ItemCollator(shapes_tokenizer, steps=(masking,), mix=mix)
        return collator(_samples(), torch.Generator().manual_seed(3))

    plain, off = collate(None), collate(MixGen(share=0.0))
    assert plain.keys() == off.keys()
    for name, value in plain.items():
        same = torch.equal(value, off[name]) if isinstance(value, torch.Tensor) else value == off[name]
        assert same, name


def test_the_collate_tokenizes_and_masks_the_mixed_text(shapes_tokenizer) -> None:
    collator = ItemCollator(shapes_tokenizer, mix=MixGen(share=0.4))
    batch = collator(_samples(), torch.Generator().manual_seed(0))
    concatenated = shapes_tokenizer(f"{TEXTS[0]} {TEXTS[2]}", return_tensors="pt")["input_ids"][0]
    assert torch.equal(batch["input_ids"][0, : len(concatenated)], concatenated)
    assert batch["image_sizes"] == [s["image"].shape[1:] for s in _samples()]


def test_pretraining_streams_mix_and_no_other_stream_does(monkeypatch, caplog) -> None:
    monkeypatch.setattr(pipeline, "decodes_on_device", lambda decode: decode == "gpu")  # as with CUDA
    config = LoaderConfig(batch_size=4, mixgen_share=0.25, decode="gpu")
    pairs = ItemSpec(mixes_pairs=True)
    assert stream_mixgen(config, pairs, train=True) == MixGen(0.25, 0.5)
    assert stream_mixgen(config, pairs, train=False) is None  # evaluation never mixes
    assert stream_mixgen(LoaderConfig(batch_size=4), pairs, train=True) is None  # off by default
    assert stream_mixgen(config, ItemSpec("questions"), train=True) is None  # VQA's labels
    assert "augment.mixgen.share=0.25 is ignored" in caplog.text
    assert item_decoder(config, train=True).on_device
    assert not item_decoder(config, train=True, mixes=True).on_device  # it blends decoded pixels


def test_pretraining_items_mix_fine_tuning_items_do_not(shapes_world, shapes_tokenizer, tmp_path) -> None:
    assert pretrain_items(shapes_tokenizer, LoaderConfig(batch_size=4)).mixes_pairs
    for task, overrides in TASK_OVERRIDES.items():
        cfg = train_settings(fast_config(shapes_world, tmp_path, *overrides))
        module = build_task(cfg, build_tokenizer(cfg))
        items = get_task(task).items(cfg, build_tokenizer(cfg), module)
        assert items.mixes_pairs == (task == "pretrain"), task


def _first_batch(shapes_world, tmp_path, *overrides: str) -> dict:
    cfg = validate_train_config(fast_config(shapes_world, tmp_path, *overrides), world_size=1)
    tokenizer = build_tokenizer(cfg)
    task = build_task(cfg, tokenizer)
    stream, _ = build_streams(cfg, tokenizer, CPU_PROCESS, task)
    return next(iter(stream(0)))


def test_a_pretraining_run_with_mixgen_mixes_a_quarter_of_its_batches(shapes_world, tmp_path) -> None:
    cfg = train_settings(fast_config(shapes_world, tmp_path, "augment.mixgen.share=0.25"))
    assert loader_config(cfg, 16, 0, 1, False).mixgen_share == 0.25
    plain = _first_batch(shapes_world, tmp_path)
    mixed = _first_batch(shapes_world, tmp_path, "augment.mixgen.share=0.25")
    num = mixed_pairs(0.25, len(plain["keys"]))
    assert num == 1 and mixed["keys"] == plain["keys"]  # the same items, the first one mixed

    def ids(batch, row):
        return batch["input_ids"][row, batch["attention_mask"][row].bool()].tolist()

    assert ids(mixed, 0) == ids(plain, 0)[:-1] + ids(plain, 1)[1:]  # [CLS] text_0 text_1 [SEP]
    assert all(ids(mixed, row) == ids(plain, row) for row in range(num, len(plain["keys"])))
    assert mixed["image_sizes"] == plain["image_sizes"]
    assert not torch.equal(mixed["image"][0], plain["image"][0])
    assert torch.equal(mixed["image"][num:], plain["image"][num:])


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_a_share_outside_zero_to_one_is_refused_naming_the_key(value, shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, f"augment.mixgen.share={value}")
    with pytest.raises(ConfigError, match=rf"augment\.mixgen\.share={value}") as refused:
        validate_train_config(cfg, world_size=1)
    assert len(refused.value.problems) == 1
