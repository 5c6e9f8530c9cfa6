"""Image canvases: batches whose images all share one (H, W), so no image is padded.

Fine-tuning and evaluation keep every patch, so a batch of mixed image shapes pads each image to
the batch's largest height and width: the padding patches cost compute, the key-padding mask they
need keeps flash attention out, and every new padded shape is a new graph for a static-shape
compile. After MinMaxResize every side is a multiple of the patch size, so images come in few
shapes (the paper's 384 / 639 at patch 32: a 384 side and a longer one of 384, 416, ..., 608,
landscape or portrait, and a few more for panoramas); grouping items by shape gives batches with
nothing to pad, each of one of those few shapes (``data.image_buckets``).

`Batcher` is what `BatchStream` fills items into, bucketed or not: one buffer per key, a batch
when a buffer fills, the rest on request at the end of a finite pass. Buffers fill in stream
order and come out in the order they were opened, so the batches are a function of the item
stream alone: the stream stays deterministic for a seed, rank and worker, and a resume that reads
it again up to a position reads the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

Item = dict[str, Any]


def image_shapes(item: Item) -> tuple[tuple[int, int], ...]:
    """The (h, w) of each of the item's images (one, or NLVR2's pair): its bucket."""
    images = item["images"] if "images" in item else [item["image"]]
    return tuple((int(image.shape[-2]), int(image.shape[-1])) for image in images)


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


def batcher(batch_size: int, image_buckets: bool) -> Batcher:
    """The batcher of ``data.image_buckets``: one buffer per image shape, or one for all."""
    return Batcher(batch_size, image_shapes if image_buckets else one_bucket)
