"""`objective.mlm.rule=official`: transformers 4.2.1's whole-word rule, held to that algorithm.

The reference below is the algorithm written from its definition (`DataCollatorForWholeWordMask`
of 4.2.1 as the official code calls it: captions padded to 40, reference Sec. 2.2), one caption
at a time over token strings with Python's `random`; `mask_tokens` is vectorised over word ids
and draws from a torch generator, so the two agree in distribution, compared over many draws.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from helpers.configs import compose_config, train_settings
from helpers.masking import MAX_LEN, make_captions, replacement_shares, train_tokenizer, word_extremes
from vilt_lab.data.masking import MaskingStep, mask_tokens, word_ids_from_encoding
from vilt_lab.tasks import get_task

PROBABILITY = 0.15
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")
NUM_CAPTIONS = 3000
ROUNDS = 10  # draws per caption and implementation: 30k caption-draws each


def reference_whole_word_mask(tokens: list[str], probability: float, rng: random.Random) -> list[bool]:
    """Which positions of one padded caption 4.2.1 masks: `_whole_word_mask`'s candidates (every
    token but [CLS] and [SEP], "##" pieces joined to the word before), shuffled, taken while they
    fit round(len * p) pieces (at least 1, at most 512), then `mask_tokens` drops [CLS], [SEP]
    and [PAD]."""
    candidates: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if candidates and token.startswith("##"):
            candidates[-1].append(i)
        else:
            candidates.append([i])
    rng.shuffle(candidates)
    budget = min(512, max(1, int(round(len(tokens) * probability))))
    picked: list[int] = []
    for word in candidates:
        if len(picked) >= budget:
            break
        if len(picked) + len(word) > budget:
            continue
        picked.extend(word)
    chosen = set(picked)
    return [i in chosen and tokens[i] not in ("[CLS]", "[SEP]", "[PAD]") for i in range(len(tokens))]


@pytest.fixture(scope="module")
def captions():
    """(tokenizer, the captions padded to 40 as the official pads them, padded to the batch's
    longest as vilt_lab's collator does by default)."""
    texts = make_captions(NUM_CAPTIONS, seed=1)
    tokenizer = train_tokenizer(texts)

    def encode(padding: str):
        return tokenizer(texts, padding=padding, truncation=True, max_length=MAX_LEN, return_tensors="pt")

    return tokenizer, encode("max_length"), encode("longest")


def official(tokenizer, encoding, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return mask_tokens(
        encoding["input_ids"],
        word_ids_from_encoding(encoding),
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        rule="official",
        attention_mask=encoding["attention_mask"],
        padded_length=MAX_LEN,
        generator=torch.Generator().manual_seed(seed),
    )


def within_4_sigma(ours: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether two samples' means differ by at most 4 standard errors (plus 1e-3)."""
    error = math.sqrt(ours.var().item() / len(ours) + reference.var().item() / len(reference))
    return abs(ours.mean().item() - reference.mean().item()) <= 4 * error + 1e-3


def test_candidates_are_the_references_words(captions) -> None:
    """Word ids group pieces as 4.2.1's "##" rule does, so the candidates are the same."""
    tokenizer, padded, _ = captions
    word_ids = word_ids_from_encoding(padded)
    for row, words in zip(padded["input_ids"][:200].tolist(), word_ids[:200].tolist(), strict=True):
        tokens = tokenizer.convert_ids_to_tokens(row)
        starts = [i for i, w in enumerate(words) if w >= 0 and (i == 0 or words[i - 1] != w)]
        assert starts == [
            i for i, t in enumerate(tokens) if t not in SPECIAL_TOKENS and not t.startswith("##")
        ]


def test_statistics_match_the_reference_by_length(captions) -> None:
    """Masked real tokens (their share, and per caption by length) and captions left without any
    (by length); vilt_lab pads to the batch's longest caption, the reference to 40."""
    tokenizer, padded, longest = captions
    real = word_ids_from_encoding(padded) >= 0
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in padded["input_ids"].tolist()]
    rng = random.Random(0)
    ours_masked, ref_masked = [], []
    for draw in range(ROUNDS):
        _, labels = official(tokenizer, longest, seed=draw)
        ours_masked.append((labels != -100).sum(1))
        ref = torch.tensor([reference_whole_word_mask(t, PROBABILITY, rng) for t in tokens])
        ref_masked.append(ref.sum(1))
    ours_masked, ref_masked = torch.cat(ours_masked), torch.cat(ref_masked)
    lengths = real.sum(1).repeat(ROUNDS)

    share_ours, share_ref = ours_masked.sum() / lengths.sum(), ref_masked.sum() / lengths.sum()
    assert abs(share_ours - share_ref) < 0.004
    assert 0.14 < share_ref < 0.17  # about 6/38 of the real tokens (reference Sec. 2.2)

    compared = 0
    for length in lengths.unique().tolist():
        at = lengths == length
        if at.sum() < 1000:
            continue
        for statistic in (lambda masked: (masked == 0).float(), lambda masked: masked.float()):
            assert within_4_sigma(statistic(ours_masked[at]), statistic(ref_masked[at])), length
        compared += 1
    assert compared >= 8


def single_piece_batch(num_words: int, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, word_ids, attention_mask) of `rows` copies of one caption of one-piece words."""
    word_ids = torch.tensor([-1, *range(num_words), -1])
    return (
        torch.full((rows, num_words + 2), 7),
        word_ids.repeat(rows, 1),
        torch.ones(rows, num_words + 2, dtype=torch.long),
    )


@pytest.mark.parametrize("num_words", [4, 12, 16])
def test_one_piece_words_follow_the_algorithms_formulas(num_words: int) -> None:
    """With one-piece words nothing is skipped: 6 of the 38 candidates are taken, so n words
    have 6n/38 masked on average and none with probability C(38 - n, 6) / C(38, 6); a per-word
    draw leaves none with probability 0.85^n."""
    rows = 20_000
    input_ids, word_ids, attention_mask = single_piece_batch(num_words, rows)
    kwargs = dict(vocab_size=100, mask_token_id=3, attention_mask=attention_mask, padded_length=MAX_LEN)
    for rule, expected_none in [
        ("official", math.comb(38 - num_words, 6) / math.comb(38, 6)),
        ("per_word", (1 - PROBABILITY) ** num_words),
    ]:
        generator = torch.Generator().manual_seed(num_words)
        _, labels = mask_tokens(input_ids, word_ids, rule=rule, generator=generator, **kwargs)
        masked = (labels != -100).sum(1)
        none = (masked == 0).float().mean().item()
        assert abs(none - expected_none) < 4 * math.sqrt(expected_none * (1 - expected_none) / rows) + 1e-3
        if rule == "official":
            assert abs(masked.float().mean().item() - 6 * num_words / 38) < 0.03


def test_a_word_that_overflows_the_budget_is_skipped_and_the_draw_goes_on() -> None:
    """Per word, how often it is masked, on a caption of words of 5, 4, 3, 2 and 1 pieces: the
    short words fill what the long ones leave (ending the draw at the first word that overflows
    would mask the 1-piece word 0.17 of the time instead of 0.19)."""
    sizes, rows = [5, 4, 3, 2, 1], 20_000
    tokens = ["[CLS]", *(t for w, n in enumerate(sizes) for t in [f"w{w}", *["##x"] * (n - 1)]), "[SEP]"]
    real_length = len(tokens)
    tokens += ["[PAD]"] * (MAX_LEN - real_length)
    starts = [1 + sum(sizes[:w]) for w in range(len(sizes))]
    rng = random.Random(0)
    reference = torch.tensor([reference_whole_word_mask(tokens, PROBABILITY, rng) for _ in range(rows)])

    word_ids = torch.tensor([-1, *(w for w, n in enumerate(sizes) for _ in range(n)), -1]).repeat(rows, 1)
    _, labels = mask_tokens(
        torch.full_like(word_ids, 7),
        word_ids,
        vocab_size=100,
        mask_token_id=3,
        rule="official",
        attention_mask=torch.ones_like(word_ids),
        padded_length=MAX_LEN,
        generator=torch.Generator().manual_seed(0),
    )
    ours = labels != -100
    for start in starts:
        assert within_4_sigma(ours[:, start].float(), reference[:, start].float()), start
    assert reference[:, starts[-1]].float().mean() > 0.18


def test_whole_words_and_80_10_10(captions) -> None:
    tokenizer, padded, _ = captions
    masked_ids, labels = official(tokenizer, padded, seed=0)
    masked = labels != -100
    any_, all_ = word_extremes(masked, word_ids_from_encoding(padded))
    assert torch.equal(any_, all_ & any_)  # a word is masked whole or not at all
    assert (masked.sum(1) <= 6).all()  # the budget of round(0.15 * 40) pieces
    to_mask, other, unchanged = replacement_shares(
        padded["input_ids"], masked_ids, masked, tokenizer.mask_token_id
    )
    assert abs(to_mask - 0.8) < 0.02 and abs(other - 0.1) < 0.02 and abs(unchanged - 0.1) < 0.02


def test_a_seed_fixes_the_masks_whatever_the_batch_padding(captions) -> None:
    tokenizer, padded, longest = captions
    first, again, other = (official(tokenizer, longest, seed) for seed in (3, 3, 4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    # The budget and [PAD] candidates come from padded_length, not from the batch's padding.
    _, labels_padded = official(tokenizer, padded, seed=3)
    assert torch.equal(labels_padded[:, : first[1].shape[1]], first[1])
    assert (labels_padded[:, first[1].shape[1] :] == -100).all()


def test_the_rule_travels_from_the_config_to_the_masking_step(shapes_tokenizer) -> None:
    cfg = train_settings(compose_config(["objective=[itm,mlm]", "objective.mlm.rule=official"]))
    task = get_task(cfg.task.name)
    (step,) = task.items(cfg, shapes_tokenizer, None).steps
    assert step == MaskingStep(
        len(shapes_tokenizer), shapes_tokenizer.mask_token_id, 0.15, True, "official", cfg.data.max_text_len
    )
    assert "rule" not in task.objectives(cfg, shapes_tokenizer, train=True)["mlm"][1]  # data side only
    default = task.items(
        train_settings(compose_config(["objective=[itm,mlm]"])), shapes_tokenizer, None
    ).steps[0]
    assert default.rule == "per_word"
    with pytest.raises(ValueError, match=r"objective\.mlm\.rule='bert': expected one of"):
        MaskingStep(10, 3, rule="bert")
