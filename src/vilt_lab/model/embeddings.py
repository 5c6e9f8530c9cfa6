"""Text and visual embeddings of ViLT.

The visual embedding is the part the official and HF code run as per-image Python loops
(position-table interpolation, `unique` + `multinomial` patch sampling). Here it is vectorised:
patches are chosen with one batched argsort over random keys, and the position table is
interpolated only at the chosen patches, with one gather per bilinear corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vilt_lab.utils.draws import draw_device


class TextEmbeddings(nn.Module):
    """BERT's embedding: word + absolute position + token type (always 0), LayerNorm, dropout.

    Parameter names follow BERT (`word_embeddings`, `LayerNorm`, ...), as the official checkpoint does.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        max_len: int,
        type_vocab_size: int = 2,
        eps: float = 1e-12,
        drop: float = 0.1,
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_len, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(drop)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text length {T} exceeds model.max_text_len={self.position_embeddings.num_embeddings}"
            )
        # Index 0 of both tables broadcast over the batch: no (B, T) index tensors are built.
        x = self.word_embeddings(input_ids)
        x = x + self.position_embeddings.weight[:T] + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class PatchEmbed(nn.Module):
    """Linear projection of non-overlapping patches, as a conv with kernel = stride = patch."""

    def __init__(self, patch_size: int, hidden_size: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)


@dataclass
class PatchSelection:
    """Which grid patches each image keeps.

    index: (B, L) flat indices into the (Hp, Wp) patch grid; valid: (B, L) bool, False for fill
    positions; grid_hw: (B, 2) each image's valid grid (h, w); grid: the batch grid (Hp, Wp).
    """

    index: torch.Tensor
    valid: torch.Tensor
    grid_hw: torch.Tensor
    grid: tuple[int, int]


