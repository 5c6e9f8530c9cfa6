"""Whole-word masking for MLM, an optional collate step that only pre-training uses.

Why not HF's collator: in transformers 5, `DataCollatorForLanguageModeling(whole_word_mask=True)`
forces `mask_replace_prob=1` (it warns "Random token replacement is not supported with whole
word masking"), so every masked piece becomes [MASK]. ViLT's recipe (transformers 4.2.1's
`DataCollatorForWholeWordMask`) keeps BERT's per-token 80/10/10 replacement under whole-word
masking, which `mask_tokens` does under either rule of choosing the words (`objective.mlm.rule`):

* ``per_word``: each word is chosen with probability p, over real tokens only; a caption of W
  words has no masked token with probability (1 - p)^W.
* ``official``: 4.2.1's rule, as the official code calls it on captions padded to
  max_text_len = 40 (reference Sec. 2.2): the 38 positions between [CLS] and [SEP] are the
  candidates, [PAD]s included, a word's pieces (word ids here, "##" there) one candidate; in a
  random order, candidates are taken while they fit a budget of max(1, round(0.15 * 40)) = 6
  pieces (one that would overflow it is skipped); then the [PAD]s taken are dropped. About 6/38
  (16%) of the real tokens are masked, however long the caption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # importing transformers costs seconds; only the type is needed
    from transformers import BatchEncoding, PreTrainedTokenizerBase

IGNORE_INDEX = -100
MASK_PROB = 0.8  # of the masked tokens, the share replaced by [MASK]
RANDOM_PROB = 0.1  # ... replaced by a uniformly random token; the remaining 10% stay unchanged
WHOLE_WORD_RULES = ("per_word", "official")
# The `objective.mlm` keys the data workers use (MaskingStep's fields of the same names); the
# objective module never sees them.
MASKING_KEYS = ("whole_word", "probability", "rule")


def word_ids_from_encoding(batch_encoding: BatchEncoding) -> torch.Tensor:
    """(B, T) long word index of every token of a fast tokenizer's `BatchEncoding`, -1 for special
    tokens and padding (where `word_ids()` says None). Sequences must be padded to one length."""
    if batch_encoding.encodings is None:
        raise ValueError("word ids need a fast tokenizer (BatchEncoding.encodings is None)")
    rows = [[-1 if w is None else w for w in encoding.word_ids] for encoding in batch_encoding.encodings]
    return torch.tensor(rows, dtype=torch.long)


def official_budget(padded_length: int, probability: float) -> int:
    """Pieces 4.2.1 masks per caption: round(p * the padded length), at least one (its cap of 512
    predictions never binds at 40 tokens)."""
    return max(1, round(padded_length * probability))


def official_choice(
    word_ids: torch.Tensor, pad_slots: torch.Tensor, budget: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, T) bool: the real tokens 4.2.1's whole-word rule masks (see the module docstring).

    Args:
        word_ids: (B, T) as for `mask_tokens`.
        pad_slots: (B,) the [PAD]s each caption has once padded to the official length; they are
            candidates of one piece that use up the budget and are never masked.
        budget: pieces per caption (`official_budget`).
    """
    B = word_ids.shape[0]
    real = word_ids >= 0
    index = word_ids.clamp(min=0)
    num_words = int(index.max()) + 1
    word_sizes = torch.zeros(B, num_words, dtype=torch.long).scatter_add_(1, index, real.long())
    max_pads = int(pad_slots.max().clamp(min=0))
    pad_sizes = (torch.arange(max_pads) < pad_slots[:, None]).long()
    # Candidates of size 0 (a word or [PAD] this caption lacks) take no place in the order.
    sizes = torch.cat([word_sizes, pad_sizes], dim=1)
    # argsort of uniform keys: a uniformly random order of each caption's candidates (the
    # collator's random.shuffle), drawn for the whole batch at once.
    order = torch.rand(sizes.shape, generator=generator).argsort(dim=1)
    sizes_in_order = sizes.gather(1, order)
    taken_in_order = torch.zeros_like(sizes_in_order, dtype=torch.bool)
    used = torch.zeros(B, dtype=torch.long)
    for step in range(sizes.shape[1]):  # greedy, so sequential over candidates; vectorised over B
        size = sizes_in_order[:, step]
        take = (size > 0) & (used + size <= budget)
        used += size * take
        taken_in_order[:, step] = take
        if bool((used == budget).all()):  # every caption is full: nothing later fits
            break
    taken = torch.zeros_like(taken_in_order).scatter_(1, order, taken_in_order)
    return real & taken[:, :num_words].gather(1, index)


