"""Image canvases (data.image_buckets, data.canvas_step): batches of one image shape or one canvas,
exact against the padded path, every item of an exact pass once, a deterministic training stream."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers.configs import compose_config, fast_config
from helpers.models import tiny_backbone
from helpers.worlds import SHAPES_VAL
from vilt_lab.build.data import loader_config
from vilt_lab.config.validation import ConfigError, validate_train_config
from vilt_lab.data.canvas import Batcher, batcher, canvas_shape, image_canvases, image_shapes
from vilt_lab.data.collate import UNPADDED, WHOLE_CANVAS, ItemCollator
from vilt_lab.data.pipeline import LoaderConfig, Source, build_eval_loader, build_train_loader
from vilt_lab.model import ViltBackbone, get_config
from vilt_lab.objectives.nlvr2 import NLVR2Objective
from vilt_lab.objectives.passes import Passes

PATCH = 16
SHAPES = dict(image_shorter=96, image_longer=160, patch_size=PATCH, shuffle_buffer=64, shuffle_initial=16)
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


def _assert_same_run(
    reference: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    other: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    """Per-sample losses and every parameter's gradient of two `_run`s of the same items agree."""
    (reference_losses, reference_grads), (losses, grads) = reference, other
    assert sorted(losses) == sorted(reference_losses)
    for key, value in reference_losses.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=1e-6)
    assert grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


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

    assert sorted(padded_losses) == sorted(item["key"] for item in items)
    _assert_same_run((padded_losses, padded_grads), (bucket_losses, bucket_grads))
    _assert_same_run((bucket_losses, bucket_grads), (masked_losses, masked_grads))


@pytest.mark.parametrize("canvas_step", [2, 4])
def test_canvases_equal_the_padded_batch_in_values_and_gradients(canvas_step: int, shapes_tokenizer) -> None:
    """Batches padded to canvases, bucketed or not, against the items' one padded batch at step 1:
    at step 4 every shape here has the one 64 x 64 canvas, so buckets mix shapes and pad them."""
    items = _items(shapes_tokenizer)
    multiple = canvas_step * PATCH
    collate = ItemCollator(shapes_tokenizer, canvas_multiple=multiple, whole_canvas=True)
    backbone = tiny_backbone().eval()
    head = torch.nn.Linear(backbone.config.hidden_size, 3)
    buckets = Batcher(2, lambda item: image_canvases(item, multiple))
    on_canvases = [collate(batch) for item in items if (batch := buckets.add(item)) is not None]
    padded_on_canvas = collate(items)
    assert padded_on_canvas["image"].shape[-2:] == canvas_shape((48, 48), multiple) != (48, 48)
    for batch in on_canvases:
        canvas = batch["image"].shape[-2:]
        assert all(canvas == canvas_shape(size, multiple) for size in batch["image_sizes"])
        assert batch[UNPADDED] == all(size == canvas for size in batch["image_sizes"])
        assert batch[UNPADDED] == bool(batch["pixel_mask"].all())
        # The pass spans the canvas's whole grid, whatever the batch's largest image: one
        # sequence length per canvas.
        assert batch[WHOLE_CANVAS] and Passes().max_patches(backbone, batch) == canvas.numel() // PATCH**2
    assert any(not batch[UNPADDED] for batch in on_canvases)  # some images are padded inside their canvas

    reference = _run(backbone, head, [ItemCollator(shapes_tokenizer)(items)])
    _assert_same_run(reference, _run(backbone, head, on_canvases))
    _assert_same_run(reference, _run(backbone, head, [padded_on_canvas]))


