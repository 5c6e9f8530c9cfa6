"""Heads on top of the backbone (shapes as in the official code, Sec. 1.8 of the reference)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViltConfig
from .init import init_weights
from .transformer import Block


class PredictionHeadTransform(nn.Module):
    """BERT's head transform: Linear -> GELU -> LayerNorm(eps 1e-12)."""

    def __init__(self, hidden_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class ITMHead(nn.Module):
    """Image-text matching: one Linear(hidden -> 2) on the pooled vector (1 = match)."""

    def __init__(self, hidden_size: int, std: float = 0.02) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, 2)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class MLMHead(nn.Module):
    """Masked language modelling: transform, then a decoder with its own bias.

    Not tied to the word embeddings, as in the official code (HF: tie_word_embeddings=False).
    """

    def __init__(self, hidden_size: int, vocab_size: int, eps: float = 1e-12, std: float = 0.02) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(lambda m: init_weights(m, std))

    def forward(self, text_feats: torch.Tensor) -> torch.Tensor:
        # The bias inside the matrix product, as HF's tied decoder bias: added after it, an fp32
        # bias would promote autocast's bf16 logits (tokens x vocabulary) to a second, fp32 copy.
        return F.linear(self.transform(text_feats), self.decoder.weight, self.bias)


class MPPHead(nn.Module):
    """Masked patch prediction: transform, then Linear(hidden -> 3 x bins) (mean RGB classes)."""

    def __init__(self, hidden_size: int, bins: int = 256, eps: float = 1e-12, std: float = 0.02) -> None:
        super().__init__()
        self.bins = bins
        self.transform = PredictionHeadTransform(hidden_size, eps)
        self.decoder = nn.Linear(hidden_size, 3 * bins)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, image_feats: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, 3, bins) logits."""
        return self.decoder(self.transform(image_feats)).unflatten(-1, (3, self.bins))


class MIMDecoder(nn.Module):
    """Masked image modelling: a light MAE-style transformer over one pass's image tokens.

    Linear(hidden -> width), `depth` pre-norm `Block`s (MLP ratio 4, heads of `HEAD_DIM`
    channels, as MAE's 512-wide, 16-head decoder), LayerNorm, Linear(width -> outputs): the
    per-patch target (patch_size^2 * 3 pixels, or 3 x 256 mean-colour bins). No position table of
    its own: unlike MAE, whose decoder inserts the mask tokens, here they enter the backbone before
    its position embeddings (as MPP's), so every token already says where it is.
    """

    HEAD_DIM = 32

    def __init__(
        self, hidden_size: int, width: int, depth: int, outputs: int, eps: float = 1e-6, std: float = 0.02
    ) -> None:
        super().__init__()
        if width % self.HEAD_DIM:
            raise ValueError(f"MIM decoder width {width} is not a multiple of {self.HEAD_DIM}")
        self.width, self.depth, self.outputs = width, depth, outputs
        self.embed = nn.Linear(hidden_size, width)
        self.blocks = nn.ModuleList(
            Block(width, width // self.HEAD_DIM, 4 * width, eps=eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=eps)
        self.predict = nn.Linear(width, outputs)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, image_feats: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1 + L, D) image [CLS] and patch features, (B, 1 + L) bool mask -> (B, L, outputs).

        The image [CLS] takes part (as MAE's) and is always valid, so no query attends to nothing.
        """
        x = self.embed(image_feats)
        for block in self.blocks:
            x = block(x, image_mask)
        return self.predict(self.norm(x[:, 1:]))


class MLPClassifier(nn.Module):
    """Linear(in -> width) -> LayerNorm -> GELU -> Linear(width -> num_labels).

    The shape of the official VQA and NLVR2 classifiers (and HF's `classifier`); the LayerNorm keeps
    PyTorch's default eps (1e-5) as both of those do. `SEQUENTIAL_LAYERS` maps the `nn.Sequential`
    indices they use to our layer names.
    """

    # Sequential index in the official and HF code -> our layer name (index 2 is the GELU).
    SEQUENTIAL_LAYERS = {"0": "fc1", "1": "norm", "3": "fc2"}

    def __init__(self, in_dim: int, width: int, num_labels: int, std: float = 0.02) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, width)
        self.norm = nn.LayerNorm(width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, num_labels)
        self.apply(lambda m: init_weights(m, std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


class VQAHead(MLPClassifier):
    """VQA answer classifier on the pooled vector: hidden -> 2 x hidden -> answers (3129 for VQAv2)."""

    def __init__(self, hidden_size: int, num_labels: int = 3129, std: float = 0.02) -> None:
        super().__init__(hidden_size, 2 * hidden_size, num_labels, std)


class NLVR2Head(MLPClassifier):
    """NLVR2 classifier on the two pooled vectors (image 1 run with modality type 1, image 2 with 2),
    concatenated: 2 x hidden -> 2 x hidden -> labels (0 = False, 1 = True)."""

    def __init__(self, hidden_size: int, num_labels: int = 2, std: float = 0.02) -> None:
        super().__init__(2 * hidden_size, 2 * hidden_size, num_labels, std)

    def forward(self, pooled_first: torch.Tensor, pooled_second: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([pooled_first, pooled_second], dim=-1))


class RetrievalHead(nn.Module):
    """Image-text retrieval score: Linear(hidden -> 1) on the pooled vector (official `rank_output`)."""

    def __init__(self, hidden_size: int, std: float = 0.02) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, 1)
        self.apply(lambda m: init_weights(m, std))

    @torch.no_grad()
    def copy_itm_match_row(self, itm_weight: torch.Tensor, itm_bias: torch.Tensor) -> None:
        """Take the ITM head's "match" row (row 1, weight and bias), as the official retrieval
        fine-tuning starts."""
        self.fc.weight.copy_(itm_weight[1:2])
        self.fc.bias.copy_(itm_bias[1:2])

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) matching scores."""
        return self.fc(pooled).squeeze(-1)


# Head name (as in `heads.<name>.*` checkpoint keys and `objective.<name>`) -> constructor of the
# head for a backbone config. Sizes that a config does not fix (answers, MPP bins, the MIM decoder's) are keyword
# arguments, stored with a checkpoint's head list.
HEAD_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "itm": lambda config: ITMHead(config.hidden_size),
    # BERT's eps, which the text embedding shares: 1e-12 in the official model, HF's one eps in HF's.
    "mlm": lambda config: MLMHead(config.hidden_size, config.vocab_size, eps=config.text_ln_eps),
    "mpp": lambda config, bins=256: MPPHead(config.hidden_size, bins),
    "mim": lambda config, width, depth, outputs: MIMDecoder(config.hidden_size, width, depth, outputs),
    "vqa": lambda config, num_labels=3129: VQAHead(config.hidden_size, num_labels),
    "nlvr2": lambda config, num_labels=2: NLVR2Head(config.hidden_size, num_labels),
    "irtr": lambda config: RetrievalHead(config.hidden_size),
}


def build_head(name: str, config: ViltConfig, **sizes: int) -> nn.Module:
    """A freshly initialised head `name` for a backbone of `config` (sizes: num_labels, bins)."""
    if name not in HEAD_FACTORIES:
        raise KeyError(f"unknown head {name!r}; known heads: {sorted(HEAD_FACTORIES)}")
    try:
        return HEAD_FACTORIES[name](config, **sizes)
    except TypeError as err:
        raise TypeError(f"head {name!r} does not take {sorted(sizes)}: {err}") from err
