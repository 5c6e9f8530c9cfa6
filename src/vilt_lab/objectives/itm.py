"""Image-text matching (ITM): is this image the caption's own?

Negatives come from inside the batch: exactly floor(B/2) pairs, chosen at random, take the
image of another pair. The official code pre-loads a random image of the same dataset per
sample instead (a second image decode per sample, and it can hit the true image by chance).

`negatives` (`objective.itm.negatives`) says which other pairs: `same_source` takes the image
of a pair from the same dataset of the mix (the batch's `source`), as the official negative is:
in the 4M mix a VG region phrase beside a GCC photo is an easier negative than beside another VG
image. `batch` takes any pair's. With one source the two draw the same negatives, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vilt_lab.model import BackboneOutput, ITMHead, ViltBackbone, ViltConfig

from .base import Objective
from .passes import ITM_PASS, MLM_PASS, POOLED, Passes, halves


def _randperm(n: int, generator: torch.Generator | None) -> list[int]:
    """A random permutation of range(n) from a CPU generator, read on the host."""
    return torch.randperm(n, generator=generator, device="cpu").tolist()


def _randint(low: int, high: int, count: int, generator: torch.Generator | None) -> list[int]:
    """`count` uniform integers in [low, high) from a CPU generator, read on the host."""
    return torch.randint(low, high, (count,), generator=generator, device="cpu").tolist()


def random_derangement(n: int, generator: torch.Generator | None = None) -> list[int]:
    """A uniformly random permutation of range(n) without fixed points (n >= 2), drawn from a
    CPU generator (or torch's global one) and checked on the host.

    Rejection sampling: a random permutation is a derangement with probability about 1/e, so
    this takes e ~ 2.7 draws on average.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    while True:
        perm = _randperm(n, generator)
        if all(p != i for i, p in enumerate(perm)):
            return perm


# objective.itm.negatives: where a negative's image comes from (see the module docstring).
SAME_SOURCE, BATCH = "same_source", "batch"
ITM_NEGATIVES = (SAME_SOURCE, BATCH)


def sample_negatives(
    batch_size: int, generator: torch.Generator | None = None, sources: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which image each pair sees and whether it is its own: (image_index, labels), both (B,) long.

    Exactly floor(B/2) pairs are negatives (label 0), each taking the image of another pair of
    its source (``sources``: the source index of each pair; None: one source). The negatives are
    drawn uniformly among the pairs whose source has another pair in the batch; those of one
    source swap images along a random derangement among themselves, so each of their images is
    still used once, and a source's single negative takes any other pair's image of that source.
    Only when too few pairs share a source (a micro batch of 4 from 4 sources) do the remaining
    negatives come from pairs alone in their source, each taking a random other pair's image:
    the balance of labels stays exact, and ITM reports the share of such negatives
    (``cross_source``). B = 1 has no negative.

    Drawn on the host from a CPU ``generator`` (a step's `Passes.host_generator`): every value
    the draw branches on is read in Python, so the step waits for no device. The tensors are on
    the CPU.
    """
    image_index, labels = list(range(batch_size)), [1] * batch_size
    num_negatives = batch_size // 2
    if num_negatives:
        _draw_negatives(image_index, labels, num_negatives, generator, sources)
    return torch.tensor(image_index), torch.tensor(labels)


def _draw_negatives(
    image_index: list[int],
    labels: list[int],
    num_negatives: int,
    generator: torch.Generator | None,
    sources: Sequence[int] | None,
) -> None:
    """`sample_negatives`' draw, written into `image_index` and `labels`."""
    batch_size = len(image_index)
    # Each pair's source as its rank among the batch's sources (what `torch.unique` would number).
    ranks = {source: rank for rank, source in enumerate(sorted(set(sources or [0])))}
    source_of = [ranks[source] for source in sources] if sources is not None else [0] * batch_size
    members = {rank: [i for i in range(batch_size) if source_of[i] == rank] for rank in ranks.values()}
    shared = [len(members[rank]) > 1 for rank in source_of]
    # With one source every pair is a candidate, and the draws below are the in-batch draws of
    # the plain derangement (the same calls on the generator, in the same order).
    candidates = [i for i in range(batch_size) if shared[i]]
    negatives = [candidates[j] for j in _randperm(len(candidates), generator)][:num_negatives]
    short = num_negatives - len(negatives)
    if short:
        alone = [i for i in range(batch_size) if not shared[i]]
        crossing = [alone[j] for j in _randperm(len(alone), generator)[:short]]
        for pair, shift in zip(crossing, _randint(1, batch_size, short, generator), strict=True):
            image_index[pair] = (pair + shift) % batch_size
            labels[pair] = 0
    for rank in sorted({source_of[i] for i in negatives}):
        mine = [i for i in negatives if source_of[i] == rank]
        if len(mine) == 1:
            group = members[rank]
            (shift,) = _randint(1, len(group), 1, generator)
            image_index[mine[0]] = group[(group.index(mine[0]) + shift) % len(group)]
        else:
            for pair, j in zip(mine, random_derangement(len(mine), generator), strict=True):
                image_index[pair] = mine[j]
    for pair in negatives:
        labels[pair] = 0


@dataclass
class ITMDraw:
    """A step's ITM negatives (`sample_negatives`): ``image_index`` and ``labels`` (B,) long on the
    batch's device, ``images`` the image numbers again on the host, ``cross_source`` the share of
    the negatives whose image comes from another source (0 without negatives or sources)."""

    image_index: torch.Tensor
    labels: torch.Tensor
    images: list[int]
    cross_source: float


@dataclass
class ITMPass:
    """The pass on unmasked text and mixed images, with its ITM labels (1 = match)."""

    output: BackboneOutput
    labels: torch.Tensor
    image_index: torch.Tensor
    negatives: str
    cross_source: float


def draw_negatives(batch: dict[str, torch.Tensor], passes: Passes, negatives: str) -> ITMDraw:
    """The step's negatives of the ITM pass, drawn on the host from `passes.host_generator`."""
    if negatives not in ITM_NEGATIVES:
        raise ValueError(f"objective.itm.negatives={negatives!r}: expected one of {ITM_NEGATIVES}")
    sources = batch.get("source")
    if torch.is_tensor(sources):
        raise TypeError(
            "batch['source'] must be a list of ints, as the collate gives it: the draw reads it on the host"
        )
    image_index, labels = sample_negatives(
        batch["input_ids"].shape[0], passes.host_generator, sources if negatives == SAME_SOURCE else None
    )
    images, negative = image_index.tolist(), [label == 0 for label in labels.tolist()]
    crossing = 0
    if sources is not None:
        crossing = sum(sources[j] != sources[i] for i, j in enumerate(images) if negative[i])
    # Non-blocking: a copy from pageable host memory is staged at once and waits for no kernel.
    device = batch["input_ids"].device
    return ITMDraw(
        image_index=image_index.to(device, non_blocking=True),
        labels=labels.to(device, non_blocking=True),
        images=images,
        cross_source=crossing / max(sum(negative), 1),
    )


def itm_pass(
    batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes, negatives: str = SAME_SOURCE
) -> ITMPass:
    """The step's ITM pass, run on first use and shared through `passes` (ITM and WPA), with
    ``negatives`` (one of `ITM_NEGATIVES`) drawn from the same source or the whole batch. A batch
    without ``source`` is one source."""

    def compute() -> ITMPass:
        draw = draw_negatives(batch, passes, negatives)
        output = passes.run(
            backbone,
            batch,
            batch["input_ids"],
            image_index=draw.image_index,
            serves=(ITM_PASS,),
            max_patches=passes.max_patches(backbone, batch, draw.images),
        )
        return ITMPass(output, draw.labels, draw.image_index, negatives, draw.cross_source)

    result = passes.get(ITM_PASS, compute)
    if result.negatives != negatives:  # ITM and WPA share one pass: they must agree on it
        raise ValueError(f"the ITM pass drew {result.negatives} negatives, {negatives} asked for")
    return result


def fused_pass_negatives(objectives: Mapping[str, Objective]) -> str | None:
    """The ITM pass's negatives when `objectives` read both the ITM pass and the MLM pass (what
    `run_itm_and_mlm_passes` can fuse), else None."""
    reads = {objective.reads_pass: objective for objective in objectives.values()}
    if ITM_PASS not in reads or MLM_PASS not in reads:
        return None
    return reads[ITM_PASS].negatives


def run_itm_and_mlm_passes(
    batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes, negatives: str
) -> None:
    """The ITM and MLM passes as one backbone pass over 2B pairs (`trainer.fuse_passes`), each
    half cached in `passes` as the objectives would have run it: larger matrix products, half
    the kernel launches, and text length and patch count agree by construction (one batch's
    texts, its images in another order).

    Equal to the two passes (tests/test_speed_levers.py): attention is per pair, the negatives are
    drawn first as ITM draws them, and the patch sampling draws its keys for the ITM rows then the
    MLM rows, one `torch.rand` over 2B rows, which on a CPU generator gives the very numbers of
    two passes run ITM first; a CUDA generator's Philox offsets give other draws of the same law.
    Dropout inside the transformer draws other masks than two passes would (same distribution).
    """
    draw = draw_negatives(batch, passes, negatives)
    own = torch.arange(len(draw.images), device=draw.image_index.device)
    doubled = {**batch, "attention_mask": batch["attention_mask"].repeat(2, 1)}
    ids = torch.cat([batch["input_ids"], batch["mlm_input_ids"]])
    output = passes.run(
        backbone,
        doubled,
        ids,
        image_index=torch.cat([draw.image_index, own]),
        serves=(ITM_PASS, MLM_PASS),
        max_patches=passes.max_patches(backbone, batch),  # the MLM half shows every image
    )
    itm, mlm = halves(output)
    passes.put(ITM_PASS, ITMPass(itm, draw.labels, draw.image_index, negatives, draw.cross_source))
    passes.put(MLM_PASS, mlm)


class ITMObjective(Objective):
    """Two-way cross-entropy of the ITM head on the pooled vector of the ITM pass."""

    reads_pass = ITM_PASS
    reads_rows = POOLED

    def __init__(self, hidden_size: int, negatives: str = SAME_SOURCE) -> None:
        super().__init__()
        self.head = ITMHead(hidden_size)
        self.negatives = negatives

    @classmethod
    def from_config(cls, config: ViltConfig, negatives: str = SAME_SOURCE) -> ITMObjective:
        return cls(config.hidden_size, negatives)

    def forward(
        self, batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes
    ) -> dict[str, torch.Tensor]:
        result = itm_pass(batch, backbone, passes, self.negatives)
        logits = self.head(result.output.pooled).float()
        loss = F.cross_entropy(logits, result.labels)
        accuracy = (logits.detach().argmax(-1) == result.labels).float().mean()
        return {
            "loss": loss,
            "accuracy": accuracy,
            "cross_source": torch.full((), result.cross_source, device=logits.device),
        }