def patch_validity(pixel_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) pixel mask -> (B, Hp, Wp) bool patch mask by nearest interpolation (as HF)."""
    return F.interpolate(pixel_mask[:, None].float(), size=grid, mode="nearest")[:, 0] > 0.5


def valid_extent(size: int, padded: int, cells: int) -> int:
    """How many of `cells` patch rows (or columns) `patch_validity` marks valid for an image of
    `size` pixels at the top of (or left in) `padded` ones, computed on the host.

    Nearest interpolation reads pixel min(floor(i * padded / cells), padded - 1) for cell i, in
    float32 as PyTorch's kernels compute it (CPU and CUDA alike); those pixels are valid below
    `size`.
    """
    scale = np.float32(padded) / np.float32(cells)
    source = np.minimum(np.floor(np.arange(cells, dtype=np.float32) * scale), padded - 1)
    return int((source < size).sum())


def most_valid_patches(
    image_sizes: Sequence[tuple[int, int]], padded: tuple[int, int], patch_size: int
) -> int:
    """The most valid patches any of these images has (what `select_patches` calls `most`) when
    each (h, w) image sits at the top-left of a `padded` (H, W) canvas, as the collate pads them:
    known on the host, so the sequence length needs no host sync."""
    (H, W), P = padded, patch_size
    extents = {(valid_extent(h, H, H // P), valid_extent(w, W, W // P)) for h, w in image_sizes}
    return max(rows * cols for rows, cols in extents)


def select_patches(
    patch_valid: torch.Tensor,
    max_image_len: int = -1,
    generator: torch.Generator | None = None,
    most: int | None = None,
) -> PatchSelection:
    """Choose L = min(max_image_len, most valid patches in the batch) patches per image.

    An image with at least L valid patches keeps L of them drawn uniformly without replacement; an
    image with fewer keeps all of them and fills up to L with (masked) padding positions. With
    `max_image_len=-1`, or whenever no image has more than `max_image_len` valid patches, nothing
    is random: valid patches come in raster order, so evaluation is deterministic (the official
    and HF code permute the largest image even then, HF issue dandelin/ViLT#36).

    most: the most valid patches of an image in the batch when the caller knows it
        (`most_valid_patches`); None counts them on the device, a host sync, since L decides the
        sequence length and has to be a Python int.
    """
    B, Hp, Wp = patch_valid.shape
    N = Hp * Wp
    valid = patch_valid.reshape(B, N)
    grid_hw = torch.stack([patch_valid[:, :, 0].sum(1), patch_valid[:, 0, :].sum(1)], dim=1)
    if most is None:
        most = int(valid.sum(1).max().item())
    if most == 0:
        raise ValueError("pixel_mask has no valid patch in any image of the batch")
    sample = 0 < max_image_len < most
    L = max_image_len if sample else most
    if sample:
        # Uniform keys in [0, 1) for valid patches and [2, 3) for padding: the L smallest keys are a
        # uniform draw without replacement among valid patches, then padding if an image runs short.
        device = draw_device(generator, valid.device)
        keys = torch.rand(B, N, generator=generator, device=device).to(valid.device)
        keys = keys + (~valid).to(keys.dtype) * 2.0
    else:
        # Distinct integer keys: valid patches first in raster order, then padding.
        keys = torch.arange(N, device=valid.device).expand(B, N) + (~valid).long() * N
    index = keys.argsort(dim=1)[:, :L]
    return PatchSelection(index=index, valid=valid.gather(1, index), grid_hw=grid_hw, grid=(Hp, Wp))


def interpolate_pos_embed(table: torch.Tensor, selection: PatchSelection) -> torch.Tensor:
    """Position embeddings of the selected patches, (B, L, D).

    Equivalent to resizing the (G, G) table to each image's own valid grid (h, w) with
    `F.interpolate(mode="bilinear", align_corners=True)`, zero-padding to the batch grid and
    gathering the selected patches, but computed only at the L selected patches. At h = w = G the
    source coordinates are exact integers, so the table comes back unchanged bit for bit.

    table: (G*G, D) spatial part of the position table, row-major.
    """
    G = int(round(table.shape[0] ** 0.5))
    Wp = selection.grid[1]
    rows = torch.div(selection.index, Wp, rounding_mode="floor")
    cols = selection.index % Wp
    # Coordinates and blend weights in at least fp32: in a bf16 model (weights cast to bf16, no
    # autocast) a coordinate like 10.98 rounds to 11, so whole rows came from the wrong corner.
    # For an fp32 table nothing changes, bit for bit; the result is cast back to the table's dtype.
    compute = torch.promote_types(table.dtype, torch.float32)
    h = selection.grid_hw[:, :1].to(compute)
    w = selection.grid_hw[:, 1:].to(compute)

    def source(coord: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # align_corners=True: output index i maps to i * (G - 1) / (size - 1); a size of 1 maps to 0.
        src = coord.to(compute) * (G - 1) / (size - 1).clamp(min=1)
        lo = src.floor().clamp(0, G - 1)
        frac = src - lo
        return lo.long(), (lo + 1).clamp(max=G - 1).long(), frac.unsqueeze(-1)

    r0, r1, fr = source(rows, h)
    c0, c1, fc = source(cols, w)

    def corner(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # A row lookup, as `table[r * G + c]` but deterministic: the backward of advanced indexing
        # (index_put_ with accumulate) adds the many repeated rows with atomic adds from several
        # threads on CPU, so two runs got different gradients at 2 threads; embedding's
        # backward adds them in index order at any thread count (the same sums as one thread).
        return F.embedding(r * G + c, table).to(compute)

    pos = (1 - fr) * ((1 - fc) * corner(r0, c0) + fc * corner(r0, c1)) + fr * (
        (1 - fc) * corner(r1, c0) + fc * corner(r1, c1)
    )
    # Padding positions get no position embedding (HF zero-pads the resized table).
    return (pos * selection.valid.unsqueeze(-1).to(pos.dtype)).to(table.dtype)


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """A (1, 1 + g*g, D) position table (image [CLS] row first) resized to a (grid, grid) layout.

    Bilinear with align_corners=True, the convention `interpolate_pos_embed` applies per image at
    run time: a table resized here gives an image of that grid exactly the positions the source
    table would have given it. The [CLS] row is kept.
    """
    spatial = pos_embed.shape[1] - 1
    g = int(round(spatial**0.5))
    if g * g != spatial:
        raise ValueError(f"position table has {spatial} spatial rows, not a square grid")
    if g == grid:
        return pos_embed
    D = pos_embed.shape[-1]
    table = pos_embed[:, 1:].reshape(1, g, g, D).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=(grid, grid), mode="bilinear", align_corners=True)
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, D).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], table], dim=1)
