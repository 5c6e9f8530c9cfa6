"""The paper's Figure 4: where each word of a caption goes on the image, from WPA's transport plan.

For one image and caption, one backbone pass with every patch, the cosine cost between the
caption's words and the patches (exactly as WPA computes it in training), IPOT's plan, then per
word the plan's mass on each patch (summed over the word's pieces) drawn over the image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.normalize import normalize_images
from ..data.transforms import MinMaxResize
from ..model import ViltBackbone
from ..objectives.wpa import alignment_masks, cosine_cost, ipot_distance
from ..weights.with_heads import ViltWithHeads
from .plots import pyplot


@dataclass
class WordAlignment:
    """Each word of the caption and its (h, w) map of transport mass over the patch grid."""

    words: list[str]
    maps: list[np.ndarray]
    image: np.ndarray  # (H, W, 3) uint8, the resized image the maps cover


@torch.no_grad()
def align_words(
    backbone: ViltBackbone,
    tokenizer,
    image: Image.Image,
    caption: str,
    resize: MinMaxResize,
    beta: float = 0.5,
    iterations: int = 50,
) -> WordAlignment:
    """The transport plan between `caption`'s words and `image`'s patches, per word on the grid."""
    backbone.eval()
    device = next(backbone.parameters()).device  # the transport runs there too; the maps come back
    resized = resize(image.convert("RGB"))
    pixels = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)[None].to(device)
    pixel_mask = torch.ones(1, *pixels.shape[2:], dtype=torch.long, device=device)
    encoded = tokenizer(caption, return_tensors="pt", truncation=True, max_length=40)
    output = backbone(
        encoded["input_ids"].to(device),
        encoded["attention_mask"].to(device),
        normalize_images(pixels, pixel_mask),
        pixel_mask,
    )
    text_mask, image_mask = alignment_masks(output.text_mask, output.image_mask)
    cost = cosine_cost(output.text_feats, output.image_feats[:, 1:])
    _, plan = ipot_distance(cost, text_mask, image_mask, beta=beta, iterations=iterations)
    plan, text_mask = plan.cpu(), text_mask.cpu()
    grid_h, grid_w = (int(v) for v in output.patches.grid_hw[0])
    index, valid = output.patches.index[0].cpu(), output.patches.valid[0].cpu()
    word_ids = encoded.word_ids(0)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    words, maps = [], []
    for word in sorted(
        {w for w, aligned in zip(word_ids, text_mask[0].tolist(), strict=True) if aligned and w is not None}
    ):
        rows = [i for i, w in enumerate(word_ids) if w == word]
        mass = plan[0, rows].sum(0)
        grid = torch.zeros(output.patches.grid[0] * output.patches.grid[1], dtype=mass.dtype)
        grid[index[valid]] = mass[valid]
        maps.append(grid.view(output.patches.grid)[:grid_h, :grid_w].numpy())
        words.append("".join(tokens[i].removeprefix("##") for i in rows))
    return WordAlignment(words, maps, np.asarray(resized))


def draw_alignment(alignment: WordAlignment, out: Path) -> Path:
    """The image, then one panel per word with its map (upsampled to the image) over it."""
    plt = pyplot()
    panels = 1 + len(alignment.words)
    columns = min(panels, 4)
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.4 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    axes.flat[0].imshow(alignment.image)
    axes.flat[0].set_title("image", fontsize=9)
    height, width = alignment.image.shape[:2]
    for axis, word, mass in zip(axes.flat[1:], alignment.words, alignment.maps, strict=False):
        axis.imshow(alignment.image)
        axis.imshow(mass, cmap="jet", alpha=0.5, extent=(0, width, height, 0), interpolation="nearest")
        axis.set_title(word, fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return Path(out)


def heatmap(
    checkpoint: str | os.PathLike,
    image_path: str | os.PathLike,
    caption: str,
    tokenizer_name: str,
    out: str | os.PathLike,
    shorter: int = 384,
    longer: int = 640,
) -> Path:
    """Figure 4 for one checkpoint (any that `build.read_checkpoint` reads) and pair; the PNG."""
    from ..build.task import read_checkpoint
    from ..data.tokenizer import load_tokenizer

    model = ViltWithHeads.from_checkpoint(read_checkpoint(checkpoint))
    resize = MinMaxResize(shorter, longer, model.backbone.config.patch_size)
    with Image.open(image_path) as image:
        alignment = align_words(model.backbone, load_tokenizer(tokenizer_name), image, caption, resize)
    return draw_alignment(alignment, Path(out))