def test_canvas_step_one_is_the_batchs_largest_image(shapes_tokenizer) -> None:
    """Step 1 (a canvas unit of one patch) rounds nothing: the same buckets, the same tensors."""
    items = _items(shapes_tokenizer)
    assert [image_canvases(item, PATCH) for item in items] == [image_shapes(item) for item in items]
    plain, on_canvas = ItemCollator(shapes_tokenizer), ItemCollator(shapes_tokenizer, canvas_multiple=PATCH)
    for group in (items, items[2::3], items[:2]):
        expected, batch = plain(group), on_canvas(group)
        assert batch.keys() == expected.keys() and batch[UNPADDED] == expected[UNPADDED]
        for name, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(batch[name], value), name
            else:
                assert batch[name] == value, name


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
    # On canvases: a 32 x 32 image fills a canvas of 2 patches a side, not one of 4.
    assert ItemCollator(shapes_tokenizer, canvas_multiple=2 * PATCH)(square)[UNPADDED]
    assert not ItemCollator(shapes_tokenizer, canvas_multiple=4 * PATCH)(square)[UNPADDED]
    assert not ItemCollator(shapes_tokenizer, canvas_multiple=4 * PATCH)([pair, pair])[UNPADDED]


def test_batcher_fills_per_key_and_leaves_the_rest_oldest_first() -> None:
    keyed = Batcher(2, key=lambda item: item["k"])
    emitted = [keyed.add({"k": k, "i": i}) for i, k in enumerate("abcab")]
    assert [None if b is None else [x["i"] for x in b] for b in emitted] == [None, None, None, [0, 3], [1, 4]]
    assert [[x["i"] for x in b] for b in keyed.leftovers()] == [[2]]
    assert list(keyed.leftovers()) == []
    plain = batcher(2, image_buckets=False)  # without canvases: batches in stream order
    items = [{"image": torch.zeros(3, h, 16)} for h in (16, 32, 48)]
    assert [plain.add(item) for item in items] == [None, items[:2], None]
    # Canvases of 2 patches of 16: heights 16 and 32 share the 32 x 32 canvas, 48 has its own.
    canvases = batcher(2, image_buckets=True, canvas_multiple=32)
    assert [canvases.add(item) for item in items] == [None, items[:2], None]
    assert list(canvases.leftovers()) == [items[2:]]
    assert batcher(2, image_buckets=True).add(items[0]) is None  # step 1: 16 and 32 apart


def _assert_on_canvases(batches: list[dict], canvas_step: int) -> None:
    """Every batch of a bucketed stream has its bucket's canvas (step 1: its one image shape)."""
    for batch in batches:
        canvas = batch["image"].shape[-2:]
        assert all(canvas == canvas_shape(size, canvas_step * PATCH) for size in batch["image_sizes"])
        if canvas_step == 1:
            assert batch["pixel_mask"].all() and WHOLE_CANVAS not in batch
        else:
            assert batch[WHOLE_CANVAS]


def _assert_largest_image(batches: list[dict]) -> None:
    """Every batch of an unbucketed stream at step 1 is padded to its largest image, no further."""
    for batch in batches:
        sizes = batch["image_sizes"]
        assert tuple(batch["image"].shape[-2:]) == (max(h for h, _ in sizes), max(w for _, w in sizes))


@pytest.mark.parametrize("canvas_step", [1, 2])
def test_an_exact_pass_with_buckets_evaluates_every_item_once(
    canvas_step: int, shapes_world: Path, shapes_tokenizer
) -> None:
    val = shapes_world / "pretrain" / "val"
    plain = list(build_eval_loader(val, shapes_tokenizer, _config(num_workers=2)))
    config = _config(num_workers=2, image_buckets=True, canvas_step=canvas_step)
    bucketed = list(build_eval_loader(val, shapes_tokenizer, config))
    keys = Counter(key for batch in bucketed for key in batch["keys"])
    assert sum(keys.values()) == SHAPES_VAL and set(keys.values()) == {1}
    assert keys == Counter(key for batch in plain for key in batch["keys"])
    assert all(len(batch["keys"]) <= 8 for batch in bucketed)
    _assert_on_canvases(bucketed, canvas_step)
    _assert_largest_image(plain)
    assert any(not batch["pixel_mask"].all() for batch in plain)  # the world's shapes do vary
    if canvas_step > 1:  # nearby shapes share a canvas, so some images are padded inside it
        assert any(not batch["pixel_mask"].all() for batch in bucketed)


