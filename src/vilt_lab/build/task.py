"""The task module of a config (backbone + objectives + heads) and where its weights come from:
fresh, `model.init_from`, or any checkpoint vilt_lab reads (a run's, a vilt_lab directory, an
official `.ckpt`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from ..config import resolvers as config_resolvers  # noqa: F401 - registers ${required:...} before any config resolves
from ..config.errors import ConfigError
from ..config.schema import ObjectivesSchema, RunConfig, TrainSchema
from ..config.typed import typed
from ..model import ViltBackbone, ViltConfig, get_config
from ..tasks import TASKS, TaskModule, build_task_module, get_task
from ..tasks.pretrain import mark_unmarked_selection
from ..training.run_dir import RunDir, is_run_checkpoint
from ..training.speed_levers import compile_backbone, convert_to_fp8
from ..weights.checkpoint_io import (
    TOKENIZER_DIR,
    WEIGHTS_NAME,
    ViltCheckpoint,
    load_checkpoint,
    read_safetensors,
)
from ..weights.init_from import INIT_FILE_USE, InitReport, init_model, load_into
from ..weights.official import read_official
from ..weights.with_heads import ViltWithHeads

# model.* keys that say where the weights come from, not what the model is.
MODEL_INIT_KEYS = ("init_from", "init_file")
# The objectives pre-training selects (`objective=[...]`); the other objectives are tasks' own.
PRETRAIN_OBJECTIVES = frozenset(f.name for f in dataclasses.fields(ObjectivesSchema))


def model_config(cfg: TrainSchema, vocab_size: int) -> ViltConfig:
    """The model preset `model.size` with every other `model.*` key that is set (not null)
    applied as an override; `model.vocab_size` defaults to the tokenizer's ``vocab_size``."""
    overrides = {
        k: v
        for k, v in dataclasses.asdict(cfg.model).items()
        if v is not None and k not in ("size", *MODEL_INIT_KEYS)
    }
    overrides.setdefault("vocab_size", vocab_size)
    if overrides["vocab_size"] < vocab_size:
        raise ValueError(
            f"model.vocab_size={overrides['vocab_size']} is smaller than the tokenizer's {vocab_size}"
        )
    return get_config(cfg.model.size, **overrides)


def recorded_config(run: RunDir) -> DictConfig:
    """The resolved training config a run recorded (its config.yaml), the objectives it selected
    marked as today's configs mark them (`mark_unmarked_selection`)."""
    recorded = OmegaConf.load(run.config)
    mark_unmarked_selection(recorded)
    return recorded


def read_run_checkpoint(path: str | os.PathLike) -> ViltCheckpoint:
    """The backbone and heads of a training run's checkpoint (`<run>/checkpoints/step_*`),
    rebuilt from the run's resolved config (`<run>/config.yaml`) and loaded strictly."""
    path = Path(path)
    run, weights_path = RunDir.of_checkpoint(path), path / WEIGHTS_NAME
    for file in (run.config, weights_path):
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: is {path} a run's checkpoints/step_* directory?")
    recorded = recorded_config(run)
    # The weights come from the checkpoint: neither re-initialise nor compile (nor swap in fp8
    # layers: their parameters are plain linear weights, readable without torchao).
    recorded.model.init_from = recorded.model.init_file = None
    recorded.trainer.compile = recorded.trainer.fp8 = False
    cfg = typed(recorded, TrainSchema)
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
    if RunDir(path).is_training_run():
        path = RunDir(path).selected_checkpoint()
    if is_run_checkpoint(path):
        return read_run_checkpoint(path)
    if path.is_file():
        return read_official(path)
    return load_checkpoint(path)


