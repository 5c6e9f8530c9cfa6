"""The HF transformers side of the model benchmark, on our weights (`weights.hf.to_hf`).

* Pre-training: `HFPretrain`, the team's HF ViLT pre-training baseline: `ViltModel`
  plus an ITM Linear and an MLM head (Linear, GELU, LayerNorm, Linear over the vocabulary), two
  passes (MLM on masked text, ITM on the plain text), the sum of both cross-entropies. HF has no
  pre-training class for ViLT (and no ITM or WPA head), so this is what a user of HF writes.
* Latency: HF's visual embedding and encoder at batch 1 with the text embedded once, untimed
  (the paper's Table 6 timing, as `bench.latency` times ours).
* Throughput: `ViltModel` forward plus a one-score head, as the baseline times inference.
* Retrieval: the official `compute_irtr_recall` on `ViltModel`: each image's `visual_embed`
  once (all patches), then every text batch of 64, padded to 40, through the full model with the
  image embedding expanded over the batch (`image_embeds`, which HF's forward accepts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViltModel
from transformers.masking_utils import create_bidirectional_mask

from vilt_lab.model import ITMHead, MLMHead, ViltBackbone
from vilt_lab.weights.hf import to_hf

# The official evaluation tokenises every caption padded to max_text_len and scores 64 per pass.
OFFICIAL_TEXT_BATCH = 64


class HFPretrain(nn.Module):
    """ViltModel + ITM Linear + MLM head, two passes per step (the baseline script's model)."""

    def __init__(self, vilt: ViltModel, itm: nn.Linear, mlm: nn.Sequential, text_len: int) -> None:
        super().__init__()
        self.vilt = vilt
        self.itm = itm
        self.mlm = mlm
        self.text_len = text_len

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        pix: torch.Tensor,
        pmask: torch.Tensor,
        labels: torch.Tensor,
        itm_labels: torch.Tensor,
        ids_masked: torch.Tensor,
    ) -> torch.Tensor:
        """MLM loss on the masked pass plus ITM loss on the plain pass."""
        o = self.vilt(input_ids=ids_masked, attention_mask=mask, pixel_values=pix, pixel_mask=pmask)
        logits = self.mlm(o.last_hidden_state[:, : self.text_len])
        l_mlm = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100
        )
        o2 = self.vilt(input_ids=ids, attention_mask=mask, pixel_values=pix, pixel_mask=pmask)
        l_itm = F.cross_entropy(self.itm(o2.pooler_output).float(), itm_labels)
        return l_mlm + l_itm


def hf_pretrain_from_ours(
    backbone: ViltBackbone, itm: ITMHead, mlm: MLMHead, max_image_len: int, text_len: int
) -> HFPretrain:
    """`HFPretrain` holding our backbone's and heads' weights (copies, so the two train apart).

    max_image_len: patches HF samples per image in training (its `config.max_image_length`,
    which `to_hf` leaves at -1, the evaluation setting).
    """
    vilt = to_hf(backbone)
    vilt.config.max_image_length = max_image_len
    hidden, vocab = backbone.config.hidden_size, backbone.config.vocab_size
    itm_linear = nn.Linear(hidden, 2)
    mlm_seq = nn.Sequential(
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.LayerNorm(hidden, eps=mlm.transform.LayerNorm.eps),
        nn.Linear(hidden, vocab),
    )
    with torch.no_grad():
        itm_linear.weight.copy_(itm.fc.weight)
        itm_linear.bias.copy_(itm.fc.bias)
        mlm_seq[0].load_state_dict(mlm.transform.dense.state_dict())
        mlm_seq[2].load_state_dict(mlm.transform.LayerNorm.state_dict())
        mlm_seq[3].weight.copy_(mlm.decoder.weight)
        mlm_seq[3].bias.copy_(mlm.bias)
    return HFPretrain(vilt, itm_linear, mlm_seq, text_len).train()


