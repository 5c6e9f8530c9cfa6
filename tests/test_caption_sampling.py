"""`data.caption_sampling`: per_image (an image, then one caption) or per_caption (the official way)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from itertools import islice

import pytest

from helpers.configs import TASK_OVERRIDES, fast_config, train_settings
from helpers.images import encode_image
from vilt_lab.build.settings import max_steps, train_items
from vilt_lab.config.validation import validate_train_config
from vilt_lab.data.pipeline import (
    CAPTIONS,
    LoaderConfig,
    ResampledMix,
    SkipCounter,
    Source,
    build_eval_loader,
    caption_items,
    mix_weights,
)
from vilt_lab.data.shards import count_samples, count_texts, expand_shards, iter_samples
from vilt_lab.train import run
from vilt_lab.training.schedule import steps_for_epochs

# Two sources as VG and GCC are: images with many captions, and images with one.
CAPTION_COUNTS = {"vg": [1, 3, 6, 10], "gcc": [1] * 10}
# Acceptance: 20k draws within 2% per caption; the per-image contrast needs fewer.
DRAWS = {"per_caption": 20_000, "per_image": 5_000}


def _caption_sources(write_raw_shard) -> list[tuple[str, ...]]:
    urls = []
    for name, counts in CAPTION_COUNTS.items():
        samples = [
            {
                "__key__": f"{name}{i}",
                "jpg": encode_image((32, 32)),
                "json": json.dumps({"captions": [f"{name} {i} caption {c}" for c in range(n)]}),
            }
            for i, n in enumerate(counts)
        ]
        urls.append((str(write_raw_shard(name, samples) / "shard-000000.tar"),))
    return urls


@pytest.mark.parametrize("sampling", ["per_caption", "per_image"])
def test_sampling_frequencies_follow_caption_counts_or_images(write_raw_shard, sampling) -> None:
    """Per caption, an image is drawn as often as it has captions, over the whole mix (uniform over
    captions, as the official ConcatDataset); per image, every image of a source is as likely."""
    urls = _caption_sources(write_raw_shard)
    weights = mix_weights([Source(u) for u in urls], urls)  # by caption counts (texts.json)
    mix = ResampledMix(tuple(urls), weights, expand_field=caption_items(sampling).expand_field)
    n = DRAWS[sampling]
    draws = Counter(item["__key__"] for item in islice(mix(random.Random(0), 0, 1, SkipCounter(), 0), n))
    captions = sum(sum(counts) for counts in CAPTION_COUNTS.values())
    for weight, (name, counts) in zip(weights, CAPTION_COUNTS.items(), strict=True):
        for i, count in enumerate(counts):
            expected = count / captions if sampling == "per_caption" else weight / len(counts)
            assert abs(draws[f"{name}{i}"] / n - expected) <= 0.02, (sampling, name, i, draws)


def test_a_per_caption_pass_reads_every_caption_once(shapes_world, shapes_tokenizer) -> None:
    val = shapes_world / "pretrain" / "val"
    config = LoaderConfig(batch_size=16, image_shorter=32, image_longer=64, patch_size=16)
    batches = list(build_eval_loader(val, shapes_tokenizer, config, caption_items("per_caption")))
    expected = [(key, caption) for key, _, meta in iter_samples(val) for caption in meta[CAPTIONS]]
    keys = [key for batch in batches for key in batch["keys"]]
    assert Counter(keys) == Counter(key for key, _ in expected)
    read = [
        tuple(ids[mask.bool()].tolist())
        for batch in batches
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    tokenized = shapes_tokenizer([caption for _, caption in expected], truncation=True, max_length=40)
    assert Counter(read) == Counter(tuple(ids) for ids in tokenized["input_ids"])
    assert all(max(batch["source"]) == 0 for batch in batches)


@pytest.mark.parametrize("sampling", ["per_image", "per_caption"])
def test_an_epoch_counts_captions_per_caption(shapes_world, tmp_path, sampling) -> None:
    epochs = ["schedule.max_steps=null", "schedule.max_epochs=2"]
    cfg = train_settings(fast_config(shapes_world, tmp_path, f"data.caption_sampling={sampling}", *epochs))
    shards = expand_shards(cfg.data.sources["shapes"].urls)
    items = count_texts(shards) if sampling == "per_caption" else count_samples(shards)
    assert count_texts(shards) > count_samples(shards)  # the world has several captions an image
    assert train_items(cfg) == items
    assert max_steps(cfg) == steps_for_epochs(items, 2, cfg.trainer.global_batch_size)


def test_per_caption_sampling_of_questions_is_refused(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, *TASK_OVERRIDES["vqa"], "data.caption_sampling=per_caption")
    with pytest.raises(ValueError, match="data.caption_sampling=per_caption samples captions, but task=vqa"):
        validate_train_config(cfg, world_size=1)


def test_a_per_caption_pre_training_run_trains(shapes_world, tmp_path) -> None:
    summary = run(fast_config(shapes_world, tmp_path, "data.caption_sampling=per_caption"))
    assert summary["steps"] == 4 and math.isfinite(summary["eval"]["eval/itm/loss"])
    assert summary["eval"]["eval/itm/cross_source"] == 0.0  # one source
