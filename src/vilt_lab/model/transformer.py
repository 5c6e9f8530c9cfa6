"""Pre-LN transformer blocks with timm ViT parameter names (`attn.qkv`, `mlp.fc1`, `norm1`...).

Attention goes through `scaled_dot_product_attention` with a key-padding mask: the fused kernels
(flash / memory-efficient) replace the eager softmax(QK^T)V of the official and HF code. Flash
attention takes no mask: a batch with nothing padded passes none (`ViltBackbone.encode`'s
`unpadded`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (with bias, as timm's ViT)."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, rows: int | None = None
    ) -> torch.Tensor:
        """x: (B, S, D); key_mask: (B, S) bool, True where a token may be attended to.

        rows: compute only the first `rows` positions' outputs, (B, rows, D): their queries
        attend to every key as usual, so those rows equal the full pass's; only the query
        projection and the output of the other positions are skipped (see `Block.forward`).
        """
        B, S, D = x.shape
        if rows is None:
            q, k, v = (
                self.qkv(x).view(B, S, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            )
        else:
            # The fused weight's first D output rows are the queries, the next 2D keys and values.
            weight, bias = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :rows], weight[:D], bias[:D])
            q = q.view(B, rows, self.num_heads, self.head_dim).transpose(1, 2)
            kv = F.linear(x, weight[D:], bias[D:]).view(B, S, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        # (B, 1, 1, S) broadcasts over heads and queries. Masking keys only: every query row keeps at
        # least its own valid text [CLS] key, so no row is fully masked and no NaN can appear.
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        x = x.transpose(1, 2).reshape(B, q.shape[2], D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """`x + Attn(LN1(x))`, then `x + MLP(LN2(x))`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, drop=drop)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None, rows: int | None = None
    ) -> torch.Tensor:
        """(B, S, D) -> (B, S, D), or (B, rows, D) with only the first `rows` positions computed.

        A last block whose caller reads only the text [CLS] (the pooler: ITM, VQA, NLVR2,
        retrieval) or only the text (MLM) needs every position's keys and values but the queries,
        attention output and MLP of those rows alone: with rows=1 the block costs about 2/12 of
        its full matrix products, exactly the same values for the rows it returns.
        """
        out = self.attn(self.norm1(x), key_mask, rows)
        x = x[:, :rows] + out  # x[:, :None] is every row
        return x + self.mlp(self.norm2(x))
