"""Image canvases (data.image_buckets): batches of one image shape, exact against the padded path,
every item of an exact pass once, a deterministic training stream."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers.configs import compose_config
from helpers.models import tiny_backbone
from helpers.worlds import SHAPES_VAL
from vilt_lab.build.data import loader_config
from vilt_lab.data.canvas import Batcher, batcher, image_shapes
from vilt_lab.data.collate import UNPADDED, ItemCollator
from vilt_lab.data.pipeline import LoaderConfig, Source, build_eval_loader, build_train_loader
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.objectives.nlvr2 import NLVR2Objective
from vilt_lab.objectives.passes import Passes

SHAPES = dict(image_shorter=96, image_longer=160, patch_size=16, shuffle_buffer=64, shuffle_initial=16)
# Multiples of the tiny preset's 16-pixel patches, in both orientations; two items of each.
IMAGE_SIZES = [(32, 48), (48, 32), (32, 32), (48, 32), (32, 48), (32, 32)]
TEXTS = ["a red circle", "a blue square", "a green circle", "a red square", "a blue circle", "a green square"]


def _config(**kw) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 8, **SHAPES, **kw})


def _items(tokenizer) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    lengths = {len(tokenizer(text)["input_ids"]) for text in TEXTS}
    assert len(lengths) == 1, "the texts must tokenize to one length, so a bucket pads nothing"
    return [
        {
            "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            "text": text,
            "key": f"k{i}",
        }
        for i, ((h, w), text) in enumerate(zip(IMAGE_SIZES, TEXTS, strict=True))
    ]


def _per_sample_losses(backbone: ViltBackbone, head: torch.nn.Linear, batch: dict) -> dict[str, torch.Tensor]:
    """A classification loss on the pooled vector plus a readout of the image features (valid
    positions only), per sample, keyed by the item's key: both halves of the sequence get
    gradients, and padding can only enter through a wrong mask."""
    out = Passes().run(backbone, batch, batch["input_ids"])
    labels = torch.tensor([int(key[1:]) % 3 for key in batch["keys"]])
    classification = F.cross_entropy(head(out.pooled), labels, reduction="none")
    valid = out.image_mask.unsqueeze(-1).float()
    image_mean = (out.image_feats * valid).sum(1) / valid.sum(1)
    losses = classification + image_mean.sum(-1)
    return dict(zip(batch["keys"], losses, strict=True))


def _key_masks(backbone: ViltBackbone) -> tuple[list, torch.utils.hooks.RemovableHandle]:
    """The key mask each pass hands the first block (None: attention without a mask)."""
    seen: list = []
    handle = backbone.blocks[0].register_forward_pre_hook(lambda _module, args: seen.append(args[1]))
    return seen, handle


def _run(backbone, head, batches: list[dict]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-sample losses over ``batches`` and the parameter gradients of their sum."""
    backbone.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    losses: dict[str, torch.Tensor] = {}
    for batch in batches:
        per_sample = _per_sample_losses(backbone, head, batch)
        torch.stack(list(per_sample.values())).sum().backward()
        losses.update({key: value.detach() for key, value in per_sample.items()})
    params = {**dict(backbone.named_parameters()), **{f"head.{n}": p for n, p in head.named_parameters()}}
    return losses, {name: p.grad.clone() for name, p in params.items() if p.grad is not None}


