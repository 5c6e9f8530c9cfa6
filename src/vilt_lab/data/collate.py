"""Batch assembly inside the loader workers: tokenize, pad images, then the task's collate steps.

Batching in the workers (not in the DataLoader) ships one pickled dict per batch instead of one
per sample (WebDataset FAQ 0187), and keeps tokenization and masking off the training process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from vilt_lab.data.canvas import canvas_side


def pad_images(images: Sequence[torch.Tensor], canvas_multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 (3, h_i, w_i) images into (B, 3, H, W): the batch's largest H and W, each rounded
    up to a multiple of ``canvas_multiple`` pixels (``data.canvas_step`` patches; 1: none).

    Each image sits at the top-left and the rest is 0, as in the official collate; the returned
    ``pixel_mask`` (B, H, W, bool) is True on real pixels, so padding never relies on pixel values.
    """
    height = canvas_side(max(image.shape[1] for image in images), canvas_multiple)
    width = canvas_side(max(image.shape[2] for image in images), canvas_multiple)
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


def fill_the_canvas(images: Sequence[torch.Tensor], canvas: torch.Size) -> bool:
    """Whether every image has the (H, W) of ``canvas``, the padded batch's: none is padded."""
    return all(image.shape[-2:] == canvas for image in images)


# The batch's host-side flag: no image is padded and every text fills the batch's length, so no
# position of a pass over the batch's own texts and images is padding (`ViltBackbone.encode`'s
# `unpadded`: no attention mask, flash attention on CUDA). A Python bool, decided here on the CPU
# where the shapes are known, so the step never reads a mask on the device to find out. A pass
# that swaps in other texts (retrieval's negatives) must not carry it over.
UNPADDED = "unpadded"
# The batch's host-side flag for fixed canvases (``data.canvas_step`` > 1): its padded (H, W) is a
# canvas, and a pass that keeps every patch spans the canvas's whole grid of image positions (the
# padding ones masked; `vilt_lab.objectives.passes.Passes.max_patches`), so every batch of one
# canvas has one sequence length, not one per largest image: one graph per canvas for a static
# compile.
WHOLE_CANVAS = "whole_canvas"

TEXT_PADDING = ("longest", "max_length", "bucket")
# data.text_padding=bucket pads to the next multiple of this: at most max_text_len / 8 text
# lengths (5 at 40), so a model compiled for static shapes (trainer.compile_dynamic=false) compiles
# once per bucket instead of once per batch length, and matrix shapes stay multiples of 8 (what
# tensor cores want in bf16), for at most 7 padding positions beyond the batch's longest text.
TEXT_BUCKET = 8

# (samples, their tokenized texts, the batch's generator) -> more batch fields. MLM masking
# (vilt_lab.data.masking.MaskingStep) and each task's targets (vilt_lab.data.targets) are steps.
CollateStep = Callable[[Sequence[dict[str, Any]], BatchEncoding, "torch.Generator | None"], dict[str, Any]]

# samples -> the samples the batch is made of: new pairs made from the decoded ones before
# anything is tokenized (MixGen, vilt_lab.data.mixgen).
SampleMix = Callable[[Sequence[dict[str, Any]]], Sequence[dict[str, Any]]]


