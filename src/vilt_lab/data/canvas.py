"""Image canvases: batches whose images all share one (H, W), so no image is padded.

Fine-tuning and evaluation keep every patch, so a batch of mixed image shapes pads each image to
the batch's largest height and width: the padding patches cost compute, the key-padding mask they
need keeps flash attention out, and every new padded shape is a new graph for a static-shape
compile. After MinMaxResize every side is a multiple of the patch size, so images come in few
shapes (the paper's 384 / 639 at patch 32: a 384 side and a longer one of 384, 416, ..., 608,
landscape or portrait, and a few more for panoramas); grouping items by shape gives batches with
nothing to pad, each of one of those few shapes (``data.image_buckets``).

A few fixed canvases bound the shapes further (``data.canvas_step``): each image's canvas is its
height and width in patches rounded up to a multiple of the step, a batch is padded to its
largest canvas, and with buckets the canvas is the bucket, so items of nearby shapes share one and
every batch of a bucket has the canvas's shape, at the price of the padding inside it. A step of
1 rounds nothing (MinMaxResize already makes every side a multiple of the patch).

`Batcher` is what `BatchStream` fills items into, bucketed or not: one buffer per key, a batch
when a buffer fills, the rest on request at the end of a finite pass. Buffers fill in stream
order and come out in the order they were opened, so the batches are a function of the item
stream alone: the stream stays deterministic for a seed, rank and worker, and a resume that reads
it again up to a position reads the same batches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterator
from typing import Any

Item = dict[str, Any]
Size = tuple[int, int]  # an image's (height, width) in pixels


def canvas_side(pixels: int, multiple: int) -> int:
    """``pixels`` rounded up to a multiple of ``multiple`` (a canvas side's unit, in pixels)."""
    return -(-pixels // multiple) * multiple


def canvas_shape(shape: Size, multiple: int) -> Size:
    """The canvas of an image of ``shape``: each side rounded up to ``multiple`` pixels."""
    return canvas_side(shape[0], multiple), canvas_side(shape[1], multiple)


def whole_canvas(canvas_multiple: int, patch_size: int) -> bool:
    """Whether batches on canvases of ``canvas_multiple`` pixels span their canvas's whole grid of
    image positions (``data.canvas_step`` > 1: the collate's `WHOLE_CANVAS` flag)."""
    return canvas_multiple > patch_size


def image_shapes(item: Item) -> tuple[Size, ...]:
    """The (h, w) of each of the item's images (one, or NLVR2's pair)."""
    images = item["images"] if "images" in item else [item["image"]]
    return tuple((int(image.shape[-2]), int(image.shape[-1])) for image in images)


def image_canvases(item: Item, multiple: int) -> tuple[Size, ...]:
    """The canvas of each of the item's images, sides in units of ``multiple`` pixels: its bucket
    (with a unit of one patch, its image shapes)."""
    return tuple(canvas_shape(shape, multiple) for shape in image_shapes(item))


def one_bucket(item: Item) -> Hashable:
    """Every item in the same bucket: batches in stream order, as without canvases."""
    return ()


class Batcher:
    """Items -> lists of ``batch_size`` items with the same ``key``.

    An item stays in its key's buffer until the buffer holds a batch, so with canvases a worker
    holds at most (shapes - 1) x (batch_size - 1) decoded items beyond the one batch it emits.
    """

    def __init__(self, batch_size: int, key: Callable[[Item], Hashable] = one_bucket) -> None:
        self.batch_size = batch_size
        self.key = key
        self.buffers: dict[Hashable, list[Item]] = {}

    def add(self, item: Item) -> list[Item] | None:
        """Put ``item`` in its buffer; that buffer's batch when the item fills it, else None."""
        key = self.key(item)
        buffer = self.buffers.setdefault(key, [])
        buffer.append(item)
        if len(buffer) < self.batch_size:
            return None
        del self.buffers[key]
        return buffer

    def leftovers(self) -> Iterator[list[Item]]:
        """The partial buffers, oldest first, emptied: the end of a finite pass (evaluation
        evaluates every item once, so nothing may stay behind)."""
        buffers, self.buffers = self.buffers, {}
        yield from buffers.values()


def batcher(batch_size: int, image_buckets: bool, canvas_multiple: int = 1) -> Batcher:
    """The batcher of ``data.image_buckets``: one buffer per canvas (sides rounded up to
    ``canvas_multiple`` pixels; 1: per image shape), or one for all."""
    if not image_buckets:
        return Batcher(batch_size)
    return Batcher(batch_size, functools.partial(image_canvases, multiple=canvas_multiple))
