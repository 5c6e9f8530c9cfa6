"""The ViLT backbone: one transformer over word embeddings and linear patch projections."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ViltConfig
from .embeddings import (
    PatchEmbed,
    PatchSelection,
    TextEmbeddings,
    interpolate_pos_embed,
    patch_validity,
    select_patches,
)
from .init import init_weights
from .transformer import Block


@dataclass
class BackboneOutput:
    """What one backbone pass returns.

    text_feats: (B, T, D) final-norm features of the text positions.
    image_feats: (B, 1 + L, D) final-norm features of the image [CLS] and the L chosen patches.
    pooled: (B, D) tanh(Linear(text [CLS] feature)), the paper's eq. (6).
    text_mask: (B, T) bool; image_mask: (B, 1 + L) bool (the image [CLS] is always valid).
    patches: which grid patch each image position holds (for MPP targets and visualisation).

    A pass run with `rows` (see `ViltBackbone.encode`) leaves out what it did not compute:
    image_feats is None unless every row was computed, text_feats unless the text's were.
    """

    text_feats: torch.Tensor | None
    image_feats: torch.Tensor | None
    pooled: torch.Tensor
    text_mask: torch.Tensor | None
    image_mask: torch.Tensor | None
    patches: PatchSelection


class Pooler(nn.Module):
    """Linear + tanh on the first token of the joint sequence (the text [CLS])."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class ViltBackbone(nn.Module):
    """ViLT (Kim et al., ICML 2021) without heads.

    Parameter names follow timm's VisionTransformer (`patch_embed.proj`, `cls_token`, `pos_embed`,
    `blocks.{i}.attn.qkv`, `norm`) so ViT weights load by name, and BERT's inside
    `text_embeddings`.
    """

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.text_embeddings = TextEmbeddings(
            config.vocab_size,
            D,
            config.max_text_len,
            type_vocab_size=config.type_vocab_size,
            eps=config.text_ln_eps,
            drop=config.drop_rate,
        )
        self.patch_embed = PatchEmbed(config.patch_size, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid_size**2, D))
        self.pos_drop = nn.Dropout(config.drop_rate)
        self.token_type_embeddings = nn.Embedding(config.num_modality_types, D)
        self.blocks = nn.ModuleList(
            Block(
                D,
                config.num_heads,
                config.mlp_dim,
                drop=config.drop_rate,
                attn_drop=config.attn_drop_rate,
                eps=config.ln_eps,
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(D, eps=config.ln_eps)
        self.pooler = Pooler(D)
        self.grad_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.apply(lambda m: init_weights(m, self.config.init_std))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names, relative to the backbone, that the optimizer's groups exempt from weight
        decay besides biases and norm weights (`vilt_lab.training.optim.param_groups`).

        Empty on purpose: the official code decays `pos_embed`, `cls_token` and all embeddings,
        and the paper's numbers were obtained that way (timm exempts the first two).
        """
        return set()

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text tokens ready for the joint sequence: BERT embedding plus modality-type row 0, (B, T, D).

        Depends on the text alone, so a caller pairing one text with many images can embed it once.
        """
        return self.text_embeddings(input_ids) + self.token_type_embeddings.weight[0]

    # The visual embedding's steps that read no generator and no tensor value on the host:
    # `speed_levers.compile_backbone` compiles them with the blocks. The random patch choice
    # between the first two (`select_patches` with a generator) stays eager, out of every graph
    # and every CUDA graph.
    COMPILED_IMAGE_STEPS = ("project_patches", "place_patches", "embed_image_in_raster_order")

    def project_patches(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        image_index: torch.Tensor | None,
        masked_patches: torch.Tensor | None,
        mask_token: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's projected patches (B, Hp*Wp, D), masked ones replaced by `mask_token`, and
        which of them hold image (B, Hp, Wp) bool; arguments as in `image_tokens`."""
        x = self.patch_embed(pixel_values)  # (N_images, D, Hp, Wp)
        if image_index is not None:
            # Index after the patch projection, not before: pairs that share an image (retrieval's
            # negatives, ITM's fused pass) share its projection, which is the only costly step
            # that depends on the image alone. Everything after it (masking, patch sampling,
            # position embeddings, dropout) is per row, drawn exactly as if the pixels had been
            # indexed, so the result is the same up to the convolution's rounding. An embedding
            # lookup, not `x[image_index]`: the backward of advanced indexing adds the rows of an
            # image that several pairs share with atomic adds from every CPU thread, in an order
            # that changes from run to run (training/determinism.py); embedding's backward adds
            # them in index order.
            N, D, Hp, Wp = x.shape
            x = F.embedding(image_index, x.reshape(N, -1)).view(-1, D, Hp, Wp)
            pixel_mask = pixel_mask[image_index]
        B, D, Hp, Wp = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, Hp*Wp, D)
        if masked_patches is not None:
            x = torch.where(masked_patches.reshape(B, -1, 1), mask_token.to(x.dtype), x)
        return x, patch_validity(pixel_mask, (Hp, Wp))

    def place_patches(
        self,
        patches: torch.Tensor,
        index: torch.Tensor,
        valid: torch.Tensor,
        grid_hw: torch.Tensor,
        grid: tuple[int, int],
        token_type_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen patches (a `PatchSelection`'s tensors) as image tokens: gathered, their
        positions interpolated, the image [CLS] in front, dropout, the modality-type row added.
        Returns (B, 1 + L, D) tokens and their (B, 1 + L) bool mask."""
        B, _, D = patches.shape
        selection = PatchSelection(index=index, valid=valid, grid_hw=grid_hw, grid=grid)
        x = patches.gather(1, index.unsqueeze(-1).expand(-1, -1, D))
        x = x + interpolate_pos_embed(self.pos_embed[0, 1:], selection)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1))
        mask = torch.cat([valid.new_ones(B, 1), valid], dim=1)
        return x + self.token_type_embeddings.weight[token_type_idx], mask

    def embed_image_in_raster_order(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        image_index: torch.Tensor | None,
        masked_patches: torch.Tensor | None,
        mask_token: torch.Tensor | None,
        max_patches: int,
        token_type_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole visual embedding when every valid patch is kept and their count is known on
        the host: nothing random and nothing read from the device, so one function (one graph
        when compiled). Returns tokens, mask and the selection's index, valid and grid_hw.

        It calls the class's own steps, not the instance's compiled ones, so a compiled call of
        it traces them into its one graph.
        """
        patches, patch_valid = ViltBackbone.project_patches(
            self, pixel_values, pixel_mask, image_index, masked_patches, mask_token
        )
        selection = select_patches(patch_valid, most=max_patches)
        tokens, mask = ViltBackbone.place_patches(
            self, patches, selection.index, selection.valid, selection.grid_hw, selection.grid, token_type_idx
        )
        return tokens, mask, selection.index, selection.valid, selection.grid_hw

    def image_tokens(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        *,
        max_image_len: int = -1,
        image_token_type_idx: int = 1,
        generator: torch.Generator | None = None,
        masked_patches: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
        max_patches: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, PatchSelection]:
        """Image tokens ready for the joint sequence: the image [CLS] and the chosen patches with
        their positions, plus the modality-type row.

        Returns (B, 1 + L, D) tokens, their (B, 1 + L) bool mask and the patch selection. Depends on
        the image alone, so retrieval computes it once per image and expands it over the texts.
        masked_patches: optional (B, Hp, Wp) bool; those patches are replaced by `mask_token`
            before position embeddings are added (masked patch prediction).
        image_index: optional (B,) long; row i is then built from image image_index[i] of
            `pixel_values` and `pixel_mask` (which may hold fewer images than B rows).
        max_patches: the most valid patches of the rows' images when the caller knows it
            (`most_valid_patches` of the collate's image sizes); None counts them on the device,
            one host sync (`select_patches`).
        """
        if not 0 < image_token_type_idx < self.config.num_modality_types:
            raise ValueError(
                f"image_token_type_idx={image_token_type_idx} needs model.num_modality_types > "
                f"{image_token_type_idx} (it is {self.config.num_modality_types})"
            )
        if masked_patches is not None and mask_token is None:
            raise ValueError("masked_patches needs a mask_token")
        if max_patches is not None and not 0 < max_image_len < max_patches:
            # Every valid patch kept (`select_patches` draws nothing) and their count known.
            tokens, mask, index, valid, grid_hw = self.embed_image_in_raster_order(
                pixel_values,
                pixel_mask,
                image_index,
                masked_patches,
                mask_token,
                max_patches,
                image_token_type_idx,
            )
            grid = (
                pixel_values.shape[-2] // self.config.patch_size,
                pixel_values.shape[-1] // self.config.patch_size,
            )
            return tokens, mask, PatchSelection(index=index, valid=valid, grid_hw=grid_hw, grid=grid)
        # A draw from the generator, or a count read from the device: eager, between two steps.
        patches, patch_valid = self.project_patches(
            pixel_values, pixel_mask, image_index, masked_patches, mask_token
        )
        selection = select_patches(patch_valid, max_image_len, generator, most=max_patches)
        tokens, mask = self.place_patches(
            patches, selection.index, selection.valid, selection.grid_hw, selection.grid, image_token_type_idx
        )
        return tokens, mask, selection

    def encode(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor,
        *,
        rows: int | None = None,
        unpadded: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer over [text; image]: features after the final norm, and their mask.

        Returns (B, T + 1 + L, D) features and the (B, T + 1 + L) bool mask they were computed with.
        text_tokens: (B, T, D) from `embed_text`; text_mask: (B, T), nonzero on real tokens.
        image_tokens, image_mask: from `image_tokens`; an expanded (stride-0) batch dimension is fine,
        the concatenation below materialises it once.
        rows: the last block computes only the first `rows` positions, and features and mask are
            (B, rows, ...): 1 for callers that read only the pooled text [CLS] (exact: the same
            values, about (10/12) / num_layers fewer matrix-product FLOPs), T for the text alone.
        unpadded: the caller knows from host-side data that no position is padding (every text
            fills T, every image its L tokens; e.g. one whole image against texts of one length):
            attention then gets no mask, which lets CUDA choose flash attention, with the values
            of the masked path (a mask of all True masks nothing). Reading the mask to find out
            here would cost a host sync per pass; on a CPU, where it costs none, it is checked.
        """
        x = torch.cat([text_tokens, image_tokens], dim=1)
        mask = torch.cat([text_mask.bool(), image_mask], dim=1)
        if rows is not None and not 0 < rows <= x.shape[1]:
            raise ValueError(f"rows={rows} must be in [1, {x.shape[1]}] (the joint sequence's length)")
        if unpadded and mask.device.type == "cpu" and not mask.all():
            raise ValueError("encode(unpadded=True) on a batch with padding positions (a False in its mask)")
        key_mask = None if unpadded else mask
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            block_rows = rows if i == last else None
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, key_mask, block_rows, use_reentrant=False)
            else:
                x = block(x, key_mask, block_rows)
        return self.norm(x), mask[:, :rows]  # mask[:, :None] is every row

    def forward_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        *,
        max_image_len: int = -1,
        image_token_type_idx: int = 1,
        generator: torch.Generator | None = None,
        masked_patches: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        rows: int | None = None,
        image_index: torch.Tensor | None = None,
        max_patches: int | None = None,
        unpadded: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, int, PatchSelection]:
        """Joint sequence after the final norm: (B, T + 1 + L, D), its mask, T, the patch selection.

        rows, unpadded: see `encode` (features and mask then hold the first `rows` positions).
        image_index, max_patches: see `image_tokens` (pair i sees image image_index[i]).
        """
        # Text first: in training both embeddings draw dropout masks from the global RNG, so the order
        # decides which mask each gets; this is the official code's order, and seeded runs rely on it.
        text = self.embed_text(input_ids)
        image, image_mask, selection = self.image_tokens(
            pixel_values,
            pixel_mask,
            max_image_len=max_image_len,
            image_token_type_idx=image_token_type_idx,
            generator=generator,
            masked_patches=masked_patches,
            mask_token=mask_token,
            image_index=image_index,
            max_patches=max_patches,
        )
        x, mask = self.encode(text, attention_mask, image, image_mask, rows=rows, unpadded=unpadded)
        return x, mask, input_ids.shape[1], selection

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The pooled vector from the joint features."""
        return self.pooler(features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        *,
        max_image_len: int = -1,
        image_token_type_idx: int = 1,
        generator: torch.Generator | None = None,
        masked_patches: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        rows: int | None = None,
        image_index: torch.Tensor | None = None,
        max_patches: int | None = None,
        unpadded: bool = False,
    ) -> BackboneOutput:
        """One pass over a batch of (text, image) pairs.

        Args:
            input_ids: (B, T) word-piece ids, [CLS] first.
            attention_mask: (B, T), 1 for real tokens.
            pixel_values: (B, 3, H, W) normalised images, zero-padded to the batch size.
            pixel_mask: (B, H, W), 1 on real pixels.
            max_image_len: patches kept per image (-1: all valid patches).
            image_token_type_idx: modality-type row for the image (2 for NLVR2's second image).
            generator: makes patch sampling reproducible.
            masked_patches, mask_token: see `image_tokens`.
            rows: compute only the first `rows` positions in the last block (`encode`): 1 when
                only `pooled` is read, T when the text is; what was not computed is None.
            image_index: optional (B,) long; pair i sees image image_index[i] of `pixel_values`
                (which may hold fewer images than B pairs). Each image is projected to patches
                once, however many pairs show it.
            max_patches: the most valid patches of the pairs' images, when the caller knows it
                from the image sizes (`most_valid_patches`): saves `select_patches`' host sync.
            unpadded: the caller knows that no text and no image is padded (the collate's flag,
                `vilt_lab.data.collate.UNPADDED`): attention runs without a mask (`encode`).
        """
        x, mask, T, selection = self.forward_features(
            input_ids,
            attention_mask,
            pixel_values,
            pixel_mask,
            max_image_len=max_image_len,
            image_token_type_idx=image_token_type_idx,
            generator=generator,
            masked_patches=masked_patches,
            mask_token=mask_token,
            rows=rows,
            image_index=image_index,
            max_patches=max_patches,
            unpadded=unpadded,
        )
        has_text, has_image = rows is None or rows >= T, rows is None
        return BackboneOutput(
            text_feats=x[:, :T] if has_text else None,
            image_feats=x[:, T:] if has_image else None,
            pooled=self.forward_head(x),
            text_mask=mask[:, :T] if has_text else None,
            image_mask=mask[:, T:] if has_image else None,
            patches=selection,
        )
