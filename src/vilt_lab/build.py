"""From a composed config to the objects a run needs: tokenizer, task, data streams, settings.

Kept apart from `train.py` so tests (and notebooks) can build exactly what a run would build.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase

from . import config_resolvers  # noqa: F401 - registers ${required:...} before any config resolves
from .data.pipeline import LoaderConfig, Source, build_train_loader
from .data.tokenizer import load_tokenizer
from .evaluation.evaluators import Evaluator
from .model import ViltBackbone, ViltConfig, get_config
from .model.checkpoint_io import WEIGHTS_NAME, ViltCheckpoint, load_checkpoint, read_safetensors
from .model.init_from import INIT_FILE_USE, InitReport, init_model, load_into
from .model.official import read_official
from .model.with_heads import ViltWithHeads
from .run_dir import RUN_CONFIG_NAME
from .tasks import TaskModule, build_task_module, get_task
from .tasks.pretrain import mark_unmarked_selection
from .trainer import TrainerSettings
from .training.checkpoint import TRAINER_STATE, is_run_dir, run_dir_checkpoint
from .training.progress import progress_style
from .training.schedule import steps_for_epochs
from .write_once import write_once

# model.* keys that say where the weights come from, not what the model is.
MODEL_INIT_KEYS = ("init_from", "init_file")


def shapes_world_complete(root: Path) -> bool:
    """The tokenizer is the last file the shapes world's writer produces: it marks a complete world."""
    return (Path(root) / "tokenizer" / "tokenizer.json").is_file()


def written_on_first_use(cfg: DictConfig) -> bool:
    """The data is a shapes world that `ensure_data` is about to write (`data.generate_n` set and
    no complete world under `data.root` yet): there is nothing on disk to check before it."""
    return (
        cfg.data.name == "shapes"
        and bool(cfg.data.get("generate_n"))
        and not shapes_world_complete(Path(cfg.data.root))
    )


def ensure_data(cfg: DictConfig) -> None:
    """Write the shapes world on first use (`written_on_first_use`): once, by one process, while
    every other process that calls this waits (`write_once`)."""
    if not written_on_first_use(cfg):
        return
    n = cfg.data.generate_n
    from .data.sources.shapes import write_shapes_world

    root = Path(cfg.data.root)

    def write(out: Path) -> None:
        print(f"writing the shapes world ({n} training scenes) to {root}", flush=True)
        write_shapes_world(out, int(n), seed=int(cfg.data.get("world_seed", 0)))

    write_once(root, shapes_world_complete, write)


def build_tokenizer(cfg: DictConfig):
    return load_tokenizer(cfg.data.tokenizer, key="data.tokenizer")


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


def is_run_checkpoint(path: str | os.PathLike) -> bool:
    """A training run's `checkpoints/step_*` directory (its weights use the task module's names)."""
    return (Path(path) / TRAINER_STATE).is_file() and (Path(path).parent.parent / RUN_CONFIG_NAME).is_file()


