"""The typed schema of vilt_lab's composed configs: conf/train.yaml, conf/eval.yaml, every group.

Each dataclass is one config node: its fields are the node's keys, their types what each key
allows (the type grammar is vilt_lab.config.typed_check's). A field without a default must be present;
a default only marks a key that may be absent. Rules across keys and about the data on disk are
vilt_lab.config.validation's.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_type_hints

from ..data.augment import MAX_MAGNITUDE
from ..data.collate import TEXT_PADDING
from ..data.device_decode import DECODE
from ..data.masking import WHOLE_WORD_RULES
from ..data.pipeline import CAPTION_SAMPLING, PER_IMAGE
from ..model.config import SIZES, ViltConfig
from ..model.heads import MIMDecoder
from ..objectives.irtr import DRAW_FALSE_TEXT
from ..objectives.itm import ITM_NEGATIVES, SAME_SOURCE
from ..objectives.mim import MIM_TARGETS, NORMALIZED
from .typed_check import Allowed, Bound, MultipleOf, NonEmpty

PositiveInt = Annotated[int, Bound(">=", 1)]
Count = Annotated[int, Bound(">=", 0)]
Positive = Annotated[float, Bound(">", 0)]
NonNegative = Annotated[float, Bound(">=", 0)]
Probability = Annotated[float, Bound(">", 0), Bound("<", 1)]
Beta = Annotated[float, Bound(">=", 0), Bound("<", 1)]  # Adam's moment decay
UnitInterval = Annotated[float, Bound(">=", 0), Bound("<=", 1)]
Text = Annotated[str, NonEmpty()]
Urls = Annotated[
    Text | Annotated[list[Text], NonEmpty()],
    Allowed("a split directory, shard pattern or URL, or a non-empty list of them"),
]
# Patches per image: -1 keeps them all.
ImageLen = Literal[-1] | PositiveInt

# The metadata entries of a declaration (read by vilt_lab.config.keys).
DOC, MAY_CHANGE = "doc", "may_change"


def key(
    doc: str, default: Any = dataclasses.MISSING, *, may_change: bool = False, factory: Any = None
) -> Any:
    """Declare one config key (a dataclass field): ``default`` (none: the key must be present;
    ``factory`` for a mutable one), ``doc`` (one line for the key reference), ``may_change``
    (a resume may change it: it says how or where the run runs, not what it trains, so it stays
    out of the run-dir hash). On a node's field, ``may_change`` covers every key under it."""
    metadata = {DOC: doc, MAY_CHANGE: may_change}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------------ model
def _field_docs(cls: type) -> dict[str, str]:
    """The one-line docs of a dataclass's fields, from its docstring's ``Args:`` section."""
    docs: dict[str, str] = {}
    for line in (cls.__doc__ or "").split("Args:", 1)[-1].splitlines():
        name, sep, text = line.strip().partition(": ")
        if sep and name.isidentifier():
            docs[name] = text
        elif docs and line.strip():
            docs[list(docs)[-1]] += " " + line.strip()
    return docs


