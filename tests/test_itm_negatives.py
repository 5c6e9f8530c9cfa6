"""ITM negatives: `objective.itm.negatives` same_source (the official dataset's own negative) and batch."""

from __future__ import annotations

import json
from itertools import islice

import pytest
import torch

from helpers.batches import make_batch
from helpers.configs import fast_config, train_settings
from helpers.images import encode_image
from helpers.models import tiny_backbone
from vilt_lab.data.pipeline import LoaderConfig, Source, build_train_loader
from vilt_lab.objectives import Passes, build_objective, itm_pass, sample_negatives
from vilt_lab.objectives.itm import BATCH, SAME_SOURCE
from vilt_lab.tasks import get_task

# The draws of the in-batch derangement before sources existed (seed 7): batch size ->
# (image_index, labels). Both modes must still draw exactly these on one source.
EARLIER_DRAWS = {
    2: ([0, 0], [1, 0]),
    3: ([2, 1, 2], [0, 1, 1]),
    5: ([1, 0, 2, 3, 4], [0, 0, 1, 1, 1]),
    8: ([3, 1, 2, 7, 0, 5, 6, 4], [0, 1, 1, 0, 0, 1, 1, 0]),
    9: ([1, 8, 2, 3, 4, 0, 6, 7, 5], [0, 0, 1, 1, 1, 0, 1, 1, 0]),
}


def draw(batch_size: int, seed: int, sources: list[int] | torch.Tensor | None = None):
    sources = sources.tolist() if torch.is_tensor(sources) else sources  # the collate's list
    return sample_negatives(batch_size, torch.Generator().manual_seed(seed), sources)


@pytest.mark.parametrize("batch_size", sorted(EARLIER_DRAWS))
def test_one_source_draws_the_earlier_negatives(batch_size: int) -> None:
    expected = EARLIER_DRAWS[batch_size]
    for sources in (None, [0] * batch_size, [3] * batch_size):
        image_index, labels = draw(batch_size, 7, sources)
        assert (image_index.tolist(), labels.tolist()) == expected


def test_same_source_is_batch_bit_for_bit_on_one_source() -> None:
    for batch_size in range(1, 34):
        for seed in range(20):
            plain = draw(batch_size, seed)
            one_source = draw(batch_size, seed, [5] * batch_size)
            assert all(torch.equal(a, b) for a, b in zip(plain, one_source, strict=True))


def test_the_objective_on_one_source_is_unchanged_by_the_switch() -> None:
    backbone, batch = tiny_backbone().eval(), make_batch()  # eval: no dropout from the global RNG
    batch["source"] = [0] * len(batch["input_ids"])
    same = build_objective("itm", backbone.config, negatives=SAME_SOURCE)
    plain = build_objective("itm", backbone.config, negatives=BATCH)
    plain.load_state_dict(same.state_dict())
    outputs = [
        objective(batch, backbone, Passes(generator=torch.Generator().manual_seed(3)))
        for objective in (same, plain)
    ]
    assert outputs[0].keys() == outputs[1].keys()
    assert all(torch.equal(outputs[0][key], outputs[1][key]) for key in outputs[0])
    assert float(outputs[0]["cross_source"]) == 0.0


