"""Model sizes as data.

`ViltConfig` holds every number the backbone needs; `SIZES` names the presets. base32 is the
paper's ViLT-B/32 (Kim et al. 2021, Sec. 3.1). Two LayerNorm epsilons exist because the paper's
model mixes BERT's text embedding (1e-12) with timm ViT blocks (1e-6); HF transformers uses 1e-12
everywhere, which `weights.hf.from_hf` carries over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class ViltConfig:
    """Hyper-parameters of the ViLT backbone.

    Args:
        hidden_size: width of every token.
        num_layers: number of pre-LN transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP width as a multiple of `hidden_size`.
        patch_size: side of the square image patches (pixels).
        image_size: side of the square training image the position table is laid out for; the
            table has (image_size // patch_size)**2 spatial entries plus one for the image [CLS].
        max_text_len: number of text positions (BERT absolute position table size).
        vocab_size: word-piece vocabulary size.
        type_vocab_size: BERT's own token-type table inside the text embedding (always index 0).
        num_modality_types: rows of the modality-type table (2; 3 for NLVR2's second image).
        ln_eps: epsilon of the block and final LayerNorms (timm ViT: 1e-6).
        text_ln_eps: epsilon of the text-embedding LayerNorm (BERT: 1e-12).
        drop_rate: dropout on embeddings, attention output projection and MLP.
        attn_drop_rate: dropout on attention probabilities (0 in the official code).
        init_std: std of the normal initialisation of Linear and Embedding weights.
    """

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 32
    image_size: int = 384
    max_text_len: int = 40
    vocab_size: int = 30522
    type_vocab_size: int = 2
    num_modality_types: int = 2
    ln_eps: float = 1e-6
    text_ln_eps: float = 1e-12
    drop_rate: float = 0.1
    attn_drop_rate: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"model.image_size={self.image_size} is not a multiple of model.patch_size={self.patch_size}"
            )
        if self.num_modality_types < 2:
            raise ValueError("model.num_modality_types must be at least 2 (text and image)")

    @property
    def mlp_dim(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def grid_size(self) -> int:
        """Side of the square position-table grid (12 for 384 / 32)."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ViltConfig:
        """Build from a mapping, naming any key that is not a field (config typos fail loudly)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> ViltConfig:
        return replace(self, **changes)


SIZES: dict[str, ViltConfig] = {
    # Small enough to train on two CPU cores in minutes (tests and `make demo`).
    "tiny": ViltConfig(
        hidden_size=64, num_layers=2, num_heads=2, patch_size=16, image_size=128, vocab_size=1000
    ),
    "small32": ViltConfig(hidden_size=384, num_layers=12, num_heads=6),
    # The paper's ViLT-B/32.
    "base32": ViltConfig(),
    "base16": ViltConfig(patch_size=16),
    "large32": ViltConfig(hidden_size=1024, num_layers=24, num_heads=16),
}


def get_config(name: str, **overrides: Any) -> ViltConfig:
    """The preset `name` with `overrides` applied, e.g. `get_config("tiny", vocab_size=512)`."""
    if name not in SIZES:
        raise KeyError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
    return SIZES[name].replace(**overrides) if overrides else SIZES[name]