def _model_schema() -> type:
    """model.*: the preset `size`, where the weights come from, and any ViltConfig field as an
    override of the preset (so the fields follow ViltConfig: a new field is a new key)."""
    docs = _field_docs(ViltConfig)
    overrides = []
    for name, tp in get_type_hints(ViltConfig).items():
        allowed = PositiveInt if tp is int else NonNegative
        doc = f"override of the preset's {name} (null: the preset's): {docs[name]}"
        if name == "vocab_size":
            allowed = allowed | None
            doc = "override of the preset's vocab_size (null: the tokenizer's vocabulary size)"
        overrides.append((name, allowed, key(doc, None)))
    return dataclasses.make_dataclass(
        "ModelSchema",
        [
            ("size", Literal[tuple(SIZES)], key("the preset: " + ", ".join(SIZES))),
            (
                "init_from",
                str | None,
                key(
                    "where the weights start: null (fresh), timm:<ViT name>, original:<ViT name>, "
                    "a vilt_lab checkpoint dir, a run's checkpoint or run dir, or an official .ckpt",
                    None,
                ),
            ),
            ("init_file", str | None, key("a local weights file for a timm:/original: init_from", None)),
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

    selected: bool = key("set by the objective group's file alone: objective=[...] selects", False)
    weight: NonNegative | None = key("the objective's loss weight (required when selected)", None)


@dataclass(frozen=True)
class ITMSchema(ObjectiveSchema):
    negatives: Literal[ITM_NEGATIVES] = key(
        "same_source: a negative image from the caption's own dataset (official); batch: any pair's",
        SAME_SOURCE,
    )


@dataclass(frozen=True)
class MLMSchema(ObjectiveSchema):
    whole_word: bool = key("mask whole words, not word pieces (Table 5)", True)
    probability: Probability = key("the share of words (or pieces) masked", 0.15)
    rule: Literal[WHOLE_WORD_RULES] = key(
        "how whole words are drawn: per_word, or official (transformers 4.2.1's collator)", "per_word"
    )


@dataclass(frozen=True)
class WPASchema(ObjectiveSchema):
    beta: Positive = key("IPOT's proximal step", 0.5)
    iterations: PositiveInt = key("IPOT's outer iterations", 50)
    k: PositiveInt = key("IPOT's inner Sinkhorn steps per iteration", 1)


@dataclass(frozen=True)
class MPPSchema(ObjectiveSchema):
    probability: Probability = key("the share of image patches masked", 0.15)


@dataclass(frozen=True)
class MIMSchema(ObjectiveSchema):
    ratio: Probability = key("the share of each image's valid patches masked (VLC: 0.6)", 0.6)
    target: Literal[MIM_TARGETS] = key(
        "normalized: MAE's per-patch normalised pixels; raw: VLC's pixels; mpp: MPP's mean-colour bins",
        NORMALIZED,
    )
    decoder_depth: PositiveInt = key("transformer blocks of the light decoder", 2)
    decoder_width: Annotated[int, Bound(">=", MIMDecoder.HEAD_DIM), MultipleOf(MIMDecoder.HEAD_DIM)] = key(
        f"the decoder's width (heads of {MIMDecoder.HEAD_DIM} channels, as MAE's 512-wide decoder)", 512
    )


@dataclass(frozen=True)
class ObjectivesSchema:
    """`objective`: the pre-training objectives conf/objective holds (the downstream tasks'
    objectives take their settings from `task.*`)."""

    itm: ITMSchema | None = key("image-text matching", None)
    mlm: MLMSchema | None = key("masked language modelling", None)
    wpa: WPASchema | None = key("word-patch alignment (optimal transport on the ITM pass)", None)
    mpp: MPPSchema | None = key("masked patch prediction (the paper's ablation)", None)
    mim: MIMSchema | None = key("masked image modelling (a light decoder predicts masked patches)", None)


# ------------------------------------------------------------------------------------ task
@dataclass(frozen=True)
class TaskSchema:
    """`task`: the keys every task has; `task.name` picks the subclass (a tagged union)."""

    name: str = key("the task: pretrain, vqa, nlvr2 or irtr")
    max_image_len: ImageLen = key("image patches kept per image (-1: all)")
    select_metric: Text | None = key("the metric that picks the best checkpoint (null: the task's own)", None)
    select_mode: Literal["max", "min"] = key(
        "whether the best select_metric is the largest or smallest", "max"
    )


@dataclass(frozen=True)
class PretrainTaskSchema(TaskSchema):
    name: Literal["pretrain"] = key("pre-training on image-caption data")


@dataclass(frozen=True)
class EvaluatesTestSchema(TaskSchema):
    """A fine-tuning task that can also evaluate the test split during training."""

    eval_test: bool = key("also evaluate data.test_urls during training", False)


@dataclass(frozen=True)
class SelectsOnTestSchema(EvaluatesTestSchema):
    """A fine-tuning task that can pick its best checkpoint on the test split (as the official
    code does for NLVR2 and retrieval)."""

    select_on_test: bool = key("select the best checkpoint on the test split (the official choice)", False)


@dataclass(frozen=True)
class VQATaskSchema(EvaluatesTestSchema):
    name: Literal["vqa"] = key("VQAv2 fine-tuning")


@dataclass(frozen=True)
class NLVR2TaskSchema(SelectsOnTestSchema):
    name: Literal["nlvr2"] = key("NLVR2 fine-tuning (the pair method)")


@dataclass(frozen=True)
class IRTRTaskSchema(SelectsOnTestSchema):
    name: Literal["irtr"] = key("image-text retrieval fine-tuning")
    negatives: PositiveInt = key("caption negatives per image (official draw_false_text)", DRAW_FALSE_TEXT)
    exclude_own_captions: bool = key("a negative is never one of the image's own captions", True)
    image_negatives: Count = key("other images of the micro batch each caption is ranked against", 0)
    text_batch_size: PositiveInt = key("texts per forward pass in exact evaluation", 64)


TASK_SCHEMAS = (PretrainTaskSchema, VQATaskSchema, NLVR2TaskSchema, IRTRTaskSchema)
AnyTask = PretrainTaskSchema | VQATaskSchema | NLVR2TaskSchema | IRTRTaskSchema


# ------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class SourceSchema:
    """`data.sources.<name>`: a dataset of the training stream."""

    urls: Urls = key("the source's split directory, shard pattern or URL, or a list of them")
    weight: Positive | None = key("its mix weight (null for every source: weighed by caption counts)", None)


@dataclass(frozen=True)
class DataSchema:
    """`data`: one conf/data file. Paper datasets have a `root` (4M, 14M: `roots.<source>`); the shapes
    world adds `generate_n` and `world_seed`, VQA data `answers`."""

    name: Text = key("the data config's name")
    provides: Literal["captions", "questions", "statements"] = key(
        "what the samples carry: the tasks it serves"
    )
    sources: Annotated[dict[str, SourceSchema], NonEmpty()] = key("the training stream's datasets by name")
    tokenizer: Text = key("a tokenizer directory or a Hugging Face tokenizer name")
    max_text_len: PositiveInt = key("word pieces per text, [CLS] and [SEP] included")
    image_shorter: PositiveInt = key("the shards' image size: shorter side (MinMaxResize)")
    image_longer: PositiveInt = key("the shards' image size: cap on the longer side")
    num_workers: Count = key("data-loading worker processes per training process", may_change=True)
    shuffle_buffer: PositiveInt = key("samples in the streaming shuffle buffer")
    resampled: bool = key("resample shards (needed to mix weighted sources) instead of exact epochs")
    text_padding: Literal[TEXT_PADDING] = key(
        "longest: pad to the batch's longest text; max_length: to max_text_len; bucket: to a bucket",
        "longest",
    )
    decode: Literal[DECODE] = key(
        "where the loader's JPEGs are decoded: cpu (the workers) or gpu (nvJPEG on the device; "
        "the CPU, with a warning, without CUDA)",
        "cpu",
        may_change=True,
    )
    image_buckets: bool = key(
        "batch items of one image shape together: no image padding, a few batch shapes",
        False,
    )
    canvas_step: PositiveInt = key(
        "pad each batch's images to a canvas whose sides in patches are multiples of this "
        "(1: the batch's largest image); with image_buckets the canvas is the bucket",
        1,
    )
    caption_sampling: Literal[tuple(CAPTION_SAMPLING)] = key(
        "per_image: an image, then one caption; per_caption: every caption an item", PER_IMAGE
    )
    val_urls: Urls | None = key("the validation split", None)
    test_urls: Urls | None = key("the test split", None)
    root: Text | None = key("the dataset's directory", None)
    roots: dict[str, Text] = key("a mix (4m, 14m): each source's directory", factory=dict)
    answers: Text | None = key("VQA: the answers.json the labels index", None)
    generate_n: Count | None = key("the shapes world's training scenes, written on first use", None)
    world_seed: int = key("the shapes world's seed", 0)


# ------------------------------------------------------------------------------------ the rest
@dataclass(frozen=True)
class RandAugmentSchema:
    n: PositiveInt = key("RandAugment operations per image", 2)
    m: Annotated[int, Bound(">=", 0), Bound("<=", MAX_MAGNITUDE)] = key(
        f"RandAugment magnitude (0-{MAX_MAGNITUDE}, the official scale)", 9
    )


@dataclass(frozen=True)
class MixGenSchema:
    """MixGen (vilt_lab.data.mixgen): off unless `share` > 0; every preset has the node."""

    share: UnitInterval = key(
        "the share of each pre-training micro batch mixed: round(share x micro batch) pairs, capped at half "
        "(0: off; pre-training only: other tasks train unmixed and warn)",
        0.0,
    )
    lam: UnitInterval = key("MixGen's lambda: a mixed image's weight on its own pixels", 0.5)


@dataclass(frozen=True)
class AugmentSchema:
    name: Text = key("the augment preset: pixelbert or randaugment")
    shorter: PositiveInt = key("MinMaxResize: the shorter side in pixels")
    longer: PositiveInt = key("MinMaxResize: the cap on the longer side in pixels")
    randaugment: RandAugmentSchema | None = key("RandAugment before the resize (null: none)", None)
    mixgen: MixGenSchema = key("MixGen: image-text pairs mixed in the batch", factory=MixGenSchema)


@dataclass(frozen=True)
class ScheduleSchema:
    """Exactly one of max_steps and max_epochs (a rule across keys: config.validation)."""

    max_steps: PositiveInt | None = key("optimizer steps to train (or max_epochs)")
    max_epochs: Positive | None = key("epochs of the training data to train (or max_steps)")
    warmup: Annotated[
        NonNegative, Allowed("a fraction in [0, 1) of the steps, or a whole number of steps")
    ] = key("linear warmup: a fraction of the steps, or a number of steps")


@dataclass(frozen=True)
class OptimSchema:
    lr: Positive = key("AdamW's peak learning rate")
    weight_decay: NonNegative = key("AdamW's weight decay (not on biases and norms)")
    betas: tuple[Beta, Beta] = key("AdamW's moment decays")
    eps: Positive = key("AdamW's epsilon")
    lr_mult: dict[str, NonNegative] = key("parameter-name prefix -> learning-rate multiplier", factory=dict)
    grad_clip: Positive | None = key("clip the gradient norm to this (null: no clipping)", None)


@dataclass(frozen=True)
class TrainerSchema:
    global_batch_size: PositiveInt = key("samples per optimizer step, over every process")
    micro_batch_size: PositiveInt = key(
        "samples per forward pass of one process (accumulation makes up the rest)", may_change=True
    )
    precision: Literal["bf16", "fp16", "no"] | None = key("mixed precision (null: the launcher's)")
    compile: bool = key(
        "torch.compile the backbone: each transformer block and the visual embedding", False, may_change=True
    )
    grad_checkpointing: bool = key("recompute each block in the backward pass", False, may_change=True)
    compile_dynamic: bool = key(
        "shape-generic compiled kernels (false: one graph per shape)", True, may_change=True
    )
    compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = key("torch.compile's mode (null: its default)", None, may_change=True)
    fuse_passes: bool = key("run the ITM and MLM passes as one backbone pass", False, may_change=True)
    log_every: PositiveInt = key("optimizer steps between training-metric logs", 10, may_change=True)
    ckpt_every: PositiveInt = key("optimizer steps between checkpoints", 1000, may_change=True)
    keep_last: PositiveInt = key("checkpoints kept besides the best", 3, may_change=True)
    eval_batches: PositiveInt | None = key(
        "pre-training evaluation: batches per split (null: the whole split)", None, may_change=True
    )
    eval_every: PositiveInt | None = key(
        "optimizer steps between evaluations (null: at the end only)", None, may_change=True
    )
    evals_per_epoch: PositiveInt | None = key(
        "with schedule.max_epochs: evaluations per epoch instead of eval_every", None, may_change=True
    )
    progress: bool = key(
        "show progress (a live bar on a terminal, else periodic lines; train.log gets the lines either way)",
        True,
        may_change=True,
    )
    collective_timeout_min: Positive = key(
        "minutes a collective waits for the other processes before the run stops, naming the cause",
        30.0,
        may_change=True,
    )
    progress_every_s: Positive = key(
        "seconds between progress lines (on stdout when it is a file, in train.log always)",
        30.0,
        may_change=True,
    )
    nonfinite: Literal["stop", "skip"] = key(
        "a non-finite loss or gradient: stop the run, or skip the step", "stop", may_change=True
    )
    max_skipped_steps: Count = key("with nonfinite=skip: steps that may be skipped", 10, may_change=True)
    deterministic: bool = key("deterministic algorithms (bit-exact resume)", False, may_change=True)
    watchdog_minutes: Positive | None = key(
        "minutes without an optimizer step before a process writes its threads' stacks to the run "
        "dir and ends the run (null: never; evaluations do not count)",
        30.0,
        may_change=True,
    )
    fp8: bool = key("float8 linears in the transformer (torchao; changes the numerics)", False)
    float32_matmul_precision: Literal["highest", "high", "medium"] = key(
        "fp32 matrix products on CUDA (torch.set_float32_matmul_precision): highest keeps fp32, high "
        "allows TF32 (Ampere and later; changes the numerics), medium bf16; matters where "
        "trainer.precision is no and for what autocast leaves in fp32",
        "highest",
    )


@dataclass(frozen=True)
class LoggerSchema:
    # wandb.init's modes (the config documents the first three; the others are W&B's aliases).
    mode: Literal["online", "offline", "disabled", "shared", "dryrun", "run"] = key("W&B's mode")
    project: Text = key("the W&B project")
    entity: str | None = key("the W&B entity (null: the default)", None)
    group: str | None = key("the W&B group (null: <tag>/<sweep> in a sweep, else the tag)", None)
    job_type: str | None = key("the W&B job type (null: the task's name)", None)
    tags: list[str] = key("W&B tags besides the task and objective ones", factory=list)


@dataclass(frozen=True)
class LauncherSchema:
    name: Literal["local", "slurm"] = key("local (python -m, torchrun, accelerate launch) or slurm")


@dataclass(frozen=True)
class PathsSchema:
    root_dir: Text = key("the directory relative paths start from")
    data_dir: Text = key("where datasets and the shapes world live")
    runs_dir: Text = key("where run directories are made")


Seed = Annotated[int, Bound(">=", 0), Bound("<", 2**32)]  # NumPy's seeds are 32-bit


@dataclass(frozen=True)
class TrainSchema:
    """conf/train.yaml composed: `python -m vilt_lab.train ...`."""

    tag: Text = key("the run name's prefix when name is null")
    seed: Seed = key("the seed of every random draw")
    model: ModelSchema = key("the model size and where its weights start")
    objective: ObjectivesSchema = key("the pre-training objectives")
    task: AnyTask = key("the training stage")
    data: DataSchema = key("the dataset")
    augment: AugmentSchema = key("image transforms")
    schedule: ScheduleSchema = key("training length and warmup")
    optim: OptimSchema = key("the optimizer")
    trainer: TrainerSchema = key("the loop's settings")
    logger: LoggerSchema = key("W&B", may_change=True)
    launcher: LauncherSchema = key("how processes are started", may_change=True)
    paths: PathsSchema = key("where data and runs live", may_change=True)
    name: Text | None = key(
        "the run's name, its dir under paths.runs_dir (null: named after the command line)",
        None,
        may_change=True,
    )
    sweep: Text | None = key(
        "set by `vilt-train -m`: the sweep's name (name=, else the swept keys)", None, may_change=True
    )
    resume: Text | None = key(
        "auto, latest, null, a run dir or a checkpoint directory", "auto", may_change=True
    )
    evaluate: bool = key("evaluate on held-out data during and after training", True, may_change=True)


@dataclass(frozen=True)
class EvalSchema:
    """conf/eval.yaml composed: `vilt-eval checkpoint=... task=... data=... split=...`."""

    checkpoint: Text = key(
        "a vilt_lab checkpoint dir, a run's checkpoints/step_N or run dir, or an official .ckpt"
    )
    seed: Seed = key("the seed of every random draw")
    objective: ObjectivesSchema = key("task=pretrain: the objectives whose held-out means are reported")
    task: AnyTask = key("the task evaluated")
    data: DataSchema = key("the dataset")
    augment: AugmentSchema = key("image transforms")
    trainer: TrainerSchema = key("batch size and precision of the evaluation")
    paths: PathsSchema = key("where data and runs live")
    split: Literal["val", "test"] = key("the split evaluated", "val")
    out_dir: Text | None = key(
        "where the results go (null: <runs_dir>/eval/<task>-<split>-<checkpoint>)", None
    )
    submission: bool | None = key("write the VQA submission file (null: for split=test only)", None)
    save_scores: bool = key("retrieval: also write the score matrix to scores.pt", False)


# What code reads: the typed objects of a training or an evaluation config (vilt_lab.config.typed).
RunConfig = TrainSchema | EvalSchema
