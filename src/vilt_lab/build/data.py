"""The data side of a run: the shapes world written on first use, the tokenizer, this process's
loader settings, the training stream and the evaluators of the task's splits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config.schema import RunConfig, TrainSchema
from ..data.pipeline import LoaderConfig, Source, build_train_loader
from ..data.tokenizer import load_tokenizer
from ..evaluation.evaluators import Evaluator
from ..tasks import TaskModule, get_task
from ..utils.write_once import write_once


def shapes_world_complete(root: Path) -> bool:
    """The tokenizer is the last file the shapes world's writer produces: it marks a complete world."""
    return (Path(root) / "tokenizer" / "tokenizer.json").is_file()


def written_on_first_use(cfg: RunConfig) -> bool:
    """The data is a shapes world that `ensure_data` is about to write (`data.generate_n` set and
    no complete world under `data.root` yet): there is nothing on disk to check before it."""
    return (
        cfg.data.name == "shapes"
        and bool(cfg.data.generate_n)
        and not shapes_world_complete(Path(cfg.data.root))
    )


def ensure_data(cfg: RunConfig) -> None:
    """Write the shapes world on first use (`written_on_first_use`): once, by one process, while
    every other process that calls this waits (`write_once`)."""
    if not written_on_first_use(cfg):
        return
    n = cfg.data.generate_n
    from ..data.sources.shapes import write_shapes_world

    root = Path(cfg.data.root)

    def write(out: Path) -> None:
        print(f"writing the shapes world ({n} training scenes) to {root}", flush=True)
        write_shapes_world(out, n, seed=cfg.data.world_seed)

    write_once(root, shapes_world_complete, write)


def build_tokenizer(cfg: RunConfig):
    return load_tokenizer(cfg.data.tokenizer, key="data.tokenizer")


def loader_config(
    cfg: RunConfig, patch_size: int, rank: int, world_size: int, pin_memory: bool
) -> LoaderConfig:
    randaugment = cfg.augment.randaugment  # null (pixelbert): no augmentation
    augment = (
        {"randaugment_ops": randaugment.n, "randaugment_magnitude": randaugment.m} if randaugment else {}
    )
    return LoaderConfig(
        batch_size=cfg.trainer.micro_batch_size,
        num_workers=cfg.data.num_workers,
        image_shorter=cfg.augment.shorter,
        image_longer=cfg.augment.longer,
        patch_size=patch_size,
        **augment,
        mixgen_share=cfg.augment.mixgen.share,
        mixgen_lam=cfg.augment.mixgen.lam,
        max_text_len=cfg.data.max_text_len,
        text_padding=cfg.data.text_padding,
        image_buckets=cfg.data.image_buckets,
        canvas_step=cfg.data.canvas_step,
        decode=cfg.data.decode,
        shuffle_buffer=cfg.data.shuffle_buffer,
        shuffle_initial=min(1000, cfg.data.shuffle_buffer),
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,
    )


def process_loader_config(cfg: RunConfig, accelerator, module: TaskModule) -> LoaderConfig:
    """The loader settings of this process: its rank, the model's patch size, pinned memory on GPUs."""
    return loader_config(
        cfg,
        module.backbone.config.patch_size,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.device.type == "cuda",
    )


def build_streams(
    cfg: TrainSchema, tokenizer, accelerator, module: TaskModule
) -> tuple[Callable[[int], Iterable[dict[str, Any]]], dict[str, Evaluator]]:
    """The train stream of this process (a function of the start step) and the evaluators of the
    task's evaluation splits (prefix -> evaluator; empty with `evaluate=false`)."""
    task = get_task(cfg.task.name)
    config = process_loader_config(cfg, accelerator, module)
    sources = [Source(s.urls, s.weight, name) for name, s in cfg.data.sources.items()]
    resampled = cfg.data.resampled
    items = task.items(cfg, tokenizer, module)

    def train_stream(start_step: int):
        return build_train_loader(
            sources, tokenizer, config, start_step=start_step, resampled=resampled, items=items
        )

    evaluators = {}
    if cfg.evaluate:
        evaluators = {
            prefix: task.evaluator(cfg, tokenizer, module, config, urls)
            for prefix, urls in task.eval_splits(cfg).items()
        }
    return train_stream, evaluators
