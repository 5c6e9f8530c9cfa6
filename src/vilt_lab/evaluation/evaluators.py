"""Evaluators: a task's metrics on one split, computed the same way in every process.

An evaluator is called as ``evaluator(module, accelerator) -> {metric: value}`` on the unwrapped
task module (no DDP inside evaluation: ranks may see different numbers of batches). Keys carry
the task's name (``vqa/score``); the caller adds the split's prefix (``eval/``, ``test/``).
Every process returns the same values: shares are gathered once, then reduced identically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from webdataset.tariterators import tarfile_samples

from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.data.shards import expand_shards, sample_images
from vilt_lab.data.transforms import MinMaxResize, decode_image
from vilt_lab.utils.metric_means import WeightedMeans, means_from_vector
from vilt_lab.utils.progress import ProgressStyle, progress_bar
from vilt_lab.utils.seeds import step_seed

from .loop import Record, predict_records, to_device
from .metrics import accuracy, retrieval_recall, vqa_metrics
from .retrieval import gather_scores, score_images

log = logging.getLogger(__name__)

Batches = Callable[[], Iterable[dict[str, Any]]]
Evaluator = Callable[[torch.nn.Module, Accelerator | None], dict[str, float]]


@dataclass
class MeansEvaluator:
    """Pre-training: the mean of every scalar output of the task module over the split, per pair
    or per what the objective counts (MLM: masked tokens), see :mod:`vilt_lab.utils.metric_means`.

    The forward pass draws ITM negatives from a generator seeded per batch (step -1), so every
    evaluation of the same weights gives the same numbers.
    """

    batches: Batches
    seed: int = 0
    max_batches: int | None = None
    progress: ProgressStyle | bool = True

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, accelerator: Accelerator | None) -> dict[str, float]:
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        rank = accelerator.process_index if accelerator is not None else 0
        main = accelerator is None or accelerator.is_main_process
        was_training = module.training
        module.eval()
        means, total = WeightedMeans(), 0.0
        for i, batch in enumerate(
            progress_bar(self.batches(), desc="eval", style=ProgressStyle.of(self.progress).only_if(main))
        ):
            if self.max_batches is not None and i >= self.max_batches:
                break
            batch.pop("skipped", None)
            n = float(batch["input_ids"].shape[0])
            generator = torch.Generator(device=device).manual_seed(step_seed(self.seed, rank, -1, i))
            with accelerator.autocast() if accelerator is not None else nullcontext():
                out = module(to_device(batch, device), generator=generator)
            means.add(out, default_weight=n)
            total += n
        module.train(was_training)
        keys = means.keys()
        if accelerator is not None and accelerator.num_processes > 1:
            # A process whose share ran out early may lack keys: agree on their union first.
            keys_all = accelerator.gather_for_metrics([keys], use_gather_object=True)
            keys = sorted({k for ks in keys_all for k in ks})
        vector = torch.tensor([*means.vector(keys), total], device=device, dtype=torch.float64)
        if accelerator is not None and accelerator.num_processes > 1:
            vector = accelerator.reduce(vector, reduction="sum")
        values = vector.tolist()
        if values[-1] == 0:
            raise RuntimeError("evaluation saw no batch: check data.val_urls")
        metrics = means_from_vector(keys, values[:-1])
        metrics["samples"] = int(values[-1])
        return metrics


@dataclass
class VQAEvaluator:
    """VQA on a split: ViLT's VQAScore and the official VQA accuracy (overall and per answer
    type) where the split has annotator answers; ``records`` keeps the last predictions (one per
    question, for the submission file)."""

    batches: Batches
    vocabulary: Sequence[str]
    progress: ProgressStyle | bool = True
    records: list[Record] = field(default_factory=list)

    def to_records(self, batch: dict[str, Any], predictions: dict[str, torch.Tensor]) -> list[Record]:
        labels = predictions["vqa/label"].tolist()
        return [
            {
                "question_id": question_id,
                "pred_label": label,
                "pred_answer": self.vocabulary[label],
                "labels": batch["vqa_labels"][i],
                "scores": batch["vqa_scores"][i],
                "annotator_answers": batch["annotator_answers"][i],
                **({"answer_type": batch["answer_types"][i]} if batch["answer_types"][i] else {}),
            }
            for i, (question_id, label) in enumerate(zip(batch["question_ids"], labels, strict=True))
        ]

    def __call__(self, module: torch.nn.Module, accelerator: Accelerator | None) -> dict[str, float]:
        self.records = predict_records(
            module, self.batches(), self.to_records, accelerator, desc="eval vqa", progress=self.progress
        )
        if not self.records:
            raise RuntimeError("VQA evaluation saw no question: check the split's shards")
        return {f"vqa/{key}": value for key, value in vqa_metrics(self.records).items()}


@dataclass
class NLVR2Evaluator:
    """NLVR2 on a split: accuracy over its statements."""

    batches: Batches
    progress: ProgressStyle | bool = True

    @staticmethod
    def to_records(batch: dict[str, Any], predictions: dict[str, torch.Tensor]) -> list[Record]:
        return [
            {"id": statement_id, "pred": int(pred), "label": int(label)}
            for statement_id, pred, label in zip(
                batch["statement_ids"], predictions["nlvr2/label"], batch["nlvr2_labels"], strict=True
            )
        ]

    def __call__(self, module: torch.nn.Module, accelerator: Accelerator | None) -> dict[str, float]:
        records = predict_records(
            module, self.batches(), self.to_records, accelerator, desc="eval nlvr2", progress=self.progress
        )
        if not records:
            raise RuntimeError("NLVR2 evaluation saw no statement: check the split's shards")
        return {
            "nlvr2/accuracy": accuracy([r["pred"] for r in records], [r["label"] for r in records]),
            "nlvr2/statements": len(records),
        }


@dataclass
class RetrievalEvaluator:
    """Exact image-text retrieval on a split: every image against every caption.

    Every process reads the split's captions (the texts of all scores), then scores its share of
    the images (every world_size-th image) with ``score_fn(module)`` (the rank head, or the ITM
    match logit for zero-shot); the score matrix is gathered once. Recall@1/5/10 both ways and
    ``the_metric`` = IR@1 + TR@1 (the official selection metric).
    """

    shards: str | Sequence[str]
    pool: Callable[[], CaptionPool]
    resize: MinMaxResize
    score_fn: Callable[[torch.nn.Module], Callable[[torch.Tensor], torch.Tensor]]
    text_batch_size: int = 64
    progress: ProgressStyle | bool = True
    # Keep the last evaluation's full score matrix for `score_record` (vilt-eval's save_scores).
    # Off in training: COCO's 5K x 25K matrix is 500 MB that would stay held between evaluations.
    keep_scores: bool = False
    _pool: CaptionPool | None = None
    _scores: torch.Tensor | None = None

    def score_record(self) -> dict[str, Any]:
        """The last evaluation's ``scores`` (N_images, N_texts), ``text_image`` (N_texts,) and
        ``image_keys`` (each row's shard key): what `retrieval_recall` ranked, for analysis."""
        if self._scores is None or self._pool is None:
            raise RuntimeError("score_record() reads the last evaluation of an evaluator with keep_scores")
        return {
            "scores": self._scores,
            "text_image": self._pool.text_image,
            "image_keys": list(self._pool.keys),
        }

    def my_images(self, rank: int, world_size: int, image_of_key: dict[str, int]):
        """(index, decoded image) of every world_size-th image of the split, from rank on.

        Dealt by image, not by shard: a test split is often one or two shards (the shapes
        world's is one), and a process without a shard would leave the others all the work.
        Every process reads the whole split's bytes but decodes only its own images.
        """
        urls = expand_shards(self.shards)
        for sample in tarfile_samples(iter([{"url": url} for url in urls])):
            index = image_of_key.get(sample["__key__"])
            if index is None or index % world_size != rank:  # not captioned (not ranked), or not ours
                continue
            images = sample_images(sample)
            if len(images) != 1:
                raise ValueError(f"{sample.get('__url__')}:{sample['__key__']}: expected one image")
            yield index, decode_image(images[0], self.resize)

    @torch.no_grad()
    def __call__(self, module: torch.nn.Module, accelerator: Accelerator | None) -> dict[str, float]:
        if self._pool is None:
            self._pool = self.pool()
        pool = self._pool
        rank = accelerator.process_index if accelerator is not None else 0
        world_size = accelerator.num_processes if accelerator is not None else 1
        device = accelerator.device if accelerator is not None else torch.device("cpu")
        index, scores = score_images(
            module.backbone,
            self.score_fn(module),
            self.my_images(rank, world_size, pool.image_of_key()),
            pool.texts(),
            text_batch_size=self.text_batch_size,
            pad_token_id=pool.pad_token_id,
            device=device,
            autocast=accelerator.autocast if accelerator is not None else None,
            progress=ProgressStyle.of(self.progress).only_if(
                accelerator is None or accelerator.is_main_process
            ),
            total_images=-(-pool.num_images // world_size),
        )
        gather = None
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            def gather(obj):
                return gather_object([obj])

        full = gather_scores(index, scores, pool.num_images, gather=gather)
        if self.keep_scores:
            self._scores = full
        recall = retrieval_recall(full, pool.text_image)
        metrics = {f"irtr/{key}": value for key, value in recall.items()}
        metrics["irtr/the_metric"] = recall["ir_r1"] + recall["tr_r1"]
        metrics["irtr/images"] = pool.num_images
        metrics["irtr/texts"] = len(pool)
        return metrics
