"""How an input is prepared for a checkpoint, shared by `vilt-predict` and `vilt_lab.api`.

The settings (tokenizer, resize) come from what the checkpoint records: its run's config.yaml,
or the `inputs` a vilt_lab checkpoint directory records (`vilt-convert run` writes them), else
the paper's. The pixels are what evaluation feeds the model: decoded and resized by
`data.transforms.decode_image` (MinMaxResize at the checkpoint's patch size), normalised by
`data.normalize.normalize_images`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

from ..data.collate import pad_images
from ..data.normalize import normalize_images
from ..data.sources.images import BadImage
from ..data.transforms import PAPER_LONGER, PAPER_SHORTER, MinMaxResize, decode_image
from ..training.run_dir import RunDir
from ..weights.checkpoint_io import CONFIG_NAME, is_checkpoint_dir, recorded_inputs

# The released checkpoints' tokenizer: the default when the checkpoint does not name its own.
DEFAULT_TOKENIZER = "bert-base-uncased"


@dataclass(frozen=True)
class InputSettings:
    """How inputs are prepared for a checkpoint: its tokenizer and the resize of its training
    data. `tokenizer_key`: where the tokenizer came from, for the messages."""

    tokenizer: str
    shorter: int
    longer: int
    tokenizer_key: str = "--tokenizer"


def input_settings(
    checkpoint: str | os.PathLike,
    tokenizer: str | None = None,
    shorter: int | None = None,
    longer: int | None = None,
) -> InputSettings:
    """The given settings, the rest from what the checkpoint records: its run's `data.tokenizer`
    and eval resize (`augment.shorter` / `augment.longer`), or a checkpoint directory's `inputs`
    (its own tokenizer directory); else the paper's (BERT's uncased vocabulary, 384 / 639), which
    the released checkpoints used."""
    run = RunDir.holding(checkpoint)
    if run is not None:
        config_path = run.config
        cfg = OmegaConf.load(config_path)
        recorded = {
            "tokenizer": str(cfg.data.tokenizer),
            "shorter": int(cfg.augment.shorter),
            "longer": int(cfg.augment.longer),
        }
        source = f"data.tokenizer of {config_path} (or --tokenizer)"
    elif is_checkpoint_dir(checkpoint):
        recorded = recorded_inputs(checkpoint)
        source = f"inputs.tokenizer of {Path(checkpoint) / CONFIG_NAME} (or --tokenizer)"
    else:
        recorded, source = {}, "--tokenizer"
    return InputSettings(
        tokenizer or recorded.get("tokenizer", DEFAULT_TOKENIZER),
        shorter or recorded.get("shorter", PAPER_SHORTER),
        longer or recorded.get("longer", PAPER_LONGER),
        "--tokenizer" if tokenizer or "tokenizer" not in recorded else source,
    )


def pixel_values(image: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Collated uint8 images, normalised as the objectives normalise them. `normalize_images`
    takes (N, 3, H, W): an NLVR2 pair (B, 2, ...) is flattened and put back, as its objective
    does."""
    flat = normalize_images(
        image.reshape(-1, *image.shape[-3:]), pixel_mask.reshape(-1, *pixel_mask.shape[-2:])
    )
    return flat.view(image.shape)


@dataclass(frozen=True)
class Preprocess:
    """One image (a path or a PIL image) -> the model's `pixel_values` and `pixel_mask`."""

    resize: MinMaxResize

    def image(self, image: str | os.PathLike | Image.Image) -> torch.Tensor:
        """The image as evaluation decodes it: uint8 (3, H, W) after MinMaxResize. A PIL image
        is encoded losslessly (PNG) and decoded as a file would be: one path for both."""
        if isinstance(image, Image.Image):
            encoded = io.BytesIO()
            image.save(encoded, format="PNG")
            return decode_image(encoded.getvalue(), self.resize)
        path = Path(image)
        try:
            return decode_image(path.read_bytes(), self.resize)
        except (BadImage, OSError) as err:  # decode_image's messages do not name the file
            raise ValueError(f"image {path}: {err}") from err

    def __call__(self, image: str | os.PathLike | Image.Image) -> dict[str, torch.Tensor]:
        """`pixel_values` (1, 3, H, W) float and `pixel_mask` (1, H, W) bool: a batch of one
        image, as `data.collate` batches images."""
        pixels, pixel_mask = pad_images([self.image(image)])
        return {"pixel_values": pixel_values(pixels, pixel_mask), "pixel_mask": pixel_mask}