def mask_tokens(
    input_ids: torch.Tensor,
    word_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    whole_word: bool = True,
    rule: str = "per_word",
    attention_mask: torch.Tensor | None = None,
    padded_length: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a (B, T) batch: (masked_input_ids, labels); pure CPU torch for the workers.

    Args:
        input_ids: (B, T) long token ids.
        word_ids: (B, T) long word index of each token, -1 for special tokens and padding
            (see `word_ids_from_encoding`); tokens with -1 are never masked.
        vocab_size: random replacements are drawn uniformly from range(vocab_size).
        mask_token_id: the [MASK] id.
        mlm_probability: without `whole_word`, each real token is chosen with this probability;
            with it, see `rule`.
        rule: how `whole_word` chooses words (a :data:`WHOLE_WORD_RULES` value, module docstring):
            "per_word" chooses each word with `mlm_probability`, so about this share of real
            tokens is masked; "official" is transformers 4.2.1's, which needs `attention_mask`
            (B, T) and `padded_length`, the length the official pads captions to (max_text_len).
        generator: makes the masking reproducible.

    Each masked token independently becomes [MASK] (80%), a random token (10%) or stays (10%).
    Labels hold the original id on masked tokens and -100 elsewhere.
    """
    B, T = input_ids.shape
    real = word_ids >= 0
    if not whole_word:
        masked = real & (torch.rand(B, T, generator=generator) < mlm_probability)
    elif rule == "per_word":
        # One draw per word, spread to its pieces with a gather: no loop over tokens or words.
        num_words = int(word_ids.max().clamp(min=0)) + 1
        chosen = torch.rand(B, num_words, generator=generator) < mlm_probability
        masked = real & chosen.gather(1, word_ids.clamp(min=0))
    elif rule == "official":
        if attention_mask is None or padded_length is None:
            raise ValueError("rule='official' needs attention_mask and padded_length")
        pad_slots = padded_length - attention_mask.sum(dim=1)
        masked = official_choice(
            word_ids, pad_slots, official_budget(padded_length, mlm_probability), generator
        )
    else:
        raise ValueError(f"objective.mlm.rule={rule!r}: expected one of {WHOLE_WORD_RULES}")
    choice = torch.rand(B, T, generator=generator)
    random_tokens = torch.randint(vocab_size, (B, T), generator=generator, dtype=input_ids.dtype)
    replaced = torch.where(choice < MASK_PROB, torch.full_like(input_ids, mask_token_id), input_ids)
    replaced = torch.where(
        (choice >= MASK_PROB) & (choice < MASK_PROB + RANDOM_PROB), random_tokens, replaced
    )
    masked_input_ids = torch.where(masked, replaced, input_ids)
    labels = torch.where(masked, input_ids, IGNORE_INDEX)
    return masked_input_ids, labels


def masked_count(labels: torch.Tensor) -> int:
    """How many tokens `mask_tokens`' labels mark for prediction (the others are IGNORE_INDEX)."""
    return int((labels != IGNORE_INDEX).sum())


@dataclass(frozen=True)
class MaskingStep:
    """The collate step that adds ``mlm_input_ids`` and ``mlm_labels`` (B, T) to a batch, and
    ``mlm_count``, the number of masked tokens as an int: the MLM head's batch, a shape the step
    then knows without counting the labels on the device (a host sync).

    ``padded_length``: data.max_text_len, the length the official pads every caption to; only
    ``rule="official"`` reads it (its budget and [PAD] candidates come from it, not from the
    batch's own padding, so ``data.text_padding`` does not change which tokens are masked).
    """

    vocab_size: int
    mask_token_id: int
    probability: float = 0.15
    whole_word: bool = True
    rule: str = "per_word"
    padded_length: int = 40

    def __post_init__(self) -> None:
        if self.rule not in WHOLE_WORD_RULES:
            raise ValueError(f"objective.mlm.rule={self.rule!r}: expected one of {WHOLE_WORD_RULES}")

    @classmethod
    def from_settings(
        cls, tokenizer: PreTrainedTokenizerBase, settings: Mapping[str, Any], padded_length: int
    ) -> MaskingStep:
        """The step that `objective.mlm`'s :data:`MASKING_KEYS` in ``settings`` describe (absent
        keys: the defaults) for ``tokenizer``, captions padded to ``padded_length``."""
        chosen = {key: settings[key] for key in MASKING_KEYS if key in settings}
        return cls(len(tokenizer), tokenizer.mask_token_id, padded_length=padded_length, **chosen)

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
            rule=self.rule,
            attention_mask=encoding["attention_mask"],
            padded_length=self.padded_length,
            generator=generator,
        )
        return {
            "mlm_input_ids": mlm_input_ids,
            "mlm_labels": mlm_labels,
            "mlm_count": masked_count(mlm_labels),
        }
