"""Exact image-text retrieval scores: every image of a split against every text, full cross-encoder.

ViLT has no separate image and text towers, so retrieval needs N_images x N_texts joint passes
(5K x 25K for COCO). The official `compute_irtr_recall` already computes the image embedding
once per image and expands it over a text batch; here, in addition, texts are sorted by length
and each batch is padded only to its own longest text instead of to 40, which on captions of
~12 tokens removes most of the text side of every attention and MLP.

Each process scores its own share of the images (`score_images`); `gather_scores` assembles the
full matrix with a single object gather at the end, so shares of different sizes cannot hang.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence, Sized
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import torch

from vilt_lab.data.normalize import normalize_images
from vilt_lab.model import ViltBackbone
from vilt_lab.utils.progress import ProgressStyle, progress_bar

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Gather = Callable[[Any], list[Any]]


class TextBatch(NamedTuple):
    """(B, T) ids padded to the batch's longest text, their (B, T) bool attention mask, and
    whether every text fills T (known here on the host: attention then needs no mask)."""

    ids: torch.Tensor
    mask: torch.Tensor
    unpadded: bool


def length_batches(
    text_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int = 0,
    device: torch.device | None = None,
) -> tuple[list[TextBatch], torch.Tensor]:
    """Texts sorted by length and cut into padded batches: ([TextBatch, ...], order).

    Each batch is (B, T) ids padded with `pad_token_id` to its own longest text and a (B, T) bool
    attention mask. `order[j]` is the original index of the j-th text in batch order, so scores
    computed batch after batch land in the original columns with `out[:, order] = scores`.
    """
    if batch_size < 1:
        raise ValueError(f"text batch size must be positive, got {batch_size}")
    if not text_ids:
        raise ValueError("no texts to score")
    lengths = torch.tensor([len(ids) for ids in text_ids])
    if int(lengths.min()) == 0:
        raise ValueError(f"text {int(lengths.argmin())} is empty (each text needs at least [CLS] and [SEP])")
    # Stable, so texts of equal length keep their original order (deterministic batches).
    order = lengths.argsort(stable=True)
    batches = []
    for chunk in order.split(batch_size):
        T = int(lengths[chunk].max())
        ids = torch.full((len(chunk), T), pad_token_id, dtype=torch.long)
        for row, i in enumerate(chunk.tolist()):
            ids[row, : len(text_ids[i])] = torch.as_tensor(text_ids[i], dtype=torch.long)
        mask = torch.arange(T) < lengths[chunk, None]
        batches.append(TextBatch(ids.to(device), mask.to(device), unpadded=bool(mask.all())))
    return batches, order


def score_images(
    backbone: ViltBackbone,
    score_fn: ScoreFn,
    images: Iterable[tuple[int, torch.Tensor]],
    text_ids: Sequence[Sequence[int]],
    *,
    text_batch_size: int = 64,
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    progress: ProgressStyle | bool = True,
    total_images: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score this process's images against every text: (image_index (n,), scores (n, N_texts)).

    Args:
        backbone: the (unwrapped) backbone; put in eval mode for the call and restored after.
        score_fn: pooled (B, D) -> (B,) scores, e.g. the retrieval head, or the ITM head's match
            logit (column 1) for zero-shot retrieval.
        images: (global image index, uint8 (3, h, w) image) pairs, this process's share.
        text_ids: every text of the split as token ids, [CLS] ... [SEP], unpadded.
        text_batch_size: texts per joint pass (the official code uses 64).
        pad_token_id: id the shorter texts of a batch are padded with (masked out of attention).
        device: where to run; by default the backbone's device.
        autocast: optional context-manager factory around the model calls (`accelerator.autocast`).
        progress: progress over (image, text) pairs with pairs/s and time left (a bar on a
            terminal, timed lines in a file: utils.progress).
        total_images: images behind the bar's total when `images` has no length (or the bar
            should count more than this share).

    Returns the global image indices in iteration order and float32 CPU scores whose columns
    follow the original text order.
    """
    device = torch.device(device) if device is not None else next(backbone.parameters()).device
    batches, order = length_batches(text_ids, text_batch_size, pad_token_id, device)
    autocast = autocast or contextlib.nullcontext
    n_texts = len(text_ids)
    if total_images is None and isinstance(images, Sized):
        total_images = len(images)
    index, rows = [], []
    was_training = backbone.training
    backbone.eval()
    bar = progress_bar(
        desc="retrieval",
        style=progress,
        total=None if total_images is None else total_images * n_texts,
        unit="pair",
        unit_scale=True,
    )
    try:
        with torch.inference_mode(), bar:
            for image_index, image in images:
                with autocast():
                    row = _score_one_image(backbone, score_fn, image.to(device), batches)
                # One host sync per image: keeps the bar honest and the score matrix off the GPU.
                rows.append(row.float().cpu())
                index.append(image_index)
                bar.update(n_texts)
    finally:
        backbone.train(was_training)
    sorted_scores = torch.stack(rows) if rows else torch.empty(0, n_texts)
    scores = torch.empty_like(sorted_scores)
    scores[:, order] = sorted_scores
    return torch.tensor(index, dtype=torch.long), scores


