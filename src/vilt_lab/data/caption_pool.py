"""Every caption of a retrieval split, tokenized once: the negatives of retrieval fine-tuning, and
the texts of exact retrieval evaluation.

Retrieval fine-tuning scores each image against its own caption and 15 captions drawn from the
whole split (official `draw_false_text = 15`), so the draw needs every caption at hand, not only
those of the current batch. The pool keeps them as one padded int32 table (COCO's 567K captions
x 40 tokens is 90 MB) on the host, copies it to a device once, on first use there, and draws and
gathers on that device, without a host sync.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from vilt_lab.data.shards import iter_samples
from vilt_lab.utils.draws import draw_device

TOKENIZE_CHUNK = 4096


class _PoolTensors(NamedTuple):
    token_ids: torch.Tensor
    lengths: torch.Tensor
    first_caption: torch.Tensor
    caption_count: torch.Tensor


@dataclass
class CaptionPool:
    """Captions of a split in order (image by image), with the image each belongs to.

    token_ids: (N, T) int32, padded with the tokenizer's pad id; lengths: (N,) long;
    text_image: (N,) long, the index of each caption's image; keys: each image's shard key.
    """

    token_ids: torch.Tensor
    lengths: torch.Tensor
    text_image: torch.Tensor
    keys: list[str]
    pad_token_id: int = 0

    @classmethod
    def from_captions(
        cls,
        keys: Sequence[str],
        captions: Sequence[Sequence[str]],
        tokenizer: PreTrainedTokenizerBase,
        max_text_len: int,
    ) -> CaptionPool:
        """A pool of ``captions[i]`` (the captions of image ``keys[i]``)."""
        texts = [text for image_captions in captions for text in image_captions]
        if not texts:
            raise ValueError("a caption pool needs at least one caption")
        rows: list[list[int]] = []
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            encoded = tokenizer(
                texts[start : start + TOKENIZE_CHUNK],
                truncation=True,
                max_length=max_text_len,
                return_token_type_ids=False,
                return_attention_mask=False,
            )
            rows.extend(encoded["input_ids"])
        lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
        pad = tokenizer.pad_token_id or 0
        token_ids = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.int32)
        for i, row in enumerate(rows):
            token_ids[i, : len(row)] = torch.tensor(row, dtype=torch.int32)
        text_image = torch.repeat_interleave(torch.tensor([len(c) for c in captions]))
        return cls(token_ids, lengths, text_image, list(keys), pad)

    @classmethod
    def from_shards(
        cls,
        shards: str | os.PathLike[str] | Iterable[str],
        tokenizer: PreTrainedTokenizerBase,
        max_text_len: int,
    ) -> CaptionPool:
        """Every non-empty caption of ``shards`` (a split directory, pattern or list), in order.

        Reads the whole split once (images included: tar members cannot be skipped unread).
        """
        keys, captions = [], []
        for key, _, meta in iter_samples(shards):
            usable = [c for c in meta.get("captions") or [] if isinstance(c, str) and c.strip()]
            if usable:
                keys.append(key)
                captions.append(usable)
        if not keys:
            raise ValueError(f"no captions in {shards}: retrieval needs a split of image-caption samples")
        return cls.from_captions(keys, captions, tokenizer, max_text_len)

    def __len__(self) -> int:
        return int(self.lengths.numel())

    @property
    def num_images(self) -> int:
        return len(self.keys)

    def image_of_key(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}

    def texts(self) -> list[list[int]]:
        """Every caption's token ids at its real length."""
        return [row[:n].tolist() for row, n in zip(self.token_ids, self.lengths.tolist(), strict=True)]

    def __post_init__(self) -> None:
        # Each image's captions are one contiguous run (from_captions lays them out image by
        # image): its first caption and count, what a draw needs to skip the image's own.
        counts = torch.bincount(self.text_image, minlength=self.num_images)
        self.first_caption = torch.cumsum(counts, 0) - counts
        self.caption_count = counts
        self.one_image_only = bool((counts == len(self)).any())
        self._on_device: dict[torch.device, _PoolTensors] = {}

    def on(self, device: torch.device | str) -> _PoolTensors:
        """The tables a step reads, on `device`: copied there once, on first use, and kept."""
        device = torch.device(device)
        if device not in self._on_device:
            tables = (self.token_ids, self.lengths, self.first_caption, self.caption_count)
            self._on_device[device] = _PoolTensors(*(t.to(device) for t in tables))
        return self._on_device[device]

    def draw_negatives(
        self,
        images: torch.Tensor,
        count: int,
        generator: torch.Generator | None,
        exclude_own: bool = True,
    ) -> torch.Tensor:
        """(B, count) long caption indices drawn uniformly for each of the (B,) ``images``.

        With ``exclude_own`` no draw is a caption of the image itself: each is drawn uniformly
        among the pool's other captions (a draw over ``len(pool) - own`` slots, the slots from
        the image's first caption on shifted past its own), with no redraw and so no host sync.
        The official code draws from the whole split, so a negative can be another caption of
        the same image, or the positive itself. The draws come from ``generator`` alone (on its
        device), so a resumed step draws the same.
        """
        device = draw_device(generator)
        images = images.to(device)
        if not exclude_own:
            return torch.randint(len(self), (images.numel(), count), generator=generator, device=device)
        if self.one_image_only:
            raise ValueError("every caption of the pool belongs to one image: no negative can be drawn")
        pool = self.on(device)
        first, own = pool.first_caption[images, None], pool.caption_count[images, None]
        # Uniform on 0 .. len - own - 1: a 62-bit draw modulo a count below 2^31 (bias < 2^-31).
        wide = torch.randint(0, 2**62, (images.numel(), count), generator=generator, device=device)
        slot = wide % (len(self) - own)
        return slot + own * (slot >= first)

    def tokens(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) (len(index), T) long on ``device``, T the pool's width (its
        longest caption): gathered where the pool's copy lives, so the size needs no host sync."""
        pool = self.on(device)
        index = index.to(device)
        input_ids = pool.token_ids[index].long()
        attention_mask = (
            torch.arange(input_ids.shape[1], device=device)[None] < pool.lengths[index, None]
        ).long()
        return input_ids, attention_mask
