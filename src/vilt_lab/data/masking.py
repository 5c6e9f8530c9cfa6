"""Whole-word masking for MLM, an optional collate step that only pre-training uses.

Why not HF's collator: in transformers 5, `DataCollatorForLanguageModeling(whole_word_mask=True)`
forces `mask_replace_prob=1` (it warns "Random token replacement is not supported with whole
word masking"), so every masked piece becomes [MASK]. ViLT's recipe (transformers 4.2.1's
`DataCollatorForWholeWordMask`) keeps BERT's per-token 80/10/10 replacement under whole-word
masking, which `mask_tokens` does. It also draws words with probability p over real tokens only,
where 4.2.1 masked a fixed round(0.15 * 40) pieces of the padded sequence (about 16% of real
tokens, reference Sec. 2.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # importing transformers costs seconds; only the type is needed
    from transformers import BatchEncoding

IGNORE_INDEX = -100
MASK_PROB = 0.8  # of the masked tokens, the share replaced by [MASK]
RANDOM_PROB = 0.1  # ... replaced by a uniformly random token; the remaining 10% stay unchanged


def word_ids_from_encoding(batch_encoding: BatchEncoding) -> torch.Tensor:
    """(B, T) long word index of every token of a fast tokenizer's `BatchEncoding`, -1 for special
    tokens and padding (where `word_ids()` says None). Sequences must be padded to one length."""
    if batch_encoding.encodings is None:
        raise ValueError("word ids need a fast tokenizer (BatchEncoding.encodings is None)")
    rows = [[-1 if w is None else w for w in encoding.word_ids] for encoding in batch_encoding.encodings]
    return torch.tensor(rows, dtype=torch.long)


def mask_tokens(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    whole_word: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a (B, T) batch: (masked_input_ids, labels); pure CPU torch for the workers.

    Args:
        input_ids: (B, T) long token ids.
        word_ids: (B, T) long word index of each token, -1 for special tokens and padding
            (see `word_ids_from_encoding`); tokens with -1 are never masked.
        vocab_size: random replacements are drawn uniformly from range(vocab_size).
        mask_token_id: the [MASK] id.
        mlm_probability: with `whole_word`, each word is chosen with this probability and all
            its pieces are masked together (so about this share of real tokens is masked);
            otherwise each real token is chosen independently.
        generator: makes the masking reproducible.

    Each masked token independently becomes [MASK] (80%), a random token (10%) or stays (10%).
    Labels hold the original id on masked tokens and -100 elsewhere.
    """
    B, T = input_ids.shape
    real = word_ids >= 0
    if whole_word:
        # One draw per word, spread to its pieces with a gather: no loop over tokens or words.
        num_words = int(word_ids.max().clamp(min=0)) + 1
        chosen = torch.rand(B, num_words, generator=generator) < mlm_probability
        masked = real & chosen.gather(1, word_ids.clamp(min=0))
    else:
        masked = real & (torch.rand(B, T, generator=generator) < mlm_probability)
    choice = torch.rand(B, T, generator=generator)
    random_tokens = torch.randint(vocab_size, (B, T), generator=generator, dtype=input_ids.dtype)
    replaced = torch.where(choice < MASK_PROB, torch.full_like(input_ids, mask_token_id), input_ids)
    replaced = torch.where(
        (choice >= MASK_PROB) & (choice < MASK_PROB + RANDOM_PROB), random_tokens, replaced
    )
    masked_input_ids = torch.where(masked, replaced, input_ids)
    labels = torch.where(masked, input_ids, IGNORE_INDEX)
    return masked_input_ids, labels


@dataclass(frozen=True)
class MaskingStep:
    """The collate step that adds ``mlm_input_ids`` and ``mlm_labels`` (B, T) to a batch."""

    vocab_size: int
    mask_token_id: int
    probability: float = 0.15
    whole_word: bool = True

    def __call__(
        self, samples: Sequence[dict[str, Any]], encoding: BatchEncoding, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        mlm_input_ids, mlm_labels = mask_tokens(
            encoding["input_ids"],
            word_ids_from_encoding(encoding),
            vocab_size=self.vocab_size,
            mask_token_id=self.mask_token_id,
            mlm_probability=self.probability,
            whole_word=self.whole_word,
            generator=generator,
        )
        return {"mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels}