def read_run_checkpoint(path: str | os.PathLike) -> ViltCheckpoint:
    """The backbone and heads of a training run's checkpoint (`<run>/checkpoints/step_*`),
    rebuilt from the run's resolved config (`<run>/config.yaml`) and loaded strictly."""
    path = Path(path)
    config_path, weights_path = path.parent.parent / RUN_CONFIG_NAME, path / WEIGHTS_NAME
    for file in (config_path, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: is {path} a run's checkpoints/step_* directory?")
    cfg = OmegaConf.load(config_path)
    mark_unmarked_selection(cfg)
    # The weights come from the checkpoint: neither re-initialise nor compile (nor swap in fp8
    # layers: their parameters are plain linear weights, readable without torchao).
    cfg.model.init_from = cfg.model.init_file = None
    cfg.trainer.compile = cfg.trainer.fp8 = False
    state = read_safetensors(weights_path)
    module = build_task(
        cfg, vocab_size=state["backbone.text_embeddings.word_embeddings.weight"].shape[0], train=False
    )
    module.load_state_dict(state, strict=True)
    return ViltWithHeads(module.backbone, module.heads(), module.head_specs()).to_checkpoint()


def read_checkpoint(path: str | os.PathLike) -> ViltCheckpoint:
    """Any checkpoint vilt_lab reads: a training run's `checkpoints/step_*` (or the run dir itself:
    its best checkpoint, else its latest), a vilt_lab checkpoint directory, or an official ViLT
    `.ckpt` file (converted on the fly, read weights-only)."""
    path = Path(path)
    if is_run_dir(path):
        path = run_dir_checkpoint(path)
    if is_run_checkpoint(path):
        return read_run_checkpoint(path)
    if path.is_file():
        return read_official(path)
    return load_checkpoint(path)


def build_eval_task(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, checkpoint_path: str) -> TaskModule:
    """The task module of `task.name` with every weight from `checkpoint_path` (the architecture
    is the checkpoint's own, `model.*` is not read). A head the task needs that the checkpoint
    lacks is an error, never a random head: evaluating it would report chance as a result.
    Retrieval's rank head may come from the checkpoint's ITM match row (zero-shot retrieval)."""
    task = get_task(cfg.task.name)
    task.check(cfg)
    checkpoint = read_checkpoint(checkpoint_path)
    if checkpoint.config.vocab_size != len(tokenizer):
        raise ValueError(
            f"checkpoint {checkpoint_path} has a vocabulary of {checkpoint.config.vocab_size} tokens, "
            f"data.tokenizer={cfg.data.tokenizer} has {len(tokenizer)}: evaluate with its own tokenizer"
        )
    selected = task.objectives(cfg, tokenizer, train=False)
    module = build_task_module(
        ViltBackbone(checkpoint.config),
        list(selected),
        {name: weight for name, (weight, _) in selected.items()},
        -1,
        {name: values for name, (_, values) in selected.items()},
    )
    report = load_into(
        module.backbone, module.heads(), checkpoint.state, str(checkpoint_path), checkpoint.config
    )
    print(report.summary(), flush=True)
    if report.new:
        raise ValueError(
            f"checkpoint {checkpoint_path} has no trained weights for {report.new[:4]}"
            f"{' ...' if len(report.new) > 4 else ''} that task={task.name} needs "
            f"(its heads: {sorted(checkpoint.heads) or 'none'})"
        )
    labels = checkpoint.heads.get("vqa", {}).get("labels")
    vqa = module.objectives["vqa"] if "vqa" in module.objectives else None
    if labels is not None and vqa is not None and list(labels) != list(vqa.labels or []):
        raise ValueError(
            f"checkpoint {checkpoint_path} answers with another vocabulary than data.answers="
            f"{cfg.data.get('answers')} ({len(labels)} answers, first {labels[:3]}): use its own answers.json"
        )
    return module.eval()


def initialise(module: TaskModule, cfg: DictConfig) -> InitReport | None:
    """Apply `model.init_from` (timm:<name>, original:<name>, a vilt_lab checkpoint dir, a run's
    checkpoint or run dir)."""
    init_from, init_file = cfg.model.get("init_from"), cfg.model.get("init_file")
    if init_from is not None and is_run_dir(init_from):
        init_from = str(run_dir_checkpoint(init_from))
    if init_from is not None and is_run_checkpoint(init_from):
        if init_file is not None:
            raise ValueError(f"model.init_file is set for model.init_from={init_from} ({INIT_FILE_USE})")
        checkpoint = read_run_checkpoint(init_from)
        return load_into(module.backbone, module.heads(), checkpoint.state, str(init_from), checkpoint.config)
    return init_model(module.backbone, module.heads(), init_from, init_file)


def compile_blocks(backbone: ViltBackbone, dynamic: bool, **options: Any) -> None:
    """`torch.compile` each transformer block in place (parameter names stay).

    dynamic=True (`trainer.compile_dynamic`, the default) compiles shape-generic kernels once: the
    text length and the number of image tokens change from batch to batch. False compiles one
    static graph per shape (faster kernels, and the precondition of CUDA graphs): with
    `data.text_padding=bucket` and a fixed patch count that is one graph per text bucket.
    options: more `torch.compile` arguments: `mode` (`trainer.compile_mode`; "reduce-overhead"
    replays CUDA graphs, for fixed shapes: inference, or training with dynamic=False), a backend.
    """
    for block in backbone.blocks:
        block.compile(dynamic=dynamic, **options)


def convert_to_fp8(backbone: ViltBackbone) -> None:
    """`trainer.fp8`: the transformer blocks' linear layers as torchao's float8 training linears
    (fp8 matrix products with dynamic scaling; parameter names and fp32 master weights stay).

    Unlike the other levers this changes the numerics beyond rounding noise, so it is part of
    what the run is (not resumable with another value). Needs torchao and a GPU with fp8 tensor
    cores (H100 and later); layers whose sizes are not multiples of 16 stay as they are.
    """
    try:
        from torchao.float8 import convert_to_float8_training
    except ImportError as err:
        raise ImportError(
            "trainer.fp8=true needs torchao (pip install torchao), which is not importable here; "
            "set trainer.fp8=false"
        ) from err

    def fits(module: nn.Module, _: str) -> bool:
        return not isinstance(module, nn.Linear) or (
            module.in_features % 16 == 0 and module.out_features % 16 == 0
        )

    for block in backbone.blocks:
        convert_to_float8_training(block, module_filter_fn=fits)


def build_task(
    cfg: DictConfig,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    vocab_size: int | None = None,
    train: bool = True,
) -> TaskModule:
    """Backbone + the objectives of `task.name` (for pre-training: the selected `objective=[...]`
    with their weights), initialised as `model.init_from` says.

    vocab_size: defaults to the tokenizer's; train: False for evaluation only (no negative pools).
    """
    task = get_task(cfg.task.name)
    task.check(cfg)
    if vocab_size is None:
        if tokenizer is None:
            raise ValueError("build_task needs a tokenizer or a vocab_size")
        vocab_size = len(tokenizer)
    backbone = ViltBackbone(model_config(cfg, vocab_size))
    if cfg.trainer.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    selected = task.objectives(cfg, tokenizer, train=train)
    weights = {name: weight for name, (weight, _) in selected.items()}
    kwargs = {name: values for name, (_, values) in selected.items()}
    module = build_task_module(
        backbone,
        list(selected),
        weights,
        cfg.task.max_image_len,
        kwargs,
        fuse_passes=bool(cfg.trainer.get("fuse_passes", False)),
    )
    report = initialise(module, cfg)
    if report is not None:
        print(report.summary(), flush=True)
    if cfg.trainer.get("fp8", False):
        convert_to_fp8(backbone)
    if cfg.trainer.compile:
        compile_blocks(
            backbone,
            dynamic=bool(cfg.trainer.get("compile_dynamic", True)),
            mode=cfg.trainer.get("compile_mode"),
        )
    return module


def loader_config(
    cfg: DictConfig, patch_size: int, rank: int, world_size: int, pin_memory: bool
) -> LoaderConfig:
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
        shuffle_buffer=cfg.data.shuffle_buffer,
        shuffle_initial=min(1000, cfg.data.shuffle_buffer),
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        pin_memory=pin_memory,
    )


