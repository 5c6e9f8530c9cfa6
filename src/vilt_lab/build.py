"""From a composed config to the objects a run needs: tokenizer, task, data streams, settings.

Kept apart from `train.py` so tests (and notebooks) can build exactly what a run would build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from .data.pipeline import LoaderConfig, Source, build_eval_loader, build_train_loader
from .data.tokenizer import load_tokenizer
from .model import ViltBackbone, ViltConfig, get_config
from .model.init_from import init_model
from .tasks.pretrain import PretrainTask, build_pretrain_task
from .trainer import TrainerSettings

# Objective settings that the data workers use rather than the objective module.
DATA_SIDE_KEYS = {"mlm": ("whole_word", "probability")}
# model.* keys that say where the weights come from, not what the model is.
MODEL_INIT_KEYS = ("init_from", "init_file")


def ensure_data(cfg: DictConfig) -> None:
    """Write the shapes world on first use (`data.generate_n` set and no tokenizer there yet).

    The tokenizer is the last file the writer produces, so its absence also catches a world whose
    writing was interrupted; that one is rewritten from scratch.
    """
    n = cfg.data.get("generate_n")
    if cfg.data.name != "shapes" or not n:
        return
    root = Path(cfg.data.root)
    if (root / "tokenizer" / "tokenizer.json").is_file():
        return
    from .data.sources.shapes import write_shapes_world

    print(f"writing the shapes world ({n} training scenes) to {root}", flush=True)
    write_shapes_world(root, int(n), seed=int(cfg.data.get("world_seed", 0)), overwrite=True)


def build_tokenizer(cfg: DictConfig):
    return load_tokenizer(cfg.data.tokenizer)


def model_config(cfg: DictConfig, vocab_size: int) -> ViltConfig:
    """The model preset `model.size` with every other `model.*` key applied as an override."""
    values = OmegaConf.to_container(cfg.model, resolve=True)
    size = values.pop("size")
    for key in MODEL_INIT_KEYS:
        values.pop(key, None)
    if values.get("vocab_size") is None:
        values["vocab_size"] = vocab_size
    elif values["vocab_size"] < vocab_size:
        raise ValueError(
            f"model.vocab_size={values['vocab_size']} is smaller than the tokenizer's {vocab_size}"
        )
    try:
        return get_config(size, **values)
    except TypeError as err:  # an unknown field: name the config key
        known = sorted(ViltConfig.__dataclass_fields__)
        raise KeyError(f"model config: {err}; model.* keys must be among {known}") from err


def objective_heads(task: PretrainTask) -> dict[str, nn.Module]:
    """Objective name -> its head: a checkpoint's `heads.<name>` is `objectives.<name>.head`."""
    return {name: objective.head for name, objective in task.objectives.items() if hasattr(objective, "head")}


def build_task(cfg: DictConfig, vocab_size: int) -> PretrainTask:
    """Backbone + the selected objectives with their weights (`objective.<name>.weight`)."""
    backbone = ViltBackbone(model_config(cfg, vocab_size))
    if cfg.trainer.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    selected = OmegaConf.to_container(cfg.objective, resolve=True) if cfg.get("objective") else {}
    if not selected:
        raise ValueError("no objective selected: set objective=[itm,mlm,...]")
    weights, kwargs = {}, {}
    for name, values in selected.items():
        values = dict(values or {})
        if "weight" not in values:
            raise KeyError(f"objective.{name}.weight is missing")
        weights[name] = float(values.pop("weight"))
        for key in DATA_SIDE_KEYS.get(name, ()):
            values.pop(key, None)
        kwargs[name] = values
    task = build_pretrain_task(backbone, list(selected), weights, cfg.task.max_image_len, kwargs)
    report = init_model(
        backbone, objective_heads(task), cfg.model.get("init_from"), cfg.model.get("init_file")
    )
    if report is not None:
        print(report.summary(), flush=True)
    if cfg.trainer.compile:
        # Per block, in place (parameter names stay), with dynamic shapes: the number of image
        # tokens changes from batch to batch.
        for block in backbone.blocks:
            block.compile(dynamic=True)
    return task


def loader_config(
    cfg: DictConfig, patch_size: int, rank: int, world_size: int, pin_memory: bool
) -> LoaderConfig:
    mlm = cfg.objective.get("mlm") or {}
    randaugment = cfg.augment.get("randaugment") or {}  # null (pixelbert): no augmentation
    return LoaderConfig(
        batch_size=cfg.trainer.micro_batch_size,
        num_workers=cfg.data.num_workers,
        image_shorter=cfg.augment.shorter,
        image_longer=cfg.augment.longer,
        patch_size=patch_size,
        randaugment_ops=int(randaugment.get("n", 0)),
        randaugment_magnitude=int(randaugment.get("m", 9)),
        max_text_len=cfg.data.max_text_len,
        text_padding=cfg.data.get("text_padding", "longest"),
        mlm_probability=float(mlm.get("probability", 0.15)),
        whole_word_masking=bool(mlm.get("whole_word", True)),
        shuffle_buffer=cfg.data.shuffle_buffer,
        shuffle_initial=min(1000, cfg.data.shuffle_buffer),
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,
    )


def build_streams(
    cfg: DictConfig, tokenizer, accelerator, patch_size: int
) -> tuple[Callable[[int], Iterable[dict[str, Any]]], Callable[[], Iterable[dict[str, Any]]] | None]:
    """The train stream (a function of the start step) and the held-out stream of this process."""
    config = loader_config(
        cfg,
        patch_size,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.device.type == "cuda",
    )
    sources = [Source(s.urls, s.get("weight"), name) for name, s in cfg.data.sources.items()]
    resampled = bool(cfg.data.resampled)

    def train_stream(start_step: int):
        return build_train_loader(sources, tokenizer, config, start_step=start_step, resampled=resampled)

    def eval_stream():
        return build_eval_loader(cfg.data.val_urls, tokenizer, config)

    return train_stream, (eval_stream if cfg.data.get("val_urls") else None)


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    o, t, s = cfg.optim, cfg.trainer, cfg.schedule
    return TrainerSettings(
        max_steps=int(s.max_steps),
        warmup=s.warmup,
        global_batch_size=int(t.global_batch_size),
        micro_batch_size=int(t.micro_batch_size),
        lr=float(o.lr),
        weight_decay=float(o.weight_decay),
        betas=tuple(o.betas),
        eps=float(o.eps),
        lr_mult=dict(o.lr_mult),
        grad_clip=o.grad_clip,
        log_every=int(t.log_every),
        ckpt_every=int(t.ckpt_every),
        keep_last=int(t.keep_last),
        eval_batches=t.eval_batches,
        progress=bool(t.progress),
        seed=int(cfg.seed),
    )
