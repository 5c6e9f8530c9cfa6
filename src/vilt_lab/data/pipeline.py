"""The streaming pipeline: WebDataset shards -> batches of a task's inputs, in the workers.

Per worker:  shards -> raw samples (bytes) -> items (every question of a VQA image, every
statement of an NLVR2 pair; for captions one item per sample, or one per caption with
``data.caption_sampling=per_caption``) -> mix of the sources -> shuffle -> decode (+ RandAugment
when fine-tuning) + MinMaxResize + the item's text (a random caption, or the item's caption,
question or statement) -> batch (with ``data.image_buckets``, items of one image canvas:
:mod:`vilt_lab.data.canvas`): MixGen's pairs (pre-training with ``augment.mixgen``), tokenize
(max 40), pad images (to the batch's canvas, ``data.canvas_step``), ``pixel_mask``, the items'
``source``, then the task's collate steps (whole-word masking in pre-training, answers and labels
downstream). What an item is comes from an :class:`ItemSpec`, chosen by the task
(``vilt_lab.tasks``).

Items are expanded from raw samples *before* the shuffle buffer: the buffer then holds encoded
bytes (shared by the items of one sample), and the questions of one image are spread out rather
than decoded one after another. An epoch therefore counts items, not images (one VQA epoch =
every question once, as the official dataset iterates). Items are made per source, before the
sources are mixed, so a mix weight is a share of items: with per-caption sampling a VG image and
its 50 phrases are 50 draws of VG's weight, not one draw that brings 50 items.

* Train (:func:`build_train_loader`) is an infinite stream. Each source resamples its shards
  with replacement and sources are mixed per item by weight. Resampling is the maintainers'
  recipe for multi-node training: every rank always has data, so DDP never hangs on a rank that
  ran out of shards (webdataset issues #188, #75). Ranks and workers need no shard
  split: each draws from its own seed.
* Eval (:func:`build_eval_loader`) is one finite pass: shards split by node, then by worker, in
  order, no shuffling, so every evaluation sees the same data with the same masks. Ranks may end
  with different batch counts: gather results once at the end, not per batch.

Seeds: every random choice in a worker (shards, shuffle, caption, augmentation, masking) comes
from one seed
derived from (seed, start_step, epoch, rank, worker). A run resumed at step S therefore gets a
reproducible stream, the same every time it resumes at S (WebDataset cannot restore a
stream position, so the stream is re-seeded rather than replayed). The epoch lives in shared memory
and is set by the main process before each pass, so it is not lost in forked or persistent
workers (webdataset issue #172).

Corrupt samples (undecodable or truncated image, non-image payload, missing or empty text, an
image the converter's rules refuse) are skipped, logged (rate-limited) and counted; each batch
reports in ``"skipped"`` how many its worker skipped since its previous batch. A shard
that cannot be read to its end (a truncated tar, a missing file) counts the samples it lost: its
``sizes.json`` count minus the samples it gave, or one when no count is known (see
:func:`shard_samples`).
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import PreTrainedTokenizerBase
from webdataset.tariterators import tarfile_samples

from vilt_lab.data.augment import RandAugment
from vilt_lab.data.canvas import batcher, whole_canvas
from vilt_lab.data.collate import CollateStep, ItemCollator
from vilt_lab.data.device_decode import DEFERRED, collect_jpegs, decode_or_defer, decodes_on_device
from vilt_lab.data.masking import MaskingStep
from vilt_lab.data.mixgen import MixGen
from vilt_lab.data.shards import (
    count_texts,
    expand_shards,
    is_local,
    known_sizes,
    sample_images,
    sample_meta,
)
from vilt_lab.data.transforms import PAPER_LONGER, PAPER_SHORTER, MinMaxResize
from vilt_lab.utils.stop_signals import ignore_stop_signals

logger = logging.getLogger(__name__)

RawSample = dict[str, Any]
MAX_SKIPS_IN_A_ROW = 1000  # past this, a "corrupt data" problem is really a bug or a wrong path
MAX_EMPTY_SHARDS_IN_A_ROW = 100


@dataclass(frozen=True)
class Source:
    """One dataset in a training mix.

    ``shards``: a split directory (reads its ``sizes.json``), a brace pattern such as
    ``/data/coco/train/shard-{000000..000113}.tar`` or ``https://host/gcc-{0000..0331}.tar``,
    or a list of those. ``weight``: the share of items drawn from this source (weights are
    normalised); None for all sources means "in proportion to their text counts", i.e. the
    official ``ConcatDataset``'s shares, uniform over captions with per-caption items (needs
    ``texts.json``). ``name``
    (the config key, e.g. ``gcc``) only labels error messages.
    """

    shards: str | os.PathLike[str] | Sequence[str]
    weight: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class LoaderConfig:
    """Plain settings of a loader (the Hydra ``data`` config maps onto these fields).

    ``batch_size`` is per rank. Image size: paper data 384 / 639 / 32 (see
    :mod:`vilt_lab.data.transforms`), the shapes world e.g. 96 / 160 / 16. ``randaugment_ops``
    > 0 turns on RandAugment for the train stream (N ops at magnitude ``randaugment_magnitude``
    on the official 0-30 scale; the paper fine-tunes with 2 and 9); ``mixgen_share`` > 0 turns
    on MixGen (:mod:`vilt_lab.data.mixgen`) for a train stream of items that allow it
    (:attr:`ItemSpec.mixes_pairs`). Eval streams never augment.
    """

    batch_size: int
    num_workers: int = 0
    image_shorter: int = PAPER_SHORTER
    image_longer: int = PAPER_LONGER
    patch_size: int = 32
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    mixgen_share: float = 0.0
    mixgen_lam: float = 0.5
    max_text_len: int = 40
    text_padding: str = "longest"
    shuffle_buffer: int = 5000
    shuffle_initial: int = 1000
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    pin_memory: bool = False
    decode: str = "cpu"  # data.decode (vilt_lab.data.device_decode)
    image_buckets: bool = False  # data.image_buckets (vilt_lab.data.canvas)
    canvas_step: int = 1  # data.canvas_step (vilt_lab.data.canvas)

    @property
    def canvas_multiple(self) -> int:
        """A canvas side's unit in pixels: ``canvas_step`` patches. MinMaxResize makes every side
        a multiple of the patch, so a step of 1 pads nothing beyond the batch's largest image."""
        return self.canvas_step * self.patch_size