def test_buckets_equal_the_padded_batch_in_values_and_gradients(shapes_tokenizer) -> None:
    items = _items(shapes_tokenizer)
    collate = ItemCollator(shapes_tokenizer)
    backbone = tiny_backbone().eval()  # no dropout: the two paths draw no masks
    head = torch.nn.Linear(backbone.config.hidden_size, 3)
    padded = collate(items)
    bucketed = Batcher(2, image_shapes)
    buckets = [collate(batch) for item in items if (batch := bucketed.add(item)) is not None]
    assert not padded[UNPADDED] and len(buckets) == 3
    assert all(b[UNPADDED] and b["pixel_mask"].all() for b in buckets)

    masks, handle = _key_masks(backbone)
    padded_losses, padded_grads = _run(backbone, head, [padded])
    bucket_losses, bucket_grads = _run(backbone, head, buckets)
    # The same buckets, the mask forced on: the masked path on batches that have no padding.
    masked_losses, masked_grads = _run(backbone, head, [{**b, UNPADDED: False} for b in buckets])
    handle.remove()
    assert masks[0] is not None and not masks[0].all()  # the padded batch masks its padding
    assert all(mask is None for mask in masks[1:4])  # the buckets ran without a mask
    assert all(mask is not None and mask.all() for mask in masks[4:])

    assert sorted(bucket_losses) == sorted(padded_losses) == sorted(item["key"] for item in items)
    for key, value in padded_losses.items():
        torch.testing.assert_close(bucket_losses[key], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(masked_losses[key], bucket_losses[key], rtol=1e-5, atol=1e-6)
    assert padded_grads.keys() == bucket_grads.keys() == masked_grads.keys()
    for name, grad in padded_grads.items():
        torch.testing.assert_close(bucket_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(masked_grads[name], bucket_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_nlvr2_pairs_of_one_shape_run_unmasked_with_the_padded_batch_logits(shapes_tokenizer) -> None:
    items = _items(shapes_tokenizer)
    pairs = [{"images": [item["image"]] * 2, "text": item["text"], "key": item["key"]} for item in items]
    collate = ItemCollator(shapes_tokenizer)
    torch.manual_seed(0)
    backbone = ViltBackbone(get_config("tiny", num_modality_types=3)).eval()
    objective = NLVR2Objective.from_config(backbone.config).eval()
    buckets = Batcher(2, image_shapes)
    bucketed = [collate(batch) for pair in pairs if (batch := buckets.add(pair)) is not None]
    masks, handle = _key_masks(backbone)
    with torch.no_grad():
        padded_logits = objective.logits(collate(pairs), backbone, Passes())
        bucket_logits = {
            key: row
            for batch in bucketed
            for key, row in zip(batch["keys"], objective.logits(batch, backbone, Passes()), strict=True)
        }
    handle.remove()
    assert masks[0] is not None and all(mask is None for mask in masks[2:])  # two passes a batch
    for key, row in zip((pair["key"] for pair in pairs), padded_logits, strict=True):
        torch.testing.assert_close(bucket_logits[key], row, rtol=1e-5, atol=1e-6)


def test_the_unpadded_flag_needs_one_image_shape_and_one_text_length(shapes_tokenizer) -> None:
    items = _items(shapes_tokenizer)
    collate = ItemCollator(shapes_tokenizer)
    square = [item for item in items if item["image"].shape[1:] == (32, 32)]
    assert collate(square)[UNPADDED]
    assert not collate(items)[UNPADDED]  # three image shapes
    longer = {**square[1], "text": "a red circle left of a blue square"}
    assert not collate([square[0], longer])[UNPADDED]  # one image shape, two text lengths
    pair = {"images": [square[0]["image"]] * 2, "text": square[0]["text"]}
    assert collate([pair, pair])[UNPADDED]  # NLVR2's pairs: every image of the batch counts
    wide = {"images": [square[0]["image"], items[0]["image"]], "text": square[0]["text"]}
    assert not collate([wide, wide])[UNPADDED]


def test_batcher_fills_per_key_and_leaves_the_rest_oldest_first() -> None:
    keyed = Batcher(2, key=lambda item: item["k"])
    emitted = [keyed.add({"k": k, "i": i}) for i, k in enumerate("abcab")]
    assert [None if b is None else [x["i"] for x in b] for b in emitted] == [None, None, None, [0, 3], [1, 4]]
    assert [[x["i"] for x in b] for b in keyed.leftovers()] == [[2]]
    assert list(keyed.leftovers()) == []
    plain = batcher(2, image_buckets=False)  # without canvases: batches in stream order
    items = [{"image": torch.zeros(3, h, 16)} for h in (16, 32, 48)]
    assert [plain.add(item) for item in items] == [None, items[:2], None]


def test_an_exact_pass_with_buckets_evaluates_every_item_once(shapes_world: Path, shapes_tokenizer) -> None:
    val = shapes_world / "pretrain" / "val"
    plain = list(build_eval_loader(val, shapes_tokenizer, _config(num_workers=2)))
    bucketed = list(build_eval_loader(val, shapes_tokenizer, _config(num_workers=2, image_buckets=True)))
    keys = Counter(key for batch in bucketed for key in batch["keys"])
    assert sum(keys.values()) == SHAPES_VAL and set(keys.values()) == {1}
    assert keys == Counter(key for batch in plain for key in batch["keys"])
    assert all(batch["pixel_mask"].all() and len(batch["keys"]) <= 8 for batch in bucketed)
    assert any(not batch["pixel_mask"].all() for batch in plain)  # the world's shapes do vary


def test_the_bucketed_train_stream_is_deterministic_for_a_seed(shapes_world: Path, shapes_tokenizer) -> None:
    source = Source(shapes_world / "pretrain" / "train")

    def first(seed: int = 0) -> list[dict]:
        loader = build_train_loader(source, shapes_tokenizer, _config(seed=seed, image_buckets=True))
        return list(islice(loader, 6))

    reference, again = first(), first()
    shapes = {tuple(batch["image"].shape[-2:]) for batch in reference}
    assert len(shapes) > 1  # buckets of several shapes, each batch of one
    for a, b in zip(reference, again, strict=True):
        assert a["keys"] == b["keys"] and len(a["keys"]) == 8 and a["pixel_mask"].all()
        assert torch.equal(a["mlm_input_ids"], b["mlm_input_ids"]) and torch.equal(a["image"], b["image"])
    assert [b["keys"] for b in first(seed=1)] != [b["keys"] for b in reference]


def test_a_resume_reads_the_same_bucketed_batches_past_its_position(
    shapes_world: Path, shapes_tokenizer
) -> None:
    """What a resume after a stop does (`Trainer._open_stream`): the stream started at the saved
    step, read up to the micro-batches already read; with two workers taking turns."""
    source = Source(shapes_world / "pretrain" / "train")
    config = _config(num_workers=2, image_buckets=True)

    def stream():
        return iter(build_train_loader(source, shapes_tokenizer, config, start_step=7))

    uninterrupted = [batch["keys"] for batch in islice(stream(), 5)]
    resumed = stream()
    for _ in range(3):
        next(resumed)
    assert [batch["keys"] for batch in islice(resumed, 2)] == uninterrupted[3:]


@pytest.mark.parametrize("image_buckets", [False, True])
def test_the_loader_reads_data_image_buckets(image_buckets: bool, tmp_path: Path) -> None:
    cfg = compose_config([f"data.image_buckets={str(image_buckets).lower()}", f"paths.runs_dir={tmp_path}"])
    assert loader_config(cfg, 16, 0, 1, False).image_buckets is image_buckets