def hf_pretrain_batch(batch: dict[str, torch.Tensor], itm_labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """HFPretrain's arguments from our pre-training batch: the same ids, masks and MLM labels,
    the images as float pixels (HF's processor normalises in the data pipeline, so HF's step is
    not charged for it) and a long pixel mask."""
    from vilt_lab.data.normalize import normalize_images

    pix = normalize_images(batch["image"], batch["pixel_mask"])
    return (
        batch["input_ids"],
        batch["attention_mask"],
        pix,
        batch["pixel_mask"].long(),
        batch["mlm_labels"],
        itm_labels,
        batch["mlm_input_ids"],
    )


def hf_visual_embedding_and_transformer(
    hf: ViltModel,
    text_embeds: torch.Tensor,
    text_mask: torch.Tensor,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor,
) -> torch.Tensor:
    """HF's image embedding (all patches), modality type, concatenation, encoder and final norm:
    what `ViltModel.forward` runs after its text embedding, through HF's own modules and mask.

    text_embeds: the text already embedded with its modality type (`hf_text_embeds`), untimed.
    """
    emb = hf.embeddings
    image, image_mask, _ = emb.visual_embed(pixel_values, pixel_mask, max_image_length=-1)
    image = image + emb.token_type_embeddings(torch.ones_like(image_mask, dtype=torch.long))
    x = torch.cat([text_embeds, image], dim=1)
    mask = torch.cat([text_mask, image_mask], dim=1)
    mask = create_bidirectional_mask(config=hf.config, inputs_embeds=x, attention_mask=mask)
    return hf.layernorm(hf.encoder(x, attention_mask=mask)[0])


def hf_text_embeds(hf: ViltModel, input_ids: torch.Tensor) -> torch.Tensor:
    """HF's text embedding plus the text modality type (row 0), as its forward adds it."""
    emb = hf.embeddings
    text = emb.text_embeddings(input_ids=input_ids)
    return text + emb.token_type_embeddings(torch.zeros_like(input_ids))


def pad_texts(
    text_ids: Sequence[Sequence[int]], length: int, pad_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every text padded to ``length`` (the official tokenisation: padding="max_length")."""
    ids = torch.full((len(text_ids), length), pad_token_id, dtype=torch.long)
    for row, text in enumerate(text_ids):
        ids[row, : len(text)] = torch.as_tensor(text, dtype=torch.long)
    mask = torch.arange(length) < torch.tensor([len(t) for t in text_ids])[:, None]
    return ids, mask.long()


@torch.inference_mode()
def official_retrieval_scores(
    hf: ViltModel,
    score_head: Callable[[torch.Tensor], torch.Tensor],
    pixel_values: Sequence[torch.Tensor],
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    text_batch_size: int = OFFICIAL_TEXT_BATCH,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
) -> torch.Tensor:
    """(N_images, N_texts) scores by the official algorithm on HF `ViltModel`.

    pixel_values: one normalised (3, h, w) image per row, on the model's device.
    text_ids, text_mask: (N_texts, 40) padded texts (`pad_texts`), on the model's device.
    score_head: pooled (B, D) -> (B,) (our retrieval head, the same weights on both sides).
    """
    autocast = autocast or nullcontext
    hf.eval()
    rows = []
    for image in pixel_values:
        pixel_mask = torch.ones(1, *image.shape[-2:], dtype=torch.long, device=image.device)
        with autocast():
            image_embeds, image_masks, _ = hf.embeddings.visual_embed(
                image[None], pixel_mask, max_image_length=-1
            )
            scores = []
            for ids, mask in zip(
                text_ids.split(text_batch_size), text_mask.split(text_batch_size), strict=True
            ):
                B = ids.shape[0]
                out = hf(
                    input_ids=ids,
                    attention_mask=mask,
                    image_embeds=image_embeds.expand(B, -1, -1),
                    pixel_mask=image_masks.expand(B, -1),
                )
                scores.append(score_head(out.pooler_output))
        rows.append(torch.cat(scores).float().cpu())
    return torch.stack(rows)
