"""Image-text retrieval: rank-head fine-tuning with pool negatives; exact recall@k evaluation.

Zero-shot retrieval is this task's evaluation on a pre-trained checkpoint: its new rank head
starts from the ITM head's "match" row (`model.init_from`), so it scores by the ITM match logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vilt_lab.config.schema import EvalSchema, RunConfig
from vilt_lab.data.caption_pool import CaptionPool
from vilt_lab.data.pipeline import ItemSpec
from vilt_lab.data.targets import PoolImageIndex
from vilt_lab.data.transforms import MinMaxResize
from vilt_lab.evaluation.evaluators import RetrievalEvaluator
from vilt_lab.utils.progress import progress_style

from .base import Task


def train_urls(cfg: RunConfig) -> list[str]:
    sources = list(cfg.data.sources.values())
    if len(sources) != 1:
        raise ValueError(
            f"task=irtr fine-tunes on one dataset; data={cfg.data.name} has {len(sources)} sources"
        )
    urls = sources[0].urls
    return [urls] if isinstance(urls, str) else list(urls)


class IRTRTask(Task):
    name = "irtr"
    provides = "captions"
    # One epoch = every image once (with 1 + 15 captions); every caption once per caption.
    epoch_counts = "samples"
    select_key = "irtr/the_metric"
    writes_scores = True

    def objectives(
        self, cfg: RunConfig, tokenizer, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        pool = None
        if train:
            pool = CaptionPool.from_shards(train_urls(cfg), tokenizer, cfg.data.max_text_len)
        return {
            "irtr": (
                1.0,
                {
                    "pool": pool,
                    "negatives": cfg.task.negatives,
                    "exclude_own": cfg.task.exclude_own_captions,
                    "image_negatives": cfg.task.image_negatives,
                },
            )
        }

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        image_negatives, trainer = cfg.task.image_negatives, cfg.trainer
        # Image negatives are the micro batch's other images: it must hold that many more.
        if image_negatives and image_negatives >= trainer.micro_batch_size:
            raise ValueError(
                f"task.image_negatives={image_negatives} draws the other images of a micro batch, but "
                f"trainer.micro_batch_size={trainer.micro_batch_size} holds only "
                f"{trainer.micro_batch_size - 1}: lower one or raise the other"
            )

    def check_split(self, shards: Sequence[str], world_size: int) -> None:
        """Any split: exact retrieval deals images, not shards, to the processes."""

    def items(self, cfg: RunConfig, tokenizer, module) -> ItemSpec:
        pool = module.objectives["irtr"].pool
        return self.caption_items(cfg, (PoolImageIndex(pool.image_of_key()),) if pool is not None else ())

    def write_scores(self, evaluator: RetrievalEvaluator, path: Path) -> Path:
        """The (images, texts) score matrix with each text's image and each image's shard key, as
        `torch.save` of plain tensors and strings (`torch.load(path, weights_only=True)` reads it)."""
        torch.save(evaluator.score_record(), path)
        return path

    def evaluator(self, cfg: RunConfig, tokenizer, module, loader, urls) -> RetrievalEvaluator:
        max_text_len = cfg.data.max_text_len
        return RetrievalEvaluator(
            urls,
            pool=lambda: CaptionPool.from_shards(urls, tokenizer, max_text_len),
            resize=MinMaxResize(loader.image_shorter, loader.image_longer, loader.patch_size),
            score_fn=lambda m: m.objectives["irtr"].score,
            text_batch_size=cfg.task.text_batch_size,
            keep_scores=isinstance(cfg, EvalSchema) and cfg.save_scores,  # vilt-eval's; training keeps none
            progress=progress_style(cfg.trainer),
        )
