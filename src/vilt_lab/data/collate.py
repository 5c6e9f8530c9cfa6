"""Batch assembly inside the loader workers: pad images, tokenize, mask.

Batching in the workers (not in the DataLoader) ships one pickled dict per batch instead of one
per sample (WebDataset FAQ 0187), and keeps tokenization and masking off the training process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from vilt_lab.objectives.mlm import mask_tokens, word_ids_from_encoding


def pad_images(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 (3, h_i, w_i) images into (B, 3, H, W) with the batch's largest H and W.

    Each image sits at the top-left and the rest is 0, as in the official collate; the returned
    ``pixel_mask`` (B, H, W, bool) is True on real pixels, so padding never relies on pixel values.
    """
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    # Uninitialised, then each slot written once (image, then zeros right of and below it): a
    # zero-filled batch would write the whole batch twice, and images mostly fill their slot.
    batch = torch.empty(len(images), 3, height, width, dtype=torch.uint8)
    pixel_mask = torch.zeros(len(images), height, width, dtype=torch.bool)
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        batch[i, :, :h, :w] = image
        batch[i, :, :h, w:] = 0
        batch[i, :, h:] = 0
        pixel_mask[i, :h, :w] = True
    return batch, pixel_mask


TEXT_PADDING = ("longest", "max_length")


class ImageTextCollator:
    """``[{"image": uint8 (3, h, w), "text": str}, ...]`` -> one pre-training batch.

    Returns ``input_ids``, ``attention_mask``, ``mlm_input_ids``, ``mlm_labels`` (all (B, T)
    long; labels -100 off the masked tokens), ``image`` (B, 3, H, W) uint8
    and ``pixel_mask`` (B, H, W) bool, plus ``keys`` (the samples' shard keys) when the samples
    carry a ``key``. MLM is whole-word by default, from the fast tokenizer's
    word ids, so a word split into pieces is masked as a unit (paper §3.3).

    ``text_padding="longest"`` pads to the batch's longest text (T <= ``max_text_len``);
    ``"max_length"`` always pads to ``max_text_len``, as the official code does. The model's
    outputs on real tokens are the same either way (padding keys are masked and positions are
    absolute), but short captions cost much less: on the shapes world T drops from 40 to about
    21 and a pre-training step runs 1.24x faster on CPU.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_text_len: int = 40,
        mlm_probability: float = 0.15,
        whole_word: bool = True,
        text_padding: str = "longest",
    ) -> None:
        if text_padding not in TEXT_PADDING:
            raise ValueError(f"data.text_padding={text_padding!r}: expected one of {TEXT_PADDING}")
        if not tokenizer.is_fast:
            raise ValueError("whole-word masking needs a fast tokenizer (word ids)")
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.mlm_probability = mlm_probability
        self.whole_word = whole_word
        self.text_padding = text_padding

    def __call__(
        self, samples: Sequence[dict[str, Any]], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Collate ``samples``; ``generator`` makes the masking reproducible."""
        encoding = self.tokenizer(
            [sample["text"] for sample in samples],
            padding=self.text_padding,
            truncation=True,
            max_length=self.max_text_len,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        mlm_input_ids, mlm_labels = mask_tokens(
            encoding["input_ids"],
            word_ids_from_encoding(encoding),
            vocab_size=len(self.tokenizer),
            mask_token_id=self.tokenizer.mask_token_id,
            mlm_probability=self.mlm_probability,
            whole_word=self.whole_word,
            generator=generator,
        )
        image, pixel_mask = pad_images([sample["image"] for sample in samples])
        keys = {"keys": [sample["key"] for sample in samples]} if "key" in samples[0] else {}
        return {
            **keys,
            "input_ids": encoding["input_ids"],
            "attention_mask": encoding["attention_mask"],
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
            "image": image,
            "pixel_mask": pixel_mask,
        }