def stream_seed(seed: int, start_step: int, epoch: int, rank: int, worker: int) -> int:
    """The 32-bit seed of one worker's stream (NumPy's SeedSequence mixes the parts well)."""
    return int(np.random.SeedSequence([seed, start_step, epoch, rank, worker]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------
# Skipping corrupt data


class SkipCounter:
    """Counts and logs skipped samples in one worker; ``pop`` returns the count since last pop."""

    def __init__(self) -> None:
        self.total = 0
        self.pending = 0
        self.in_a_row = 0

    def record(self, where: str, err: BaseException) -> None:
        """Count one skipped sample (``where``: shard and key) and log it, rate-limited."""
        self._skip(1, where, err)
        if self.total <= 10 or self.total % 1000 == 0:
            logger.warning(
                "skipping %s: %s: %s (%d skipped by this worker)", where, type(err).__name__, err, self.total
            )

    def lost(self, url: str, count: int, err: BaseException) -> None:
        """Count the ``count`` samples a shard could not give (it ended early: ``err``) and log it
        (always: a shard that breaks off is rare and costs many samples)."""
        logger.warning(
            "shard %s lost %d sample(s): %s: %s (%d skipped by this worker)",
            url,
            count,
            type(err).__name__,
            err,
            self.total + count,
        )
        self._skip(count, url, err)

    def _skip(self, count: int, where: str, err: BaseException) -> None:
        # A shard that lost thousands of samples is one step of a run of failures, as a bad
        # sample is: a run of MAX_SKIPS_IN_A_ROW of them in a row is a bug or a wrong path.
        self.total += count
        self.pending += count
        self.in_a_row += 1
        if self.in_a_row >= MAX_SKIPS_IN_A_ROW:
            raise RuntimeError(
                f"{self.in_a_row} samples or shards in a row were unusable, last at {where}"
            ) from err

    def success(self) -> None:
        """A sample decoded fine: the run of consecutive skips is broken."""
        self.in_a_row = 0

    def pop(self) -> int:
        """Skips since the previous call."""
        count, self.pending = self.pending, 0
        return count


# ----------------------------------------------------------------------------------------------
# Shard streams (one call per worker and pass)


def _one_shard(url: str, skips: SkipCounter, expected: int | None) -> Iterator[RawSample]:
    errors: list[Exception] = []

    def keep_going(err: Exception) -> bool:
        errors.append(err)
        return True

    given = 0
    for sample in tarfile_samples(iter([{"url": url}]), handler=keep_going):
        given += 1
        yield sample
    # WebDataset reports a truncated tar as one or two exceptions, however many samples followed
    # the cut (and a tar cut between members as none): the shard's recorded count says how many
    # there were.
    lost = max(0, expected - given) if expected is not None else int(bool(errors))
    if lost:
        skips.lost(url, lost, errors[0] if errors else EOFError(f"ended after {given} of {expected} samples"))
    elif errors:  # e.g. a repeated member name: logged, but the shard gave every sample
        logger.warning("shard %s: %s: %s", url, type(errors[0]).__name__, errors[0])


def shard_samples(urls: Iterable[str], skips: SkipCounter, sizes: Mapping[str, int]) -> Iterator[RawSample]:
    """The raw samples of ``urls``, shard by shard. A shard that cannot be read to its end (a
    truncated tar, a missing or unreadable file) is logged and the samples it lost are counted
    in ``skips``: its count in ``sizes`` (from ``sizes.json``) minus the samples it gave, so a
    shard cut in half counts half its samples; without a count, one (the least it lost)."""
    for url in urls:
        yield from _one_shard(url, skips, sizes.get(url))


def _resampled_samples(
    urls: Sequence[str], rng: random.Random, skips: SkipCounter, sizes: Mapping[str, int]
) -> Iterator[RawSample]:
    """Raw samples of shards drawn with replacement from ``urls``, forever."""
    empty_in_a_row = 0
    while True:
        count = 0
        for sample in shard_samples([rng.choice(urls)], skips, sizes):
            count += 1
            yield sample
        empty_in_a_row = 0 if count else empty_in_a_row + 1
        if empty_in_a_row >= MAX_EMPTY_SHARDS_IN_A_ROW:
            raise RuntimeError(f"{empty_in_a_row} shards in a row gave no sample, e.g. {urls[0]}")


@dataclass(frozen=True)
class ResampledMix:
    """Infinite mix: per item, pick a source by weight, then its next item (see
    :func:`source_items`) from its resampled shards."""

    urls: tuple[tuple[str, ...], ...]
    weights: tuple[float, ...]
    sizes: Mapping[str, int] = field(default_factory=dict)  # samples per shard, where known
    expand_field: str | None = None  # ItemSpec.expand_field

    def __call__(
        self, rng: random.Random, worker: int, num_workers: int, skips: SkipCounter, pass_seed: int
    ) -> Iterator[RawSample]:
        streams = [
            source_items(_resampled_samples(urls, rng, skips, self.sizes), source, self.expand_field, skips)
            for source, urls in enumerate(self.urls)
        ]
        picks = range(len(streams))
        while True:
            yield next(streams[rng.choices(picks, self.weights)[0]])


@dataclass(frozen=True)
class ExactPass:
    """One pass over ``urls``: this rank's share (every world_size-th shard), then this worker's."""

    urls: tuple[str, ...]
    rank: int
    world_size: int
    sizes: Mapping[str, int] = field(default_factory=dict)  # samples per shard, where known
    expand_field: str | None = None  # ItemSpec.expand_field

    def __call__(
        self, rng: random.Random, worker: int, num_workers: int, skips: SkipCounter, pass_seed: int
    ) -> Iterator[RawSample]:
        mine = self.urls[self.rank :: self.world_size][worker::num_workers]
        return source_items(shard_samples(mine, skips, self.sizes), 0, self.expand_field, skips)


@dataclass(frozen=True)
class RankEpochs:
    """Infinite exact epochs over one source, each rank on its own fixed share of the shards.

    The shards are dealt to ranks with a permutation of the run's seed alone (not the rank, not
    the resume step), so ranks never read the same sample, before or after a resume, even when
    their shares hold different numbers of samples. DDP averages the ranks' gradients, so each
    optimizer step still learns from every share. Each pass reshuffles the rank's shards (seeded
    by the pass seed, which includes the resume step and the loader's epoch) and deals them to the
    workers. A rank with
    fewer samples starts its next epoch earlier instead of running dry, so DDP cannot hang on
    uneven shards.
    """

    urls: tuple[str, ...]
    rank: int
    world_size: int
    deal_seed: int
    sizes: Mapping[str, int] = field(default_factory=dict)  # samples per shard, where known
    expand_field: str | None = None  # ItemSpec.expand_field

    def __call__(
        self, rng: random.Random, worker: int, num_workers: int, skips: SkipCounter, pass_seed: int
    ) -> Iterator[RawSample]:
        dealt = list(self.urls)
        random.Random(self.deal_seed).shuffle(dealt)
        mine = dealt[self.rank :: self.world_size]
        for epoch in itertools.count():
            # The same order in every worker of this rank (seeded without the worker), each worker
            # taking its own slice of it: the workers of a rank stay disjoint too.
            order = list(mine)
            random.Random(f"{pass_seed}/{epoch}").shuffle(order)
            samples = shard_samples(order[worker::num_workers], skips, self.sizes)
            yield from source_items(samples, 0, self.expand_field, skips)


# (rng of this worker, worker, num_workers, skip counter, seed of this pass shared by the rank's
# workers) -> raw items, each tagged with its source (see source_items)
ShardStream = Callable[[random.Random, int, int, SkipCounter, int], Iterator[RawSample]]


# ----------------------------------------------------------------------------------------------
# Samples and batches


CAPTIONS = "captions"


def sample_captions(sample: RawSample) -> list[str]:
    """The non-empty captions: from json ``captions``, or an img2dataset-style ``txt``.

    Raises:
        ValueError: when the sample has no usable caption.
    """
    if "json" in sample and CAPTIONS in (meta := sample_meta(sample)):
        captions = meta[CAPTIONS]
    elif "txt" in sample:
        captions = [sample["txt"].decode("utf-8")]
    else:
        raise ValueError("no captions")
    if not isinstance(captions, list):
        raise ValueError(f"captions is a {type(captions).__name__}, not a list")
    usable = [c for c in captions if isinstance(c, str) and c.strip()]
    if not usable:
        raise ValueError("all captions are empty")
    return usable


def pick_caption(sample: RawSample, rng: random.Random) -> str:
    """One random non-empty caption (:func:`sample_captions`)."""
    return rng.choice(sample_captions(sample))


ENTRY = "__entry__"  # the caption / question / statement record an expanded item stands for
SOURCE = "__source__"  # the index of the mix's source (data.sources order) an item comes from


@dataclass(frozen=True)
class ItemSpec:
    """What one item of a stream is, for a task (see the module docstring).

    ``expand_field``: a list in the sample's json (``questions``, ``statements``) that becomes one
    item per entry, whose ``text`` is the item's text, or ``captions`` (:data:`CAPTIONS`): one
    item per caption; None: one item per sample, with a random caption. ``num_images``: images
    per sample (NLVR2: 2). ``steps``: collate steps after tokenization and padding
    (:data:`vilt_lab.data.collate.CollateStep`). ``mixes_pairs``: MixGen may mix two items into
    one (pre-training's image-caption pairs; a question's or statement's label belongs to its
    one text, and retrieval's pool negatives to one image, so fine-tuning items never mix).
    """

    expand_field: str | None = None
    num_images: int = 1
    steps: tuple[CollateStep, ...] = ()
    mixes_pairs: bool = False


# data.caption_sampling -> ItemSpec.expand_field of caption items. per_image: draw an image, then
# one of its captions; per_caption: every caption is an item, as the official datasets iterate
# (an image with 50 VG phrases is seen 50 times as often as one with a single caption).
PER_IMAGE, PER_CAPTION = "per_image", "per_caption"
CAPTION_SAMPLING = {PER_IMAGE: None, PER_CAPTION: CAPTIONS}


def caption_items(sampling: str, steps: tuple[CollateStep, ...] = ()) -> ItemSpec:
    """The items of an image-caption stream under ``sampling`` (a key of :data:`CAPTION_SAMPLING`)."""
    if sampling not in CAPTION_SAMPLING:
        raise ValueError(f"data.caption_sampling={sampling!r}: expected one of {tuple(CAPTION_SAMPLING)}")
    return ItemSpec(CAPTION_SAMPLING[sampling], steps=steps)


def item_entries(sample: RawSample, field: str) -> list[Any]:
    """The entries of ``field`` that become items: captions as :func:`sample_captions` reads them,
    otherwise the non-empty json list ``field``.

    Raises:
        ValueError: when there is none.
    """
    if field == CAPTIONS:
        return sample_captions(sample)
    entries = sample_meta(sample).get(field)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"no {field} in the sample's json")
    return entries


def expand_items(samples: Iterator[RawSample], field: str, skips: SkipCounter) -> Iterator[RawSample]:
    """One raw item per entry of ``field`` (:func:`item_entries`): the sample (its bytes shared,
    not copied) plus the entry; samples without a usable ``field`` are skipped and counted."""
    for sample in samples:
        try:
            entries = item_entries(sample, field)
        except Exception as err:  # noqa: BLE001 - one bad sample must not stop training
            skips.record(f"{sample.get('__url__')}:{sample.get('__key__')}", err)
            continue
        for entry in entries:
            yield {**sample, ENTRY: entry}


def source_items(
    samples: Iterator[RawSample], source: int, expand_field: str | None, skips: SkipCounter
) -> Iterator[RawSample]:
    """The raw items of one source's ``samples`` (expanded by ``expand_field``, see
    :class:`ItemSpec`), each tagged with the source's index for the batch's ``source``."""
    tagged = ({**sample, SOURCE: source} for sample in samples)
    return tagged if expand_field is None else expand_items(tagged, expand_field, skips)


@dataclass(frozen=True)
class ItemDecoder:
    """Raw item -> ``{"image": uint8 (3, H, W)}`` (``"images": [...]`` for several), its ``text``,
    ``key``, ``source`` and, for expanded questions and statements, ``entry``; ``augment`` (drawing
    from the worker's rng) runs on each decoded image before the resize. ``on_device``: JPEGs are
    left to the device (:mod:`vilt_lab.data.device_decode`), each image a placeholder of its size
    and the item's JPEGs under ``deferred_jpegs``."""

    resize: MinMaxResize
    augment: RandAugment | None = None
    num_images: int = 1
    on_device: bool = False

    def __call__(self, sample: RawSample, rng: random.Random) -> dict[str, Any]:
        images = sample_images(sample)
        if len(images) != self.num_images:
            raise ValueError(f"expected {self.num_images} image(s), found {len(images)}")
        entry = sample.get(ENTRY)
        if entry is None:
            item: dict[str, Any] = {"text": pick_caption(sample, rng)}
        elif isinstance(entry, str):  # a caption of per-caption sampling is its own text
            item = {"text": entry}
        else:
            text = entry.get("text") if isinstance(entry, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"entry {entry.get('id') if isinstance(entry, dict) else entry!r} has no text"
                )
            item = {"text": text, "entry": entry}
        augment = None if self.augment is None else functools.partial(self.augment, rng=rng)
        decoded, deferred = [], []
        for index, image in enumerate(images):
            pixels, jpeg = decode_or_defer(image, self.resize, augment, self.on_device)
            decoded.append(pixels)
            if jpeg is not None:
                deferred.append((index, jpeg))
        item.update({"image": decoded[0]} if self.num_images == 1 else {"images": decoded})
        if deferred:
            item[DEFERRED] = deferred
        item["key"] = sample.get("__key__")
        item["source"] = sample.get(SOURCE, 0)
        return item


class BatchStream(IterableDataset):
    """The per-worker pipeline; iterating it yields collated batches (see the module docstring)."""

    def __init__(
        self,
        shards: ShardStream,
        decoder: Callable[[RawSample, random.Random], dict[str, Any]],
        collator: Callable[..., dict[str, torch.Tensor]],
        config: LoaderConfig,
        *,
        shuffle: bool,
        partial: bool,
        start_step: int = 0,
    ) -> None:
        super().__init__()
        self.shards, self.decoder, self.collator, self.config = shards, decoder, collator, config
        self.shuffle, self.partial, self.start_step = shuffle, partial, start_step
        # Shared memory, created before the workers fork: set_epoch in the main process reaches
        # them, persistent or not (a plain attribute would be a stale per-worker copy).
        self.epoch = multiprocessing.Value("q", 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cfg = self.config
        seed = stream_seed(cfg.seed, self.start_step, self.epoch.value, cfg.rank, worker)
        rng = random.Random(seed)
        generator = torch.Generator().manual_seed(seed)
        skips = SkipCounter()
        pass_seed = stream_seed(cfg.seed, self.start_step, self.epoch.value, cfg.rank, 0)
        raw = self.shards(rng, worker, num_workers, skips, pass_seed)
        if self.shuffle:
            # Shuffle raw samples, before decoding: the buffer holds small encoded bytes, not
            # decoded images (open_clip's order).
            raw = wds.shuffle(cfg.shuffle_buffer, cfg.shuffle_initial, rng=rng)(raw)
        batches = batcher(cfg.batch_size, cfg.image_buckets, cfg.canvas_multiple)
        for sample in raw:
            try:
                item = self.decoder(sample, rng)
            except Exception as err:  # noqa: BLE001 - any defect of one sample must not stop training
                skips.record(f"{sample.get('__url__')}:{sample.get('__key__')}", err)
                continue
            skips.success()
            batch = batches.add(item)
            if batch is not None:
                yield {**self.collator(batch, generator), "skipped": skips.pop()}
        if self.partial:
            for batch in batches.leftovers():
                yield {**self.collator(batch, generator), "skipped": skips.pop()}


# ----------------------------------------------------------------------------------------------
# Loaders


class StreamLoader:
    """A DataLoader over a :class:`BatchStream` (``batch_size=None``: batches come made).

    Each ``iter()`` is one pass. With ``num_batches`` a pass stops after that many batches of
    this rank. It is applied here, on the loader, not per worker: ``with_epoch`` on the dataset
    counts per worker, which makes the epoch ``num_workers`` times longer (webdataset issue #303).
    ``advance_epoch`` re-seeds every pass with a new epoch (train); off, every pass is the same
    (eval).
    """

    def __init__(
        self,
        stream: BatchStream,
        config: LoaderConfig,
        num_workers: int,
        *,
        num_batches: int | None,
        advance_epoch: bool,
    ) -> None:
        self.stream = stream
        self.num_batches = num_batches
        self.advance_epoch = advance_epoch
        self._next_epoch = 0
        self.loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=config.pin_memory,
            worker_init_fn=ignore_stop_signals,  # the training process alone acts on a stop
        )

    def set_epoch(self, epoch: int) -> None:
        """Seed the next pass as epoch ``epoch`` (e.g. when resuming); later passes count up."""
        self._next_epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.advance_epoch:
            # Written before iter() wakes the workers, which read it when they start the pass.
            self.stream.epoch.value = self._next_epoch
            self._next_epoch += 1
        batches = iter(self.loader)
        return batches if self.num_batches is None else islice(batches, self.num_batches)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("this stream has no length (infinite train stream or unknown eval size)")
        return self.num_batches


def pretrain_items(tokenizer: PreTrainedTokenizerBase, cfg: LoaderConfig) -> ItemSpec:
    """Image-caption items with default whole-word masking, for callers that name no task
    (benchmarks, tests); a run's items come from its task, pre-training's masking from
    `objective.mlm` (vilt_lab.tasks.pretrain)."""
    masking = MaskingStep(len(tokenizer), tokenizer.mask_token_id, padded_length=cfg.max_text_len)
    return ItemSpec(steps=(masking,), mixes_pairs=True)


def stream_mixgen(cfg: LoaderConfig, items: ItemSpec, *, train: bool) -> MixGen | None:
    """MixGen for a train stream whose items allow it (``ItemSpec.mixes_pairs``) when
    ``cfg.mixgen_share`` > 0; a stream of other items trains unmixed, and says so."""
    if not (train and cfg.mixgen_share > 0):
        return None
    if not items.mixes_pairs:
        logger.warning(
            "augment.mixgen.share=%s is ignored: this task's items are not image-caption pairs to mix "
            "(MixGen mixes pre-training batches only)",
            cfg.mixgen_share,
        )
        return None
    return MixGen(cfg.mixgen_share, cfg.mixgen_lam)


def item_decoder(cfg: LoaderConfig, *, train: bool, num_images: int = 1, mixes: bool = False) -> ItemDecoder:
    """The decoder of ``cfg``'s image size; RandAugment only for a train stream that asks for it.
    A stream that ``mixes`` (MixGen) decodes in the workers: it blends the decoded pixels."""
    augment = None
    if train and cfg.randaugment_ops > 0:
        augment = RandAugment(cfg.randaugment_ops, cfg.randaugment_magnitude)
    resize = MinMaxResize(cfg.image_shorter, cfg.image_longer, cfg.patch_size)
    return ItemDecoder(resize, augment, num_images, not mixes and decodes_on_device(cfg.decode))


def _stream(
    shards: ShardStream,
    tokenizer: PreTrainedTokenizerBase,
    cfg: LoaderConfig,
    items: ItemSpec,
    *,
    train: bool,
    start_step: int = 0,
) -> BatchStream:
    mixgen = stream_mixgen(cfg, items, train=train)
    decoder = item_decoder(cfg, train=train, num_images=items.num_images, mixes=mixgen is not None)
    steps = (*items.steps, collect_jpegs) if decoder.on_device else items.steps
    return BatchStream(
        shards,
        decoder,
        ItemCollator(
            tokenizer,
            cfg.max_text_len,
            cfg.text_padding,
            steps,
            mixgen,
            cfg.canvas_multiple,
            whole_canvas=whole_canvas(cfg.canvas_multiple, cfg.patch_size),
        ),
        cfg,
        shuffle=train,
        partial=not train,
        start_step=start_step,
    )


def _quiet_tokenizers() -> None:
    # Workers fork after the main process may have used the tokenizers thread pool (which makes
    # the library warn and disable it), and each worker tokenizes its own small batches anyway:
    # extra threads there would only oversubscribe the cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def missing_shards(urls: Sequence[str]) -> list[str]:
    """The local ``urls`` that do not exist (URLs and ``pipe:`` commands are left to the reader)."""
    return [u for u in urls if is_local(u) and not os.path.exists(u)]


def check_eval_shards(urls: Sequence[str], world_size: int) -> None:
    """An evaluation pass deals whole shards to ranks (:class:`ExactPass`): each rank needs one,
    since a rank without data would hang the collectives that gather the results.

    Raises:
        ValueError: with fewer shards than ranks.
    """
    if len(urls) < world_size:
        raise ValueError(
            f"{len(urls)} eval shards cannot be split over {world_size} ranks; write more, smaller shards"
        )


def check_exact_epochs(urls: Sequence[Sequence[str]], world_size: int, num_workers: int) -> None:
    """Exact epochs (``data.resampled=false``, :class:`RankEpochs`) read one source, and give
    each worker of each rank shards of its own.

    Raises:
        ValueError: for several sources, or fewer shards than ranks x workers.
    """
    if len(urls) != 1:
        raise ValueError("mixing several sources needs resampled shards (data.resampled=true)")
    needed = world_size * max(1, num_workers)
    if len(urls[0]) < needed:
        raise ValueError(
            f"{len(urls[0])} shards cannot give each of {world_size} ranks x "
            f"{max(1, num_workers)} workers its own: write more, smaller shards, or set "
            "data.resampled=true"
        )


def check_local_shards(urls: Sequence[str], label: str) -> None:
    """Fail early, naming the path, when local shards do not exist (a wrong ``data.root`` would
    otherwise surface as a missing ``texts.json`` or as a worker that never yields). URLs and
    ``pipe:`` commands are left to the reader.

    Raises:
        FileNotFoundError: naming ``label`` (e.g. the source's config key) and a missing shard.
    """
    missing = missing_shards(urls)
    if missing:
        raise FileNotFoundError(
            f"data {label}: {len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]} "
            "(check data.root / data.roots.<source> or data.sources.<source>.urls)"
        )


def mix_weights(sources: Sequence[Source], urls: Sequence[Sequence[str]]) -> tuple[float, ...]:
    """Normalised sampling weights; text counts from ``texts.json`` when no weight is given.

    Weighing by texts (captions) rather than images reproduces the official ``ConcatDataset``,
    which indexes every (image, caption) pair: COCO's 5 captions per image count 5 times.
    """
    given = [s.weight for s in sources]
    names = [s.name or str(s.shards) for s in sources]
    if len(sources) == 1:
        return (1.0,)  # nothing to weigh, so no counts needed (shards without texts.json work)
    if all(w is None for w in given):
        weights = [float(count_texts(u)) for u in urls]
    elif any(w is None for w in given):
        missing = [n for n, w in zip(names, given, strict=True) if w is None]
        raise ValueError(
            f"mix weights given for some sources but not for {missing}: give every source a weight "
            "(data.sources.<name>.weight), or none (then they are weighed by their texts.json caption counts)"
        )
    else:
        weights = [float(w) for w in given]  # type: ignore[arg-type]
    if any(w <= 0 for w in weights):
        raise ValueError(f"mix weights must be positive, got {dict(zip(names, weights, strict=True))}")
    total = sum(weights)
    return tuple(w / total for w in weights)


def build_train_loader(
    sources: Source | Sequence[Source],
    tokenizer: PreTrainedTokenizerBase,
    config: LoaderConfig,
    *,
    start_step: int = 0,
    epoch_batches: int | None = None,
    resampled: bool = True,
    items: ItemSpec | None = None,
) -> StreamLoader:
    """The infinite, shuffled training stream of this rank.

    With ``resampled`` (the default) shards are drawn with replacement and sources mixed by
    weight; without it, one source is read in exact epochs, each rank on a disjoint fixed share
    of its shards (:class:`RankEpochs`).

    Args:
        sources: one or several :class:`Source`.
        tokenizer: a fast tokenizer (:func:`vilt_lab.data.tokenizer.load_tokenizer`).
        config: loader settings (``rank`` and ``world_size`` place this process).
        start_step: the optimizer step the run starts (or resumes) at; part of the seed.
        epoch_batches: if set, each pass (``iter()``) yields exactly this many batches and the
            next pass is re-seeded with the next epoch; otherwise one pass never ends.
        items: what an item is (:class:`ItemSpec`); None: pre-training's (:func:`pretrain_items`).
    """
    _quiet_tokenizers()
    items = items or pretrain_items(tokenizer, config)
    sources = [sources] if isinstance(sources, Source) else list(sources)
    urls = [expand_shards(s.shards) for s in sources]
    for source, u in zip(sources, urls, strict=True):
        if not u:
            raise ValueError(f"no shards found for {source.shards!r}")
        check_local_shards(u, source.name or "")
    sizes = known_sizes(url for u in urls for url in u)
    if resampled:
        shards: ShardStream = ResampledMix(
            tuple(tuple(u) for u in urls), mix_weights(sources, urls), sizes, items.expand_field
        )
    else:
        check_exact_epochs(urls, config.world_size, config.num_workers)
        shards = RankEpochs(
            tuple(urls[0]),
            config.rank,
            config.world_size,
            deal_seed=stream_seed(config.seed, 0, 0, 0, 0),
            sizes=sizes,
            expand_field=items.expand_field,
        )
    stream = _stream(shards, tokenizer, config, items, train=True, start_step=start_step)
    return StreamLoader(stream, config, config.num_workers, num_batches=epoch_batches, advance_epoch=True)


def build_eval_loader(
    shards: str | os.PathLike[str] | Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    config: LoaderConfig,
    items: ItemSpec | None = None,
) -> StreamLoader:
    """One deterministic pass over ``shards`` (this rank's share), the last batch may be partial.
    ``items`` as for :func:`build_train_loader`; evaluation never augments.

    Raises:
        ValueError: with fewer shards than ranks (a rank without data would hang collectives).
    """
    _quiet_tokenizers()
    items = items or pretrain_items(tokenizer, config)
    urls = tuple(expand_shards(shards))
    check_local_shards(urls, "eval")
    check_eval_shards(urls, config.world_size)
    num_workers = config.num_workers
    if len(urls) < config.world_size * num_workers:
        # A worker without a shard would yield nothing; fewer workers is the honest fix.
        num_workers = len(urls) // config.world_size
        logger.warning(
            "%d eval shards < %d ranks x %d workers: using %d workers per rank",
            len(urls),
            config.world_size,
            config.num_workers,
            num_workers,
        )
    exact = ExactPass(urls, config.rank, config.world_size, known_sizes(urls), items.expand_field)
    stream = _stream(exact, tokenizer, config, items, train=False)
    return StreamLoader(stream, config, num_workers, num_batches=None, advance_epoch=False)