def build_eval_task(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, checkpoint_path: str) -> TaskModule:
    """The task module of `task.name` with every weight from `checkpoint_path` (the architecture
    is the checkpoint's own, `model.*` is not read). A head the task needs that the checkpoint
    lacks is an error, never a random head: evaluating it would report chance as a result.
    Retrieval's rank head may come from the checkpoint's ITM match row (zero-shot retrieval).
    A checkpoint the settings do not fit is the user's to fix: a ConfigError naming the keys to
    pass (for a run's checkpoint, the values its run recorded)."""
    task = get_task(cfg.task.name)
    try:
        task.check(cfg)
    except ValueError as err:
        raise ConfigError([str(err)]) from err
    checkpoint = read_checkpoint(checkpoint_path)
    if checkpoint.config.vocab_size != len(tokenizer):
        raise ConfigError(
            [
                f"checkpoint {checkpoint_path} has a vocabulary of {checkpoint.config.vocab_size} tokens, "
                f"data.tokenizer={cfg.data.tokenizer} has {len(tokenizer)}: pass "
                f"data.tokenizer={_recorded_value(checkpoint_path, 'data.tokenizer', _own_tokenizer(checkpoint_path))}"
            ]
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
        raise ConfigError(
            [
                f"checkpoint {checkpoint_path} has no trained weights for {report.new[:4]}"
                f"{' ...' if len(report.new) > 4 else ''} that task={task.name} needs "
                f"(its heads: {sorted(checkpoint.heads) or 'none'}): {_settings_that_fit(checkpoint, checkpoint_path)}"
            ]
        )
    labels = checkpoint.heads.get("vqa", {}).get("labels")
    vqa = module.objectives["vqa"] if "vqa" in module.objectives else None
    if labels is not None and vqa is not None and list(labels) != list(vqa.labels or []):
        raise ConfigError(
            [
                f"checkpoint {checkpoint_path} answers with another vocabulary than data.answers="
                f"{cfg.data.answers} ({len(labels)} answers, first {labels[:3]}): pass data.answers="
                f"{_recorded_value(checkpoint_path, 'data.answers', '<the answers.json it was trained with>')}"
            ]
        )
    return module.eval()


def _recorded_value(checkpoint_path: str | os.PathLike, key: str, otherwise: str) -> str:
    """`key` as the checkpoint's run recorded it, else ``otherwise`` (what to pass instead)."""
    run = RunDir.holding(checkpoint_path)
    return otherwise if run is None else str(OmegaConf.select(recorded_config(run), key))


def _own_tokenizer(checkpoint_path: str | os.PathLike) -> str:
    """A vilt_lab checkpoint directory's own tokenizer, if it has one."""
    own = Path(checkpoint_path) / TOKENIZER_DIR
    return str(own) if own.is_dir() else "<the tokenizer it was trained with>"


def _settings_that_fit(checkpoint: ViltCheckpoint, checkpoint_path: str | os.PathLike) -> str:
    """The task settings that evaluate `checkpoint`: its run's, else the tasks its heads serve."""
    run = RunDir.holding(checkpoint_path)
    if run is not None:
        recorded = recorded_config(run)
        trained = f"task={recorded.task.name} data={recorded.data.name}"
        task = get_task(recorded.task.name)
        objectives = task.objective_names(typed(recorded, TrainSchema))
        if objectives != [task.name]:  # a task that trains a selection of objectives
            trained += f" objective=[{','.join(objectives)}]"
        return (
            f"its run trained {trained}; leave task=, data= and objective= out to evaluate what it "
            f"trained ({run.config} sets them), or pass those"
        )
    heads = set(checkpoint.heads)
    pretrain_heads = sorted(heads & PRETRAIN_OBJECTIVES)
    options = [f"task={name}" for name in sorted(heads & set(TASKS))]
    if pretrain_heads:
        options.append(f"task=pretrain objective=[{','.join(pretrain_heads)}]")
    if "itm" in heads and "irtr" not in heads:
        options.append("task=irtr (zero-shot, from its ITM head)")
    if not options:
        return "no task evaluates it"
    return f"pass {' or '.join(options)}, with a data= whose samples carry what that task reads"


def initialise(module: TaskModule, cfg: RunConfig) -> InitReport | None:
    """Apply `model.init_from` (timm:<name>, original:<name>, a vilt_lab checkpoint dir, a run's
    checkpoint or run dir)."""
    init_from, init_file = cfg.model.init_from, cfg.model.init_file
    if init_from is not None and RunDir(Path(init_from)).is_training_run():
        init_from = str(RunDir(Path(init_from)).selected_checkpoint())
    if init_from is not None and is_run_checkpoint(init_from):
        if init_file is not None:
            raise ValueError(f"model.init_file is set for model.init_from={init_from} ({INIT_FILE_USE})")
        checkpoint = read_run_checkpoint(init_from)
        return load_into(module.backbone, module.heads(), checkpoint.state, str(init_from), checkpoint.config)
    return init_model(module.backbone, module.heads(), init_from, init_file)


def build_task(
    cfg: RunConfig,
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
        fuse_passes=cfg.trainer.fuse_passes,
    )
    report = initialise(module, cfg)
    if report is not None:
        print(report.summary(), flush=True)
    if cfg.trainer.fp8:
        convert_to_fp8(backbone)
    if cfg.trainer.compile:
        compile_backbone(
            backbone,
            dynamic=cfg.trainer.compile_dynamic,
            mode=cfg.trainer.compile_mode,
        )
        # torch.compile's default mode: a CUDA-graph mode would overwrite an iteration's outputs
        # with the next replay while the loop still reads them.
        for objective in module.objectives.values():
            objective.compile_loops(dynamic=cfg.trainer.compile_dynamic)
    return module
