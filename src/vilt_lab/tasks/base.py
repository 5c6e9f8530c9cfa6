"""What a task is: the one object that knows how a training stage is wired.

A task says what its data must carry, which objectives its module holds (the module DDP wraps
is always a :class:`~vilt_lab.tasks.module.TaskModule`), what one item of its stream is (expanded
entries, images per item, collate steps), how it is evaluated on a split, how many items make an
epoch, and which metric selects the best checkpoint. Everything else (build/, the trainer, the
pipeline, checkpoints) is the same for every task; `vilt_lab.tasks.get_task` is the one dispatch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from vilt_lab.config.schema import EvaluatesTestSchema, RunConfig, SelectsOnTestSchema
from vilt_lab.data.collate import CollateStep
from vilt_lab.data.pipeline import (
    PER_IMAGE,
    ItemSpec,
    LoaderConfig,
    build_eval_loader,
    caption_items,
    check_eval_shards,
)
from vilt_lab.data.shards import count_samples, count_texts, expand_shards
from vilt_lab.evaluation.evaluators import Evaluator

from .module import TaskModule

# Evaluation prefixes: metrics of the validation split are `eval/...`, of the test split `test/...`.
VAL, TEST = "eval", "test"
SPLIT_URLS = {VAL: "val_urls", TEST: "test_urls"}


class Task(ABC):
    """Base of the tasks in `vilt_lab.tasks.TASKS`; subclasses set the class attributes and
    implement `objectives`, `items` and `evaluator`."""

    name: ClassVar[str]
    # What the data's samples carry (`data.provides`): captions, questions or statements.
    provides: ClassVar[str]
    # An epoch counts items: texts (every question / statement) or samples (images); for caption
    # data `data.caption_sampling` decides (see `count_items`).
    epoch_counts: ClassVar[str] = "samples"
    # The metric (without its split prefix) that selects the best checkpoint; None: none.
    select_key: ClassVar[str | None] = None
    # Whether its evaluation leaves a score matrix for `write_scores` (vilt-eval's save_scores).
    writes_scores: ClassVar[bool] = False

    # ----------------------------------------------------------------------------- checks
    def check(self, cfg: RunConfig) -> None:
        """Stop before any work when the data cannot serve this task, naming both sides."""
        provides = cfg.data.provides
        if provides != self.provides:
            raise ValueError(
                f"task={self.name} needs data whose samples carry {self.provides}, but data={cfg.data.name} "
                f"provides {provides!r} (data.provides); pick a data config made for this task"
            )
        if self.selects_on_test(cfg) and not cfg.data.test_urls:
            raise ValueError(f"task.select_on_test=true but data={cfg.data.name} has no data.test_urls")
        if self.provides != "captions" and cfg.data.caption_sampling != PER_IMAGE:
            raise ValueError(
                f"data.caption_sampling={cfg.data.caption_sampling} samples captions, but task={self.name} "
                f"reads {self.provides}, every one an item already: leave it {PER_IMAGE}"
            )

    # ----------------------------------------------------------------------------- wiring
    @abstractmethod
    def objectives(
        self, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, *, train: bool
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """Objective name -> (loss weight, constructor arguments). ``train``: for a training run
        (False: evaluation only, so training-side state such as negative pools is not built)."""

    def objective_names(self, cfg: RunConfig) -> list[str]:
        """The objectives this task trains, without building them (W&B tags); a fine-tuning
        task trains its own."""
        return [self.name]

    @abstractmethod
    def items(self, cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, module: TaskModule) -> ItemSpec:
        """What one item of this task's train and eval streams is."""

    @abstractmethod
    def evaluator(
        self,
        cfg: RunConfig,
        tokenizer: PreTrainedTokenizerBase,
        module: TaskModule,
        loader: LoaderConfig,
        urls: str | Sequence[str],
    ) -> Evaluator:
        """The evaluator of one split (``urls``)."""

    def write_submission(self, evaluator: Evaluator, urls: str | Sequence[str], path: Path) -> Path | None:
        """After evaluating a test split: the file an evaluation server takes, written to ``path``
        (VQA's); None for tasks without one."""
        return None

    def write_scores(self, evaluator: Evaluator, path: Path) -> Path:
        """After evaluating: the evaluation's raw scores, written to ``path`` (for tasks with
        `writes_scores`; vilt-eval refuses ``save_scores=true`` for the others before any work)."""
        raise NotImplementedError(f"task={self.name} has no score matrix to write")

    # ----------------------------------------------------------------------------- shared
    def eval_loader(
        self,
        cfg: RunConfig,
        tokenizer: PreTrainedTokenizerBase,
        module: TaskModule,
        loader: LoaderConfig,
        urls,
    ):
        """A function that opens one deterministic pass over this process's share of ``urls``."""
        items = self.items(cfg, tokenizer, module)
        return lambda: build_eval_loader(urls, tokenizer, loader, items)

    def caption_items(self, cfg: RunConfig, steps: tuple[CollateStep, ...] = ()) -> ItemSpec:
        """Image-caption items as `data.caption_sampling` says (for tasks on caption data)."""
        return caption_items(cfg.data.caption_sampling, steps)

    def selects_on_test(self, cfg: RunConfig) -> bool:
        """``task.select_on_test``, for the tasks that have it."""
        return isinstance(cfg.task, SelectsOnTestSchema) and cfg.task.select_on_test

    def evaluates_test(self, cfg: RunConfig) -> bool:
        """Whether training evaluates the test split too: to select on it, or ``task.eval_test``."""
        return self.selects_on_test(cfg) or (isinstance(cfg.task, EvaluatesTestSchema) and cfg.task.eval_test)

    def select_metric(self, cfg: RunConfig) -> str | None:
        """The metric the trainer keeps the best checkpoint by (``task.select_metric`` wins)."""
        if cfg.task.select_metric:
            return cfg.task.select_metric
        if self.select_key is None:
            return None
        return f"{TEST if self.selects_on_test(cfg) else VAL}/{self.select_key}"

    def eval_splits(self, cfg: RunConfig) -> dict[str, Any]:
        """Prefix -> the split's urls evaluated during training: validation, and the test split
        too when it selects (``task.select_on_test``) or is asked for (``task.eval_test``)."""
        splits = {VAL: cfg.data.val_urls} if cfg.data.val_urls else {}
        if cfg.data.test_urls and self.evaluates_test(cfg):
            splits[TEST] = cfg.data.test_urls
        return splits

    def check_split(self, shards: Sequence[str], world_size: int) -> None:
        """Raise (ValueError) when ``world_size`` processes cannot evaluate ``shards`` (a split's
        expanded shard list): the eval loader deals whole shards, one at least to each process."""
        check_eval_shards(shards, world_size)

    def count_items(self, cfg: RunConfig, urls: str | Sequence[str]) -> int:
        """Items in one epoch over ``urls``, from the shards' metadata (sizes.json / texts.json):
        texts for questions, statements, and captions sampled one item per caption."""
        shards = expand_shards(urls)
        per_caption = self.provides == "captions" and self.caption_items(cfg).expand_field is not None
        texts = self.epoch_counts == "texts" or per_caption
        return count_texts(shards) if texts else count_samples(shards)


def require_file(path: str | None, key: str, task: str) -> Path:
    """``path`` as a Path, or an error naming the config key when it is unset or missing."""
    if not path:
        raise ValueError(f"task={task} needs {key}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"task={task}: {key}={path} does not exist")
    return Path(path)
