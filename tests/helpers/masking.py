"""A made-up caption corpus, a WordPiece tokenizer trained on it, and statistics read off masks:
what the whole-word masking tests measure `mask_tokens` with."""

from __future__ import annotations

import random

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

MAX_LEN = 40
VOCAB_SIZE = 250
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_captions(count: int, seed: int = 0) -> list[str]:
    """Captions over ~300 made-up words: far more than a 250-piece vocabulary holds whole, so
    many words split into several pieces."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "shi", "ven", "dor", "al", "qu", "ix", "em", "bra"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)})
    common = ["a", "the", "of", "on", "and", "is"]

    def caption() -> str:
        chosen = [
            rng.choice(common) if rng.random() < 0.3 else rng.choice(words) for _ in range(rng.randint(3, 16))
        ]
        return " ".join(chosen) + rng.choice([".", "!", ""])

    return [caption() for _ in range(count)]


def train_tokenizer(captions: list[str]) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer of VOCAB_SIZE pieces trained on `captions`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        captions, trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL)
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def word_extremes(masked: torch.Tensor, word_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (caption, word): whether any / all of its pieces are masked (words absent: any=0, all=1)."""
    num_words = int(word_ids.max()) + 1
    index = word_ids.clamp(min=0)
    value = torch.where(word_ids >= 0, masked.long(), 0)
    any_ = torch.zeros(len(word_ids), num_words, dtype=torch.long).scatter_reduce(1, index, value, "amax")
    value = torch.where(word_ids >= 0, masked.long(), 1)
    all_ = torch.ones(len(word_ids), num_words, dtype=torch.long).scatter_reduce(1, index, value, "amin")
    return any_.bool(), all_.bool()


def replacement_shares(
    original: torch.Tensor, masked_ids: torch.Tensor, masked: torch.Tensor, mask_token_id: int
) -> tuple[float, float, float]:
    """Shares of masked tokens that became [MASK], another token, or stayed unchanged.

    A random replacement that happens to draw the original token counts as unchanged (1 in 250).
    """
    new, old = masked_ids[masked], original[masked]
    to_mask = (new == mask_token_id) & (old != mask_token_id)
    unchanged = new == old
    other = ~to_mask & ~unchanged
    n = masked.sum().item()
    return to_mask.sum().item() / n, other.sum().item() / n, unchanged.sum().item() / n