def _check_same_source(batch_size: int, sources: torch.Tensor, seed: int) -> int:
    """Check one same-source draw; return how many negatives had to cross sources."""
    image_index, labels = draw(batch_size, seed, sources)
    negative = labels == 0
    own = torch.arange(batch_size)
    assert int(negative.sum()) == batch_size // 2  # the label balance is exact, whatever the sources
    assert (image_index[~negative] == own[~negative]).all()
    assert (image_index[negative] != own[negative]).all()
    crossing = negative & (sources[image_index] != sources)
    alone = torch.bincount(sources)[sources] == 1
    assert not (crossing & ~alone).any()  # only a pair alone in its source ever crosses
    shared = int((~alone).sum())
    assert int(crossing.sum()) == max(0, batch_size // 2 - shared)
    return int(crossing.sum())


def test_same_source_negatives_never_cross_sources() -> None:
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        batch_size = int(torch.randint(4, 33, (1,), generator=g))
        # Two to four sources, each with at least two pairs: no negative may cross.
        num_sources = int(torch.randint(2, 5, (1,), generator=g))
        num_sources = min(num_sources, batch_size // 2)
        sources = torch.cat(
            [
                torch.arange(num_sources).repeat(2),
                torch.randint(0, num_sources, (batch_size - 2 * num_sources,), generator=g),
            ]
        )
        sources = sources[torch.randperm(batch_size, generator=g)]
        assert _check_same_source(batch_size, sources, trial) == 0


def test_pairs_alone_in_their_source_cross_only_when_too_few_share_one() -> None:
    # 4 pairs of 4 sources: both negatives must cross (and are counted).
    assert _check_same_source(4, torch.tensor([0, 1, 2, 3]), 0) == 2
    # Two VG pairs and two lone ones: the two negatives are the VG pair, swapped.
    image_index, labels = draw(4, 0, [0, 0, 1, 2])
    assert labels.tolist() == [0, 0, 1, 1] and image_index.tolist() == [1, 0, 2, 3]
    # 3 negatives, 2 pairs share a source: one crosses.
    for seed in range(20):
        assert _check_same_source(6, torch.tensor([0, 0, 1, 2, 3, 4]), seed) == 1
    # Two negatives over sources of 3 and 2 pairs: a source's single negative takes another pair's
    # image of that source, a positive's too; none crosses.
    singles = 0
    for seed in range(20):
        assert _check_same_source(5, torch.tensor([0, 0, 0, 1, 1]), seed) == 0
        labels = draw(5, seed, [0, 0, 0, 1, 1])[1]
        singles += int((labels[:3] == 0).sum() == 1)
    assert singles > 0


def test_the_objective_reports_the_share_of_crossing_negatives() -> None:
    backbone, batch = tiny_backbone(), make_batch()  # 4 pairs
    batch["source"] = [0, 1, 2, 3]
    out = build_objective("itm", backbone.config)(batch, backbone, Passes(generator=torch.Generator()))
    assert float(out["cross_source"]) == 1.0
    batch["source"] = [0, 1, 0, 1]
    for seed in range(5):
        passes = Passes(generator=torch.Generator().manual_seed(seed))
        assert float(build_objective("itm", backbone.config)(batch, backbone, passes)["cross_source"]) == 0.0


def test_wpa_draws_the_itm_pass_as_itm_is_set(shapes_world, tmp_path) -> None:
    cfg = train_settings(
        fast_config(shapes_world, tmp_path, "objective=[itm,mlm,wpa]", f"objective.itm.negatives={BATCH}")
    )
    objectives = get_task("pretrain").objectives(cfg, None, train=True)
    assert objectives["itm"][1]["negatives"] == objectives["wpa"][1]["negatives"] == BATCH
    backbone, batch = tiny_backbone(), make_batch()
    passes = Passes(generator=torch.Generator().manual_seed(0))
    itm_pass(batch, backbone, passes, SAME_SOURCE)
    with pytest.raises(ValueError, match="the ITM pass drew same_source negatives, batch asked for"):
        itm_pass(batch, backbone, passes, BATCH)


def test_a_two_source_stream_carries_its_sources(write_raw_shard, shapes_tokenizer) -> None:
    """Batches of a mix say each pair's source; same-source negatives then see an image of it."""
    sizes = {"square": (32, 32), "wide": (64, 32)}  # -> 96 and 160 pixels wide: the width tells
    roots = [
        write_raw_shard(
            name,
            [
                {"__key__": f"{name}{i}", "jpg": encode_image(size), "json": json.dumps({"captions": [name]})}
                for i in range(20)
            ],
        )
        for name, size in sizes.items()
    ]
    config = LoaderConfig(batch_size=8, image_shorter=96, image_longer=160, patch_size=16, shuffle_buffer=16)
    loader = build_train_loader([Source(root, weight=1.0) for root in roots], shapes_tokenizer, config)
    seen, checked = set(), 0
    for step, batch in enumerate(islice(loader, 20)):
        widths = batch["pixel_mask"].any(1).sum(1)
        assert all(type(source) is int for source in batch["source"])  # a host list
        sources = torch.tensor(batch["source"])
        assert torch.equal(widths == 160, sources == 1)
        seen |= set(sources.tolist())
        image_index, labels = sample_negatives(8, torch.Generator().manual_seed(step), batch["source"])
        if torch.bincount(sources, minlength=2).min() >= 2:
            assert torch.equal(widths[image_index], widths)  # every negative kept its source
            checked += 1
    assert seen == {0, 1} and checked >= 10