def process_loader_config(cfg: DictConfig, accelerator, module: TaskModule) -> LoaderConfig:
    """The loader settings of this process: its rank, the model's patch size, pinned memory on GPUs."""
    return loader_config(
        cfg,
        module.backbone.config.patch_size,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.device.type == "cuda",
    )


def build_streams(
    cfg: DictConfig, tokenizer, accelerator, module: TaskModule
) -> tuple[Callable[[int], Iterable[dict[str, Any]]], dict[str, Evaluator]]:
    """The train stream of this process (a function of the start step) and the evaluators of the
    task's evaluation splits (prefix -> evaluator; empty with `evaluate=false`)."""
    task = get_task(cfg.task.name)
    config = process_loader_config(cfg, accelerator, module)
    sources = [Source(s.urls, s.get("weight"), name) for name, s in cfg.data.sources.items()]
    resampled = bool(cfg.data.resampled)
    items = task.items(cfg, tokenizer, module)

    def train_stream(start_step: int):
        return build_train_loader(
            sources, tokenizer, config, start_step=start_step, resampled=resampled, items=items
        )

    evaluators = {}
    if cfg.get("evaluate", True):
        evaluators = {
            prefix: task.evaluator(cfg, tokenizer, module, config, urls)
            for prefix, urls in task.eval_splits(cfg).items()
        }
    return train_stream, evaluators


def train_items(cfg: DictConfig) -> int:
    """Items in one epoch of the training data (every source's shards), for `schedule.max_epochs`."""
    task = get_task(cfg.task.name)
    return sum(task.count_items(cfg, source.urls) for source in cfg.data.sources.values())


def max_steps(cfg: DictConfig) -> int:
    """`schedule.max_steps`, or the optimizer steps of `schedule.max_epochs` epochs of the train split."""
    steps, epochs = cfg.schedule.get("max_steps"), cfg.schedule.get("max_epochs")
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"set exactly one of schedule.max_steps ({steps}) and schedule.max_epochs ({epochs})"
        )
    if steps is not None:
        return int(steps)
    return steps_for_epochs(train_items(cfg), float(epochs), int(cfg.trainer.global_batch_size))


def eval_every(cfg: DictConfig) -> int | None:
    """`trainer.eval_every`, or the steps between `trainer.evals_per_epoch` evaluations."""
    per_epoch = cfg.trainer.get("evals_per_epoch")
    if per_epoch is None:
        return cfg.trainer.get("eval_every")
    if cfg.trainer.get("eval_every") is not None:
        raise ValueError("set trainer.eval_every or trainer.evals_per_epoch, not both")
    if cfg.schedule.get("max_epochs") is None:
        raise ValueError("trainer.evals_per_epoch needs an epoch schedule (schedule.max_epochs)")
    steps_per_epoch = steps_for_epochs(train_items(cfg), 1.0, int(cfg.trainer.global_batch_size))
    return max(1, steps_per_epoch // int(per_epoch))


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    o, t, s = cfg.optim, cfg.trainer, cfg.schedule
    task = get_task(cfg.task.name)
    return TrainerSettings(
        max_steps=max_steps(cfg),
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
        eval_every=eval_every(cfg),
        select_metric=task.select_metric(cfg),
        select_mode=str(cfg.task.get("select_mode", "max")),
        progress=progress_style(t),
        seed=int(cfg.seed),
        nonfinite=str(t.nonfinite),
        max_skipped_steps=int(t.max_skipped_steps),
    )
