"""A random batch as the data loader yields it."""

from __future__ import annotations

import torch

from vilt_lab.data.masking import mask_tokens

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
        "image": image,
        "pixel_mask": pixel_mask,
    }
