"""Whole-word masking (`mask_tokens`) on a real WordPiece tokenizer, with HF's collator as reference."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from helpers.masking import (
    MAX_LEN,
    VOCAB_SIZE,
    make_captions,
    replacement_shares,
    train_tokenizer,
    word_extremes,
)
from vilt_lab.data.masking import mask_tokens, word_ids_from_encoding

NUM_CAPTIONS = 10_000


@dataclass
class Corpus:
    tokenizer: PreTrainedTokenizerFast
    input_ids: torch.Tensor  # (N, 40)
    word_ids: torch.Tensor  # (N, 40), -1 on special tokens and padding
    special_tokens_mask: torch.Tensor
    offset_mapping: torch.Tensor

    def mask(self, seed: int = 0, whole_word: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(
            self.input_ids,
            self.word_ids,
            vocab_size=len(self.tokenizer),
            mask_token_id=self.tokenizer.mask_token_id,
            whole_word=whole_word,
            generator=torch.Generator().manual_seed(seed),
        )


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    captions = make_captions(NUM_CAPTIONS)
    tokenizer = train_tokenizer(captions)
    encoding = tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=MAX_LEN,
        return_special_tokens_mask=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    return Corpus(
        tokenizer,
        encoding["input_ids"],
        word_ids_from_encoding(encoding),
        encoding["special_tokens_mask"],
        encoding["offset_mapping"],
    )


def test_many_words_have_several_pieces(corpus: Corpus) -> None:
    real = corpus.word_ids >= 0
    pieces = torch.zeros(len(real), int(corpus.word_ids.max()) + 1, dtype=torch.long)
    pieces.scatter_add_(1, corpus.word_ids.clamp(min=0), real.long())
    assert (pieces[pieces > 0] > 1).float().mean() > 0.3


def test_whole_words_are_masked_together(corpus: Corpus) -> None:
    _, labels = corpus.mask()
    any_, all_ = word_extremes(labels != -100, corpus.word_ids)
    assert any_.any()
    assert torch.equal(any_, all_ & any_)


def test_masked_fraction_and_replacement(corpus: Corpus) -> None:
    masked_ids, labels = corpus.mask()
    masked = labels != -100
    real = corpus.word_ids >= 0
    assert abs(masked.sum() / real.sum() - 0.15) < 0.01
    assert torch.equal(labels[masked], corpus.input_ids[masked])
    to_mask, other, unchanged = replacement_shares(
        corpus.input_ids, masked_ids, masked, corpus.tokenizer.mask_token_id
    )
    assert abs(to_mask - 0.8) < 0.02
    assert abs(other - 0.1) < 0.02
    assert abs(unchanged - 0.1) < 0.02
    # Random replacements cover the vocabulary, not just the masked word's pieces.
    assert masked_ids[masked & (masked_ids != corpus.input_ids)].unique().numel() > VOCAB_SIZE // 2


@pytest.mark.parametrize("whole_word", [True, False])
def test_special_tokens_and_padding_are_never_masked(corpus: Corpus, whole_word: bool) -> None:
    masked_ids, labels = corpus.mask(whole_word=whole_word)
    special = corpus.word_ids < 0
    assert torch.equal(special, corpus.special_tokens_mask.bool())  # [CLS], [SEP] and [PAD]
    assert (labels[special] == -100).all()
    assert torch.equal(masked_ids[special], corpus.input_ids[special])


def test_token_level_masking(corpus: Corpus) -> None:
    _, labels = corpus.mask(whole_word=False)
    masked = labels != -100
    assert abs(masked.sum() / (corpus.word_ids >= 0).sum() - 0.15) < 0.01
    any_, all_ = word_extremes(masked, corpus.word_ids)
    assert (any_ & ~all_).any()  # pieces of one word are masked independently


def test_deterministic_with_generator(corpus: Corpus) -> None:
    first, second, other = corpus.mask(seed=7), corpus.mask(seed=7), corpus.mask(seed=8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_matches_hf_token_level_collator(corpus: Corpus) -> None:
    collator = DataCollatorForLanguageModeling(corpus.tokenizer, mlm_probability=0.15, seed=0)
    hf_ids, hf_labels = collator.torch_mask_tokens(
        corpus.input_ids.clone(), special_tokens_mask=corpus.special_tokens_mask
    )
    ours_ids, ours_labels = corpus.mask(whole_word=False)
    real = (corpus.word_ids >= 0).sum()
    hf_masked, ours_masked = hf_labels != -100, ours_labels != -100
    assert abs(hf_masked.sum() / real - ours_masked.sum() / real) < 0.01
    mask_id = corpus.tokenizer.mask_token_id
    hf_shares = replacement_shares(corpus.input_ids, hf_ids, hf_masked, mask_id)
    ours_shares = replacement_shares(corpus.input_ids, ours_ids, ours_masked, mask_id)
    for hf_share, our_share in zip(hf_shares, ours_shares, strict=True):
        assert abs(hf_share - our_share) < 0.02


def test_matches_hf_whole_word_collator_fraction(corpus: Corpus) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collator = DataCollatorForLanguageModeling(
            corpus.tokenizer, mlm_probability=0.15, whole_word_mask=True, seed=0
        )
    # The reason `mask_tokens` exists: HF drops the 80/10/10 rule under whole-word masking.
    assert any("Random token replacement is not supported" in str(w.message) for w in caught)
    hf_ids, hf_labels = collator.torch_mask_tokens(
        corpus.input_ids.clone(),
        special_tokens_mask=corpus.special_tokens_mask,
        offset_mapping=corpus.offset_mapping,
    )
    hf_masked = hf_labels != -100
    assert (hf_ids[hf_masked] == corpus.tokenizer.mask_token_id).all()

    _, labels = corpus.mask()
    real = (corpus.word_ids >= 0).sum()
    # HF groups pieces by character offsets ("word." is one word there, two here): close, not equal.
    assert abs(hf_masked.sum() / real - (labels != -100).sum() / real) < 0.01
    any_, all_ = word_extremes(hf_masked, corpus.word_ids)
    assert torch.equal(any_, all_ & any_)  # HF's words never split one of ours
