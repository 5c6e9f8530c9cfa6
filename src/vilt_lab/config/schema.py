"""The typed schema of vilt_lab's composed configs: conf/train.yaml, conf/eval.yaml, every group.

Each dataclass is one config node: its fields are the node's keys, their types what each key
allows (the type grammar is vilt_lab.config.typed_check's). A field without a default must be present;
a default only marks a key that may be absent. Rules across keys and about the data on disk are
vilt_lab.config.validation's.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_type_hints

from ..data.augment import MAX_MAGNITUDE
from ..data.collate import TEXT_PADDING
from ..data.masking import WHOLE_WORD_RULES
from ..data.pipeline import CAPTION_SAMPLING, PER_IMAGE
from ..model.config import SIZES, ViltConfig
from ..objectives.irtr import DRAW_FALSE_TEXT
from ..objectives.itm import ITM_NEGATIVES, SAME_SOURCE
from .typed_check import Allowed, Bound, NonEmpty

PositiveInt = Annotated[int, Bound(">=", 1)]
Count = Annotated[int, Bound(">=", 0)]
Positive = Annotated[float, Bound(">", 0)]
NonNegative = Annotated[float, Bound(">=", 0)]
Probability = Annotated[float, Bound(">", 0), Bound("<", 1)]
Beta = Annotated[float, Bound(">=", 0), Bound("<", 1)]  # Adam's moment decay
Text = Annotated[str, NonEmpty()]
Urls = Annotated[
    Text | Annotated[list[Text], NonEmpty()],
    Allowed("a split directory, shard pattern or URL, or a non-empty list of them"),
]
# Patches per image: -1 keeps them all.
ImageLen = Literal[-1] | PositiveInt


# ------------------------------------------------------------------------------------ model
def _model_schema() -> type:
    """model.*: the preset `size`, where the weights come from, and any ViltConfig field as an
    override of the preset (so the fields follow ViltConfig: a new field is a new key)."""
    overrides = []
    for name, tp in get_type_hints(ViltConfig).items():
        allowed = PositiveInt if tp is int else NonNegative
        if name == "vocab_size":  # null: the tokenizer's vocabulary size
            allowed = allowed | None
        overrides.append((name, allowed, field(default=None)))
    return dataclasses.make_dataclass(
        "ModelSchema",
        [
            ("size", Literal[tuple(SIZES)]),
            # null (fresh), timm:<ViT name>, original:<ViT name>, a vilt_lab checkpoint dir or a
            # run's checkpoint.
            ("init_from", str | None, field(default=None)),
            ("init_file", str | None, field(default=None)),
            *overrides,
        ],
        frozen=True,
    )


ModelSchema = _model_schema()


# ------------------------------------------------------------------------------------ objectives
@dataclass(frozen=True)
class ObjectiveSchema:
    """`objective.<name>`: the group's file marks the selection (`selected: true`); an entry set
    elsewhere (an experiment tuning an unselected objective) may hold any of its keys alone."""

    selected: bool = False
    weight: NonNegative | None = None


@dataclass(frozen=True)
class ITMSchema(ObjectiveSchema):
    negatives: Literal[ITM_NEGATIVES] = SAME_SOURCE


@dataclass(frozen=True)
class MLMSchema(ObjectiveSchema):
    whole_word: bool = True
    probability: Probability = 0.15
    rule: Literal[WHOLE_WORD_RULES] = "per_word"


@dataclass(frozen=True)
class WPASchema(ObjectiveSchema):
    beta: Positive = 0.5
    iterations: PositiveInt = 50
    k: PositiveInt = 1


@dataclass(frozen=True)
class MPPSchema(ObjectiveSchema):
    probability: Probability = 0.15


@dataclass(frozen=True)
class ObjectivesSchema:
    """`objective`: the pre-training objectives conf/objective holds (the downstream tasks'
    objectives take their settings from `task.*`)."""

    itm: ITMSchema | None = None
    mlm: MLMSchema | None = None
    wpa: WPASchema | None = None
    mpp: MPPSchema | None = None


# ------------------------------------------------------------------------------------ task
@dataclass(frozen=True)
class TaskSchema:
    """`task`: the keys every task has; `task.name` picks the subclass (a tagged union)."""

    name: str
    max_image_len: ImageLen
    select_metric: Text | None = None
    select_mode: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class PretrainTaskSchema(TaskSchema):
    name: Literal["pretrain"]


@dataclass(frozen=True)
class VQATaskSchema(TaskSchema):
    name: Literal["vqa"]
    eval_test: bool = False


@dataclass(frozen=True)
class NLVR2TaskSchema(TaskSchema):
    name: Literal["nlvr2"]
    select_on_test: bool = False
    eval_test: bool = False


@dataclass(frozen=True)
class IRTRTaskSchema(TaskSchema):
    name: Literal["irtr"]
    negatives: PositiveInt = DRAW_FALSE_TEXT
    exclude_own_captions: bool = True
    image_negatives: Count = 0
    text_batch_size: PositiveInt = 64
    select_on_test: bool = False
    eval_test: bool = False


TASK_SCHEMAS = (PretrainTaskSchema, VQATaskSchema, NLVR2TaskSchema, IRTRTaskSchema)
AnyTask = PretrainTaskSchema | VQATaskSchema | NLVR2TaskSchema | IRTRTaskSchema


# ------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class SourceSchema:
    """`data.sources.<name>`: a dataset of the training stream."""

    urls: Urls
    weight: Positive | None = None  # null for every source: weighed by caption counts


@dataclass(frozen=True)
class DataSchema:
    """`data`: one conf/data file. Paper datasets have a `root` (4M: `roots.<source>`); the shapes
    world adds `generate_n` and `world_seed`, VQA data `answers`."""

    name: Text
    provides: Literal["captions", "questions", "statements"]
    sources: Annotated[dict[str, SourceSchema], NonEmpty()]
    tokenizer: Text
    max_text_len: PositiveInt
    image_shorter: PositiveInt
    image_longer: PositiveInt
    num_workers: Count
    shuffle_buffer: PositiveInt
    resampled: bool
    text_padding: Literal[TEXT_PADDING] = "longest"
    caption_sampling: Literal[tuple(CAPTION_SAMPLING)] = PER_IMAGE
    val_urls: Urls | None = None
    test_urls: Urls | None = None
    root: Text | None = None
    roots: dict[str, Text] = field(default_factory=dict)
    answers: Text | None = None
    generate_n: Count | None = None  # the shapes world's training scenes, written on first use
    world_seed: int = 0


# ------------------------------------------------------------------------------------ the rest
@dataclass(frozen=True)
class RandAugmentSchema:
    n: PositiveInt = 2
    m: Annotated[int, Bound(">=", 0), Bound("<=", MAX_MAGNITUDE)] = 9


@dataclass(frozen=True)
class AugmentSchema:
    name: Text
    shorter: PositiveInt
    longer: PositiveInt
    randaugment: RandAugmentSchema | None = None


@dataclass(frozen=True)
class ScheduleSchema:
    """Exactly one of max_steps and max_epochs (a rule across keys: config_validation)."""

    max_steps: PositiveInt | None
    max_epochs: Positive | None
    warmup: Annotated[NonNegative, Allowed("a fraction in [0, 1) of the steps, or a whole number of steps")]


@dataclass(frozen=True)
class OptimSchema:
    lr: Positive
    weight_decay: NonNegative
    betas: tuple[Beta, Beta]
    eps: Positive
    lr_mult: dict[str, NonNegative] = field(default_factory=dict)
    grad_clip: Positive | None = None


@dataclass(frozen=True)
class TrainerSchema:
    global_batch_size: PositiveInt
    micro_batch_size: PositiveInt
    precision: Literal["bf16", "fp16", "no"] | None
    compile: bool = False
    grad_checkpointing: bool = False
    compile_dynamic: bool = True
    compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = None
    fuse_passes: bool = False
    log_every: PositiveInt = 10
    ckpt_every: PositiveInt = 1000
    keep_last: PositiveInt = 3
    eval_batches: PositiveInt | None = None
    eval_every: PositiveInt | None = None
    evals_per_epoch: PositiveInt | None = None
    progress: bool = True
    progress_every_s: Positive = 30.0
    nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped_steps: Count = 10
    deterministic: bool = False
    fp8: bool = False


@dataclass(frozen=True)
class LoggerSchema:
    # wandb.init's modes (the config documents the first three; the others are W&B's aliases).
    mode: Literal["online", "offline", "disabled", "shared", "dryrun", "run"]
    project: Text
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LauncherSchema:
    name: Literal["local", "slurm"]


@dataclass(frozen=True)
class PathsSchema:
    root_dir: Text
    data_dir: Text
    runs_dir: Text


Seed = Annotated[int, Bound(">=", 0), Bound("<", 2**32)]  # NumPy's seeds are 32-bit


@dataclass(frozen=True)
class TrainSchema:
    """conf/train.yaml composed: `python -m vilt_lab.train ...`."""

    tag: Text
    seed: Seed
    model: ModelSchema
    objective: ObjectivesSchema
    task: AnyTask
    data: DataSchema
    augment: AugmentSchema
    schedule: ScheduleSchema
    optim: OptimSchema
    trainer: TrainerSchema
    logger: LoggerSchema
    launcher: LauncherSchema
    paths: PathsSchema
    name: Text | None = None  # the run dir's name (null: <tag>-<config hash>)
    resume: Text | None = None  # null, latest, auto, or a checkpoint directory
    evaluate: bool = True


@dataclass(frozen=True)
class EvalSchema:
    """conf/eval.yaml composed: `vilt-eval checkpoint=... task=... data=... split=...`."""

    checkpoint: Text
    seed: Seed
    objective: ObjectivesSchema
    task: AnyTask
    data: DataSchema
    augment: AugmentSchema
    trainer: TrainerSchema
    paths: PathsSchema
    split: Literal["val", "test"] = "val"
    out_dir: Text | None = None
    submission: bool | None = None  # null: for split=test only
    save_scores: bool = False
