"""Exact retrieval in the model benchmark: our evaluation engine against the official algorithm.

Both score every image against every caption with the same weights and the same retrieval head:

* ours: `evaluation.retrieval.score_images`, what `vilt-eval task=irtr` runs: each image's
  tokens computed once, texts sorted by length and each batch of 64 padded to its own longest;
* HF: `bench.model_hf.official_retrieval_scores`, the official `compute_irtr_recall` on HF's
  `ViltModel`: each image's `visual_embed` once, every batch of 64 texts padded to 40.

Captions are random word pieces with COCO-like lengths (mean ~14 with [CLS]/[SEP]): the length
is what ours gains on, so a benchmark on 40-token texts would hide it and one on short texts
flatter it. Images are 384x512 (a 640x480 COCO photo after MinMaxResize(384, 640): 192 patches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import ViltModel

from vilt_lab.bench.model_hf import OFFICIAL_TEXT_BATCH, official_retrieval_scores, pad_texts
from vilt_lab.bench.model_pretrain import CLS_ID, SEP_ID
from vilt_lab.data.normalize import normalize_images
from vilt_lab.evaluation.retrieval import score_images
from vilt_lab.model import RetrievalHead, ViltBackbone

# Token lengths with [CLS] and [SEP]: COCO's captions average about 14 word pieces (F30K's a
# little more), from about 8 to the 40 the tokenizer truncates at.
CAPTION_MEAN, CAPTION_STD, CAPTION_MIN = 14.0, 3.0, 8
RETRIEVAL_IMAGE_HW = (384, 512)
# The exact evaluations the projection is made for: (images, captions).
EXACT_SPLITS = {"F30K 1K test (1K x 5K)": (1_000, 5_000), "COCO 5K test (5K x 25K)": (5_000, 25_000)}


@dataclass(frozen=True)
class RetrievalData:
    """uint8 images (ours), the same images normalised (HF), caption ids unpadded (ours) and
    padded to 40 (HF)."""

    images: list[torch.Tensor]
    pixel_values: list[torch.Tensor]
    text_ids: list[list[int]]
    padded_ids: torch.Tensor
    padded_mask: torch.Tensor

    @property
    def pairs(self) -> int:
        return len(self.images) * len(self.text_ids)

    @property
    def mean_text_len(self) -> float:
        return sum(len(t) for t in self.text_ids) / len(self.text_ids)


def caption_lengths(n: int, max_len: int, generator: torch.Generator) -> list[int]:
    """``n`` token lengths, normal around `CAPTION_MEAN`, clipped to [`CAPTION_MIN`, max_len]."""
    lengths = torch.randn(n, generator=generator) * CAPTION_STD + CAPTION_MEAN
    return lengths.round().clamp(CAPTION_MIN, max_len).long().tolist()


def retrieval_data(
    num_images: int,
    num_texts: int,
    vocab_size: int,
    max_text_len: int,
    device: torch.device,
    image_hw: tuple[int, int] = RETRIEVAL_IMAGE_HW,
    seed: int = 0,
) -> RetrievalData:
    """Random images and captions (timing depends on shapes; the scores are compared, not judged)."""
    g = torch.Generator().manual_seed(seed)
    low = min(1000, vocab_size // 2)
    texts = [
        [CLS_ID, *torch.randint(low, vocab_size, (n - 2,), generator=g).tolist(), SEP_ID]
        for n in caption_lengths(num_texts, max_text_len, g)
    ]
    images = [
        torch.randint(0, 256, (3, *image_hw), dtype=torch.uint8, generator=g) for _ in range(num_images)
    ]
    mask = torch.ones(1, *image_hw, dtype=torch.bool)
    pixel_values = [normalize_images(image[None], mask)[0].to(device) for image in images]
    padded_ids, padded_mask = pad_texts(texts, max_text_len)
    return RetrievalData(
        images=[image.to(device) for image in images],
        pixel_values=pixel_values,
        text_ids=texts,
        padded_ids=padded_ids.to(device),
        padded_mask=padded_mask.to(device),
    )


def ours_scores(
    backbone: ViltBackbone,
    head: RetrievalHead,
    data: RetrievalData,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor:
    """(N_images, N_texts) scores from our evaluation engine (no progress bar)."""
    _, scores = score_images(
        backbone,
        head,
        list(enumerate(data.images)),
        data.text_ids,
        text_batch_size=OFFICIAL_TEXT_BATCH,
        autocast=autocast,
        progress=False,
    )
    return scores


def hf_scores(
    hf: ViltModel,
    head: RetrievalHead,
    data: RetrievalData,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor:
    """(N_images, N_texts) scores from the official algorithm on HF's ViltModel."""
    return official_retrieval_scores(
        hf, head, data.pixel_values, data.padded_ids, data.padded_mask, autocast=autocast
    )


def score_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest absolute difference between two score matrices of the same shape."""
    if ours.shape != theirs.shape:
        raise RuntimeError(f"ours scored {tuple(ours.shape)}, HF {tuple(theirs.shape)}")
    return float((ours - theirs).abs().max())


@contextmanager
def ieee_fp32_matmuls() -> Iterator[None]:
    """Matmuls and convolutions in full fp32 inside, whatever the process set, restored after.

    The benchmark turns TF32 on for the whole process (the baseline's setting for what stays
    fp32 under autocast); TF32 keeps 10 bits of mantissa, so two fp32 paths that order their
    sums differently then differ by more than 1e-4 on base32's scores, and a check meant to
    catch a wrong mask or a missing embedding would fail on rounding. (On a CPU these settings
    change nothing here.)
    """
    matmul_precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul_precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


def fp32_score_difference(
    backbone: ViltBackbone, hf: ViltModel, head: RetrievalHead, data: RetrievalData
) -> float:
    """The largest |ours - HF| over ``data``'s scores, both computed in full fp32 (no autocast,
    no TF32): the precision `FP32_SCORE_TOLERANCE` in `bench.model` is set for."""
    with ieee_fp32_matmuls():
        return score_difference(ours_scores(backbone, head, data), hf_scores(hf, head, data))


def projected_seconds(pairs_per_s: float) -> dict[str, float]:
    """Wall time of each exact evaluation in `EXACT_SPLITS` at ``pairs_per_s`` on this device."""
    return {name: images * texts / pairs_per_s for name, (images, texts) in EXACT_SPLITS.items()}