def test_unbucketed_batches_are_padded_to_their_canvas(shapes_world: Path, shapes_tokenizer) -> None:
    val = shapes_world / "pretrain" / "val"
    plain = list(build_eval_loader(val, shapes_tokenizer, _config()))
    on_canvases = list(build_eval_loader(val, shapes_tokenizer, _config(canvas_step=4)))
    assert [b["keys"] for b in on_canvases] == [b["keys"] for b in plain]  # the same batches
    for batch, reference in zip(on_canvases, plain, strict=True):
        height, width = reference["image"].shape[-2:]
        canvas = canvas_shape((height, width), 4 * PATCH)
        assert batch["image"].shape[-2:] == canvas
        assert torch.equal(batch["image"][..., :height, :width], reference["image"])
        assert torch.equal(batch["pixel_mask"][..., :height, :width], reference["pixel_mask"])
        assert not batch["pixel_mask"][..., height:, :].any() and not batch["pixel_mask"][..., width:].any()
        assert not batch["image"][..., height:, :].any() and not batch["image"][..., width:].any()


@pytest.mark.parametrize("canvas_step", [1, 2])
def test_the_bucketed_train_stream_is_deterministic_for_a_seed(
    canvas_step: int, shapes_world: Path, shapes_tokenizer
) -> None:
    source = Source(shapes_world / "pretrain" / "train")

    def first(seed: int = 0) -> list[dict]:
        config = _config(seed=seed, image_buckets=True, canvas_step=canvas_step)
        return list(islice(build_train_loader(source, shapes_tokenizer, config), 6))

    reference, again = first(), first()
    shapes = {tuple(batch["image"].shape[-2:]) for batch in reference}
    assert len(shapes) > 1  # buckets of several shapes, each batch of one
    _assert_on_canvases(reference, canvas_step)
    for a, b in zip(reference, again, strict=True):
        assert a["keys"] == b["keys"] and len(a["keys"]) == 8
        assert torch.equal(a["mlm_input_ids"], b["mlm_input_ids"]) and torch.equal(a["image"], b["image"])
        assert torch.equal(a["pixel_mask"], b["pixel_mask"])
    assert [b["keys"] for b in first(seed=1)] != [b["keys"] for b in reference]


@pytest.mark.parametrize("canvas_step", [1, 2])
def test_a_resume_reads_the_same_bucketed_batches_past_its_position(
    canvas_step: int, shapes_world: Path, shapes_tokenizer
) -> None:
    """What a resume after a stop does (`Trainer._open_stream`): the stream started at the saved
    step, read up to the micro-batches already read; with two workers taking turns."""
    source = Source(shapes_world / "pretrain" / "train")
    config = _config(num_workers=2, image_buckets=True, canvas_step=canvas_step)

    def stream():
        return iter(build_train_loader(source, shapes_tokenizer, config, start_step=7))

    uninterrupted = [batch["keys"] for batch in islice(stream(), 5)]
    resumed = stream()
    for _ in range(3):
        next(resumed)
    assert [batch["keys"] for batch in islice(resumed, 2)] == uninterrupted[3:]


@pytest.mark.parametrize(("image_buckets", "canvas_step"), [(False, 1), (True, 4)])
def test_the_loader_reads_data_image_buckets(image_buckets: bool, canvas_step: int, tmp_path: Path) -> None:
    cfg = compose_config(
        [
            f"data.image_buckets={str(image_buckets).lower()}",
            f"data.canvas_step={canvas_step}",
            f"paths.runs_dir={tmp_path}",
        ]
    )
    config = loader_config(cfg, 16, 0, 1, False)
    assert config.image_buckets is image_buckets
    assert config.canvas_step == canvas_step and config.canvas_multiple == 16 * canvas_step


@pytest.mark.parametrize("canvas_step", ["0", "-2"])
def test_a_canvas_step_below_one_is_refused_before_any_work(
    canvas_step: str, shapes_world: Path, tmp_path: Path
) -> None:
    cfg = fast_config(shapes_world, tmp_path, f"data.canvas_step={canvas_step}")
    with pytest.raises(ConfigError, match=rf"data\.canvas_step={canvas_step}: expected an integer >= 1"):
        validate_train_config(cfg, world_size=1)
