"""A checkpoint ready to answer: the model with its heads, its tokenizer and its image size.

Everything an input goes through is what evaluation uses: the images are decoded, resized and
normalised by `preprocess.Preprocess` (its module says how), batched and the texts tokenized by
`data.collate.ItemCollator`, and the model is `ViltWithHeads` built from `build.read_checkpoint`
(every checkpoint vilt_lab reads). A prediction on one image is therefore the one `vilt-eval` would make on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from ..data.collate import ItemCollator
from ..data.tokenizer import load_tokenizer
from ..data.transforms import MinMaxResize
from ..report.heatmap import align_words, draw_alignment
from ..weights.checkpoint_io import ViltCheckpoint
from ..weights.with_heads import ViltWithHeads
from .preprocess import InputSettings, Preprocess, pixel_values


class MissingHeadError(ValueError):
    """The checkpoint has no head for the prediction asked for."""


def require_head(checkpoint: ViltCheckpoint, head: str, source: str, task: str) -> None:
    """Refuse a task whose head the checkpoint lacks: a fresh head would answer at random."""
    if head not in checkpoint.heads:
        raise MissingHeadError(
            f"checkpoint {source} has no {head} head, which --task {task} needs "
            f"(its heads: {', '.join(sorted(checkpoint.heads)) or 'none'})"
        )


@dataclass
class Predictor:
    """A loaded checkpoint and the preprocessing of its inputs (see the module docstring)."""

    model: ViltWithHeads
    tokenizer: PreTrainedTokenizerBase
    preprocess: Preprocess
    source: str
    device: torch.device

    @classmethod
    def load(
        cls,
        checkpoint: ViltCheckpoint,
        source: str,
        settings: InputSettings,
        device: torch.device | str = "cpu",
    ) -> Predictor:
        """Build the model of a read checkpoint (`build.read_checkpoint(source)`) on `device` with
        the tokenizer and resize of `settings`; a tokenizer of another vocabulary is an error."""
        tokenizer = load_tokenizer(settings.tokenizer, key=settings.tokenizer_key)
        if len(tokenizer) != checkpoint.config.vocab_size:
            raise ValueError(
                f"checkpoint {source} has a vocabulary of {checkpoint.config.vocab_size} tokens, "
                f"tokenizer {settings.tokenizer} has {len(tokenizer)}: pass the checkpoint's own "
                "with --tokenizer"
            )
        device = torch.device(device)
        model = ViltWithHeads.from_checkpoint(checkpoint).eval().to(device)
        resize = MinMaxResize(settings.shorter, settings.longer, checkpoint.config.patch_size)
        return cls(model, tokenizer, Preprocess(resize), source, device)

    @property
    def heads(self) -> list[str]:
        return sorted(self.model.heads)

    def image(self, path: Path) -> torch.Tensor:
        """The image file as evaluation decodes it: uint8 (3, H, W) after MinMaxResize."""
        return self.preprocess.image(path)

    def batch(self, texts: Sequence[str], images: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Every text with the same image(s), collated as evaluation collates: one image gives
        `image` (B, 3, H, W), two (NLVR2's pair) `image` (B, 2, 3, H, W), with `pixel_mask`."""
        item: dict[str, Any] = {"image": images[0]} if len(images) == 1 else {"images": list(images)}
        collate = ItemCollator(self.tokenizer, max_text_len=self.model.backbone.config.max_text_len)
        return collate([{**item, "text": text} for text in texts])

    @torch.no_grad()
    def logits(self, head: str, batch: dict[str, Any]) -> torch.Tensor:
        """Head `head`'s float logits on `batch` (see `ViltWithHeads.forward` for their shapes), on
        the CPU; the batch goes to the model's device, where the images are normalised."""
        inputs = {
            key: batch[key].to(self.device) for key in ("input_ids", "attention_mask", "image", "pixel_mask")
        }
        pixels = pixel_values(inputs["image"], inputs["pixel_mask"])
        return (
            self.model(head, inputs["input_ids"], inputs["attention_mask"], pixels, inputs["pixel_mask"])
            .float()
            .cpu()
        )

    def heatmap(self, image_path: Path, text: str, out: Path) -> Path:
        """The word-patch alignment of `text` over the image (the paper's Figure 4) as a PNG."""
        with Image.open(image_path) as image:
            alignment = align_words(self.model.backbone, self.tokenizer, image, text, self.preprocess.resize)
        return draw_alignment(alignment, out)