def _score_one_image(
    backbone: ViltBackbone,
    score_fn: ScoreFn,
    image: torch.Tensor,
    batches: list[TextBatch],
) -> torch.Tensor:
    """Scores of one uint8 (3, h, w) image against every text batch, concatenated in batch order."""
    pixel_mask = torch.ones(1, *image.shape[-2:], dtype=torch.bool, device=image.device)
    # All patches (max_image_len=-1), as the official evaluation, but in raster order: deterministic.
    # The whole image is valid, so its patch count is known here: no count read from the device,
    # and under `trainer.compile` the embedding is one graph.
    patch = backbone.config.patch_size
    tokens, token_mask, _ = backbone.image_tokens(
        normalize_images(image[None], pixel_mask),
        pixel_mask,
        max_patches=(image.shape[-2] // patch) * (image.shape[-1] // patch),
    )
    scores = []
    for ids, text_mask, unpadded in batches:
        B = ids.shape[0]
        # expand, not repeat: a stride-0 view; `encode`'s concatenation is the one copy made.
        # rows=1: the last block computes only the text [CLS] the pooled score reads (exact).
        # The whole image has no fill, so texts of one length leave nothing to mask.
        features, _ = backbone.encode(
            backbone.embed_text(ids),
            text_mask,
            tokens.expand(B, -1, -1),
            token_mask.expand(B, -1),
            rows=1,
            unpadded=unpadded,
        )
        batch_scores = score_fn(backbone.forward_head(features))
        if batch_scores.shape != (B,):
            raise ValueError(
                f"score_fn must return one score per pair, shape ({B},); got {tuple(batch_scores.shape)}"
            )
        scores.append(batch_scores)
    return torch.cat(scores)


def gather_scores(
    image_index: torch.Tensor, scores: torch.Tensor, num_images: int, gather: Gather | None = None
) -> torch.Tensor:
    """The full (num_images, N_texts) score matrix from every process's share, rows by image index.

    gather: takes this process's object and returns the list of every process's object, e.g.
        `lambda obj: accelerate.utils.gather_object([obj])` (which flattens one list level), or a
        wrapper around `torch.distributed.all_gather_object`; None for a single process. It is
        called once, with CPU tensors, so shares of any sizes meet in the same collective.

    Raises RuntimeError when an image index is out of range, missing or in more than one row (a
    `DistributedSampler` pads the last shard by repeating images: shard without padding).
    """
    mine = (image_index.cpu(), scores.cpu())
    shares = [mine] if gather is None else gather(mine)
    index = torch.cat([share[0] for share in shares])
    rows = torch.cat([share[1] for share in shares])
    bad = index[(index < 0) | (index >= num_images)]
    if len(bad):
        raise RuntimeError(f"image indices {bad[:10].tolist()} are outside [0, {num_images})")
    counts = torch.bincount(index, minlength=num_images)
    missing = (counts == 0).nonzero().flatten()
    repeated = (counts > 1).nonzero().flatten()
    if len(missing) or len(repeated):
        raise RuntimeError(
            f"retrieval shares must hold every image exactly once: {len(missing)} missing "
            f"(first {missing[:10].tolist()}), {len(repeated)} scored twice or more "
            f"(first {repeated[:10].tolist()})"
        )
    full = rows.new_empty(num_images, rows.shape[1])
    full[index] = rows
    return full