class ItemCollator:
    """``[{"image": uint8 (3, h, w) or "images": [uint8 (3, h, w), ...], "text": str}, ...]`` -> a batch.

    Returns ``input_ids``, ``attention_mask`` ((B, T) long), ``image`` (B, 3, H, W) uint8 and
    ``pixel_mask`` (B, H, W) bool, or for items of k images (NLVR2's pairs) ``image``
    (B, k, 3, H, W) and ``pixel_mask`` (B, k, H, W), all padded to the batch's largest image (its
    sides rounded up to ``canvas_multiple`` pixels: `pad_images`) as HF's
    `ViltForImagesAndTextClassification` takes them; ``keys`` (the samples' shard keys) when
    the samples carry a ``key``; ``source`` (the index of each sample's dataset in the training
    mix, which ITM's same-source negatives read) when they carry a ``source``; for one image per
    item ``image_sizes``, each image's (h, w) before padding; `UNPADDED` (a bool: nothing padded,
    e.g. items that fill their canvas from `vilt_lab.data.canvas` with texts of one length);
    `WHOLE_CANVAS` (True) when ``whole_canvas`` (``data.canvas_step`` > 1); then
    whatever each of ``steps`` adds (MLM masking in pre-training, the answers of VQA, ...).
    ``mix`` (MixGen in a pre-training stream) first replaces samples by mixed pairs, so every
    field and step sees the mixed ones.

    ``source`` and ``image_sizes`` are lists of ints, not tensors, so they stay on the host when
    the batch moves to the device: the step reads them there (the ITM negatives' draw, the patch
    sequence's length) without waiting for the device.

    ``text_padding="longest"`` pads to the batch's longest text (T <= ``max_text_len``);
    ``"max_length"`` always pads to ``max_text_len``, as the official code does; ``"bucket"`` pads
    to the next multiple of `TEXT_BUCKET` (8, 16, ..., ``max_text_len``). The model's
    outputs on real tokens are the same either way (padding keys are masked and positions are
    absolute), but short captions cost much less: on the shapes world T drops from 40 to about
    21 and a pre-training step runs 1.24x faster on CPU.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_text_len: int = 40,
        text_padding: str = "longest",
        steps: Sequence[CollateStep] = (),
        mix: SampleMix | None = None,
        canvas_multiple: int = 1,
        whole_canvas: bool = False,
    ) -> None:
        if text_padding not in TEXT_PADDING:
            raise ValueError(f"data.text_padding={text_padding!r}: expected one of {TEXT_PADDING}")
        if text_padding == "bucket" and max_text_len % TEXT_BUCKET:
            raise ValueError(
                f"data.text_padding=bucket pads to multiples of {TEXT_BUCKET} up to data.max_text_len, "
                f"which must be one (it is {max_text_len})"
            )
        if not tokenizer.is_fast:
            raise ValueError("the collator needs a fast tokenizer (word ids for whole-word masking)")
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.text_padding = text_padding
        # The tokenizer's arguments: a bucket is the longest text rounded up to TEXT_BUCKET.
        bucket = text_padding == "bucket"
        self._padding = "longest" if bucket else text_padding
        self._pad_to_multiple_of = TEXT_BUCKET if bucket else None
        self.steps = tuple(steps)
        self.mix = mix
        self.canvas_multiple = canvas_multiple
        self.whole_canvas = whole_canvas

    def __call__(
        self, samples: Sequence[dict[str, Any]], generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """Collate ``samples``; ``generator`` makes the steps' random draws (masking) reproducible."""
        if self.mix is not None:
            samples = self.mix(samples)
        encoding = self.tokenizer(
            [sample["text"] for sample in samples],
            padding=self._padding,
            pad_to_multiple_of=self._pad_to_multiple_of,
            truncation=True,
            max_length=self.max_text_len,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        batch: dict[str, Any] = {"keys": [sample["key"] for sample in samples]} if "key" in samples[0] else {}
        if "images" in samples[0]:
            per_item = len(samples[0]["images"])
            images = [image for sample in samples for image in sample["images"]]
            image, pixel_mask = pad_images(images, self.canvas_multiple)
            image, pixel_mask = image.unflatten(0, (-1, per_item)), pixel_mask.unflatten(0, (-1, per_item))
        else:
            images = [sample["image"] for sample in samples]
            image, pixel_mask = pad_images(images, self.canvas_multiple)
            batch["image_sizes"] = [tuple(sample["image"].shape[1:]) for sample in samples]
        batch[UNPADDED] = fill_the_canvas(images, image.shape[-2:]) and bool(encoding["attention_mask"].all())
        if self.whole_canvas:
            batch[WHOLE_CANVAS] = True
        if "source" in samples[0]:
            batch["source"] = [int(sample["source"]) for sample in samples]
        batch.update(
            input_ids=encoding["input_ids"],
            attention_mask=encoding["attention_mask"],
            image=image,
            pixel_mask=pixel_mask,
        )
        for step in self.steps:
            batch.update(step(samples, encoding, generator))
        return batch
