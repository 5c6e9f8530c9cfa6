"""Random batches: what the data loader yields (`make_batch`) and what a backbone takes
(`model_inputs`), padded as the real ones are."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch

from vilt_lab.data.masking import mask_tokens, masked_count

# The loader batch: four pairs, images of different sizes and texts of different lengths.
VOCAB, CLS, SEP, MASK = 1000, 2, 3, 4
IMAGE_SIZES = [(64, 96), (128, 64), (96, 96), (32, 48)]  # (H, W), padded to (128, 96)
TEXT_LENGTHS = [12, 5, 8, 2]  # the last caption is [CLS] [SEP] only: nothing for WPA to align


def make_batch(seed: int = 0, mlm_probability: float = 0.3) -> dict[str, torch.Tensor]:
    """Random captions and uint8 images of different sizes, padded, as the data pipeline batches them."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(TEXT_LENGTHS), max(TEXT_LENGTHS)
    H, W = max(h for h, _ in IMAGE_SIZES), max(w for _, w in IMAGE_SIZES)
    image = torch.zeros(B, 3, H, W, dtype=torch.uint8)
    pixel_mask = torch.zeros(B, H, W, dtype=torch.long)
    input_ids = torch.zeros(B, T, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    word_ids = torch.full((B, T), -1)
    for i, ((h, w), n) in enumerate(zip(IMAGE_SIZES, TEXT_LENGTHS, strict=True)):
        image[i, :, :h, :w] = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        pixel_mask[i, :h, :w] = 1
        input_ids[i, :n] = torch.randint(5, VOCAB, (n,), generator=g)
        input_ids[i, 0], input_ids[i, n - 1] = CLS, SEP
        attention_mask[i, :n] = 1
        word_ids[i, 1 : n - 1] = torch.arange(n - 2) // 2  # two pieces per word
    mlm_input_ids, mlm_labels = mask_tokens(
        input_ids,
        word_ids,
        vocab_size=VOCAB,
        mask_token_id=MASK,
        mlm_probability=mlm_probability,
        generator=g,
    )
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mlm_input_ids": mlm_input_ids,
        "mlm_labels": mlm_labels,
        "mlm_count": masked_count(mlm_labels),
        "image": image,
        "pixel_mask": pixel_mask,
        "image_sizes": list(IMAGE_SIZES),
    }


class ModelInputs(NamedTuple):
    """A backbone's inputs in its positional order, named as HF's ViLT classes name them."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor


_PIXELS: dict[str, Callable[..., torch.Tensor]] = {
    "normal": lambda shape, g: torch.randn(shape, generator=g),
    "uniform": lambda shape, g: torch.rand(shape, generator=g) * 2 - 1,  # the normalised range
}


def model_inputs(
    text_lengths: Sequence[int],
    image_sizes: Sequence[Sequence[tuple[int, int]]],
    *,
    vocab: int,
    seed: int = 0,
    first_id: int = 5,
    pixels: Literal["normal", "uniform"] = "uniform",
    padded_pixels: Literal["random", "zero"] = "random",
    padded_ids: Literal["random", "zero"] = "random",
    images_first: bool = False,
) -> ModelInputs:
    """Random normalised backbone inputs: texts of `text_lengths` tokens padded to the longest, and
    per image slot the images `image_sizes[slot][text]` ((H, W)) padded to the largest.

    One slot gives images of (B, 3, H, W), several (B, slots, 3, H, W) as NLVR2 takes them. Token
    ids are drawn from [first_id, vocab) (5 skips BERT's special tokens), pixels from N(0, 1) or
    U[-1, 1). Padding holds random values (one draw over the whole tensor, so that a test can see
    that padding does not leak) or zeros (each image drawn over its own area, slot by slot).
    `images_first` draws the pixels before the ids. Every choice changes the values drawn: each
    test keeps the draws its expected numbers were measured on.
    """
    g = torch.Generator().manual_seed(seed)
    batch, slots = len(text_lengths), len(image_sizes)
    height = max(h for per_text in image_sizes for h, _ in per_text)
    width = max(w for per_text in image_sizes for _, w in per_text)
    draw = _PIXELS[pixels]

    def texts() -> tuple[torch.Tensor, torch.Tensor]:
        input_ids = torch.randint(first_id, vocab, (batch, max(text_lengths)), generator=g)
        attention_mask = torch.zeros_like(input_ids)
        for i, n in enumerate(text_lengths):
            attention_mask[i, :n] = 1
        if padded_ids == "zero":
            input_ids[attention_mask == 0] = 0
        return input_ids, attention_mask

    def images() -> tuple[torch.Tensor, torch.Tensor]:
        pixel_mask = torch.zeros(batch, slots, height, width, dtype=torch.long)
        if padded_pixels == "random":
            pixel_values = draw((batch, slots, 3, height, width), g)
        else:
            pixel_values = torch.zeros(batch, slots, 3, height, width)
        for j, per_text in enumerate(image_sizes):
            for i, (h, w) in enumerate(per_text):
                pixel_mask[i, j, :h, :w] = 1
                if padded_pixels == "zero":
                    pixel_values[i, j, :, :h, :w] = draw((3, h, w), g)
        if slots == 1:
            return pixel_values[:, 0], pixel_mask[:, 0]
        return pixel_values, pixel_mask

    if images_first:
        pixel_values, pixel_mask = images()
        input_ids, attention_mask = texts()
    else:
        input_ids, attention_mask = texts()
        pixel_values, pixel_mask = images()
    return ModelInputs(input_ids, attention_mask, pixel_values, pixel_mask)
