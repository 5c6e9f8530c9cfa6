"""A checkpoint ready to answer: the model with its heads, its tokenizer and its image size.

Everything an input goes through is what evaluation uses: the images are decoded and resized by
`data.transforms.decode_image` (MinMaxResize at the checkpoint's patch size), batched and the
texts tokenized by `data.collate.ItemCollator`, normalised by `data.normalize.normalize_images`,
and the model is `ViltWithHeads` built from `build.read_checkpoint` (every checkpoint vilt_lab
reads). A prediction on one image is therefore the one `vilt-eval` would make on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import PreTrainedTokenizerBase

from ..data.collate import ItemCollator
from ..data.normalize import normalize_images
from ..data.sources.images import BadImage
from ..data.tokenizer import load_tokenizer
from ..data.transforms import PAPER_LONGER, PAPER_SHORTER, MinMaxResize, decode_image
from ..report.heatmap import align_words, draw_alignment
from ..training.run_dir import RunDir, is_run_checkpoint
from ..weights.checkpoint_io import ViltCheckpoint
from ..weights.with_heads import ViltWithHeads

# The released checkpoints' tokenizer: the default when the checkpoint does not name its own.
DEFAULT_TOKENIZER = "bert-base-uncased"


class MissingHeadError(ValueError):
    """The checkpoint has no head for the prediction asked for."""


@dataclass(frozen=True)
class InputSettings:
    """How inputs are prepared for a checkpoint: its tokenizer and the resize of its training
    data. `tokenizer_key`: where the tokenizer came from, for the messages."""

    tokenizer: str
    shorter: int
    longer: int
    tokenizer_key: str = "--tokenizer"


def run_config_path(checkpoint: str | os.PathLike) -> Path | None:
    """The resolved config of the run a checkpoint comes from (a run dir or its
    `checkpoints/step_N`), or None for a checkpoint that is not part of a run."""
    path = Path(checkpoint)
    if RunDir(path).is_training_run():
        return RunDir(path).config
    if is_run_checkpoint(path):
        return RunDir.of_checkpoint(path).config
    return None


def input_settings(
    checkpoint: str | os.PathLike,
    tokenizer: str | None = None,
    shorter: int | None = None,
    longer: int | None = None,
) -> InputSettings:
    """The given settings, the rest from the checkpoint's run (its `data.tokenizer` and eval
    resize, `augment.shorter` / `augment.longer`) or else the paper's (BERT's uncased vocabulary,
    384 / 639): a checkpoint directory records neither, and the released ones used those."""
    config_path = run_config_path(checkpoint)
    if config_path is None:
        return InputSettings(tokenizer or DEFAULT_TOKENIZER, shorter or PAPER_SHORTER, longer or PAPER_LONGER)
    cfg = OmegaConf.load(config_path)
    return InputSettings(
        tokenizer or str(cfg.data.tokenizer),
        shorter or int(cfg.augment.shorter),
        longer or int(cfg.augment.longer),
        "--tokenizer" if tokenizer else f"data.tokenizer of {config_path} (or --tokenizer)",
    )


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
    resize: MinMaxResize
    source: str

    @classmethod
    def load(cls, checkpoint: ViltCheckpoint, source: str, settings: InputSettings) -> Predictor:
        """Build the model of a read checkpoint (`build.read_checkpoint(source)`) with the
        tokenizer and resize of `settings`; a tokenizer of another vocabulary is an error."""
        tokenizer = load_tokenizer(settings.tokenizer, key=settings.tokenizer_key)
        if len(tokenizer) != checkpoint.config.vocab_size:
            raise ValueError(
                f"checkpoint {source} has a vocabulary of {checkpoint.config.vocab_size} tokens, "
                f"tokenizer {settings.tokenizer} has {len(tokenizer)}: pass the checkpoint's own "
                "with --tokenizer"
            )
        model = ViltWithHeads.from_checkpoint(checkpoint).eval()
        resize = MinMaxResize(settings.shorter, settings.longer, checkpoint.config.patch_size)
        return cls(model, tokenizer, resize, source)

    @property
    def heads(self) -> list[str]:
        return sorted(self.model.heads)

    def image(self, path: Path) -> torch.Tensor:
        """The image file as evaluation decodes it: uint8 (3, H, W) after MinMaxResize."""
        try:
            return decode_image(path.read_bytes(), self.resize)
        except (BadImage, OSError) as err:  # decode_image's messages do not name the file
            raise ValueError(f"image {path}: {err}") from err

    def batch(self, texts: Sequence[str], images: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Every text with the same image(s), collated as evaluation collates: one image gives
        `image` (B, 3, H, W), two (NLVR2's pair) `image` (B, 2, 3, H, W), with `pixel_mask`."""
        item: dict[str, Any] = {"image": images[0]} if len(images) == 1 else {"images": list(images)}
        collate = ItemCollator(self.tokenizer, max_text_len=self.model.backbone.config.max_text_len)
        return collate([{**item, "text": text} for text in texts])

    @torch.no_grad()
    def logits(self, head: str, batch: dict[str, Any]) -> torch.Tensor:
        """Head `head`'s float logits on `batch` (see `ViltWithHeads.forward` for their shapes)."""
        image, pixel_mask = batch["image"], batch["pixel_mask"]
        # normalize_images takes (N, 3, H, W): an NLVR2 pair (B, 2, ...) is flattened and put
        # back, as its objective does.
        pixel_values = normalize_images(
            image.reshape(-1, *image.shape[-3:]), pixel_mask.reshape(-1, *pixel_mask.shape[-2:])
        ).view(image.shape)
        return self.model(head, batch["input_ids"], batch["attention_mask"], pixel_values, pixel_mask).float()

    def heatmap(self, image_path: Path, text: str, out: Path) -> Path:
        """The word-patch alignment of `text` over the image (the paper's Figure 4) as a PNG."""
        with Image.open(image_path) as image:
            alignment = align_words(self.model.backbone, self.tokenizer, image, text, self.resize)
        return draw_alignment(alignment, out)
