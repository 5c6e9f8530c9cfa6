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

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vilt_lab.model import BackboneOutput, ITMHead, ViltBackbone, ViltConfig
from vilt_lab.utils.draws import draw_device

from .base import Objective
from .passes import ITM_PASS, MLM_PASS, POOLED, Passes, halves


def random_derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of range(n) without fixed points (n >= 2), on the CPU
    (or the generator's device).

    Rejection sampling: a random permutation is a derangement with probability about 1/e, so
    this takes e ~ 2.7 draws on average.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    device = draw_device(generator)
    identity = torch.arange(n, device=device)
    while True:
        perm = torch.randperm(n, generator=generator, device=device)
        if not bool((perm == identity).any()):
            return perm


# objective.itm.negatives: where a negative's image comes from (see the module docstring).
SAME_SOURCE, BATCH = "same_source", "batch"
ITM_NEGATIVES = (SAME_SOURCE, BATCH)


def sample_negatives(
    batch_size: int, generator: torch.Generator | None = None, sources: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which image each pair sees and whether it is its own: (image_index, labels), both (B,) long.

    Exactly floor(B/2) pairs are negatives (label 0), each taking the image of another pair of
    its source (``sources``: (B,) source index per pair; None: one source). The negatives are
    drawn uniformly among the pairs whose source has another pair in the batch; those of one
    source swap images along a random derangement among themselves, so each of their images is
    still used once, and a source's single negative takes any other pair's image of that source.
    Only when too few pairs share a source (a micro batch of 4 from 4 sources) do the remaining
    negatives come from pairs alone in their source, each taking a random other pair's image:
    the balance of labels stays exact, and ITM reports the share of such negatives
    (``cross_source``). B = 1 has no negative. Tensors are on the CPU (or the generator's device).
    """
    device = draw_device(generator)
    image_index = torch.arange(batch_size, device=device)
    labels = torch.ones(batch_size, dtype=torch.long, device=device)
    num_negatives = batch_size // 2
    if num_negatives == 0:
        return image_index, labels
    if sources is None:
        sources = torch.zeros(batch_size, dtype=torch.long, device=device)
    sources = sources.to(device)
    _, source_of, source_size = torch.unique(sources, return_inverse=True, return_counts=True)
    shared = source_size[source_of] > 1
    # With one source every pair is a candidate, and the draws below are the in-batch draws of
    # the plain derangement (the same calls on the generator, in the same order).
    candidates = shared.nonzero().squeeze(1)
    negatives = candidates[torch.randperm(len(candidates), generator=generator, device=device)]
    negatives = negatives[:num_negatives]
    short = num_negatives - len(negatives)
    if short:
        alone = (~shared).nonzero().squeeze(1)
        crossing = alone[torch.randperm(len(alone), generator=generator, device=device)[:short]]
        shift = torch.randint(1, batch_size, (short,), generator=generator, device=device)
        image_index[crossing] = (crossing + shift) % batch_size
        labels[crossing] = 0
    for source in source_of[negatives].unique().tolist():
        mine = negatives[source_of[negatives] == source]
        if len(mine) == 1:
            members = (source_of == source).nonzero().squeeze(1)
            position = (members == mine).nonzero().squeeze(1)
            shift = torch.randint(1, len(members), (1,), generator=generator, device=device)
            image_index[mine] = members[(position + shift) % len(members)]
        else:
            image_index[mine] = mine[random_derangement(len(mine), generator)]
    labels[negatives] = 0
    return image_index, labels


@dataclass
class ITMPass:
    """The pass on unmasked text and mixed images, with its ITM labels (1 = match)."""

    output: BackboneOutput
    labels: torch.Tensor
    image_index: torch.Tensor
    negatives: str


def draw_negatives(
    batch: dict[str, torch.Tensor], passes: Passes, negatives: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's (image_index, labels) of the ITM pass (`sample_negatives`), on the batch's device."""
    if negatives not in ITM_NEGATIVES:
        raise ValueError(f"objective.itm.negatives={negatives!r}: expected one of {ITM_NEGATIVES}")
    device = batch["input_ids"].device
    sources = batch.get("source") if negatives == SAME_SOURCE else None
    image_index, labels = sample_negatives(batch["input_ids"].shape[0], passes.generator, sources)
    return image_index.to(device), labels.to(device)


def itm_pass(
    batch: dict[str, torch.Tensor], backbone: ViltBackbone, passes: Passes, negatives: str = SAME_SOURCE
) -> ITMPass:
    """The step's ITM pass, run on first use and shared through `passes` (ITM and WPA), with
    ``negatives`` (one of `ITM_NEGATIVES`) drawn from the same source or the whole batch. A batch
    without ``source`` is one source."""

    def compute() -> ITMPass:
        image_index, labels = draw_negatives(batch, passes, negatives)
        output = passes.run(backbone, batch, batch["input_ids"], image_index=image_index, serves=(ITM_PASS,))
        return ITMPass(output=output, labels=labels, image_index=image_index, negatives=negatives)

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
    image_index, labels = draw_negatives(batch, passes, negatives)
    own = torch.arange(len(image_index), device=image_index.device)
    doubled = {**batch, "attention_mask": batch["attention_mask"].repeat(2, 1)}
    ids = torch.cat([batch["input_ids"], batch["mlm_input_ids"]])
    output = passes.run(
        backbone, doubled, ids, image_index=torch.cat([image_index, own]), serves=(ITM_PASS, MLM_PASS)
    )
    itm, mlm = halves(output)
    passes.put(ITM_PASS, ITMPass(output=itm, labels=labels, image_index=image_index, negatives=negatives))
    passes.put(MLM_PASS, mlm)


def cross_source_share(result: ITMPass, sources: torch.Tensor | None) -> torch.Tensor:
    """The share of the pass's negatives whose image comes from another source (0 without any);
    no host sync, so the step keeps its one."""
    negative = result.labels == 0
    if sources is None:
        return torch.zeros((), device=result.labels.device)
    crossing = (sources[result.image_index] != sources) & negative
    return crossing.sum() / negative.sum().clamp(min=1)


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
            "cross_source": cross_source_share(result, batch.get("source")),
        }
