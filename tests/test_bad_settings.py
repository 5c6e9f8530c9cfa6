"""Bad settings and bad data say what is wrong, before any work.

Each bad setting is refused by the one validation pass (vilt_lab.config.validation) with the key,
the bad value and what is allowed; every shipped config passes it. Bad data: the loader applies
the converter's image rules to shards it did not write, and counts the samples a truncated tar
lost, not its errors.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image, PngImagePlugin

from helpers.configs import TASK_OVERRIDES, compose_config, compose_eval_config, fast_config
from helpers.images import encode_image
from vilt_lab.config.paths import CONF_DIR
from vilt_lab.config.schema import TASK_SCHEMAS, EvalSchema, ModelSchema, ObjectivesSchema, TrainSchema
from vilt_lab.config.typed_check import check
from vilt_lab.config.validation import ConfigError, validate_eval_config, validate_train_config
from vilt_lab.data.pipeline import LoaderConfig, SkipCounter, build_eval_loader, shard_samples
from vilt_lab.data.shards import SIZES_FILE
from vilt_lab.data.sources.images import TOO_LARGE, TOO_SMALL, BadImage
from vilt_lab.data.tokenizer import load_tokenizer, missing_directory
from vilt_lab.data.transforms import MinMaxResize, decode_image
from vilt_lab.model.config import ViltConfig
from vilt_lab.tasks import TASKS
from vilt_lab.train import run

# Overrides of the demo's fast config -> what the refusal must say (a regex): the key, the bad
# value and what is allowed.
BAD_SETTINGS = {
    "micro batch -1": (
        ["trainer.micro_batch_size=-1"],
        r"trainer\.micro_batch_size=-1: expected an integer >= 1",
    ),
    "micro batch 0": (
        ["trainer.micro_batch_size=0"],
        r"trainer\.micro_batch_size=0: expected an integer >= 1",
    ),
    "micro batch abc": (
        ["trainer.micro_batch_size=abc"],
        r"trainer\.micro_batch_size='abc': expected an integer",
    ),
    "ckpt_every 0": (["trainer.ckpt_every=0"], r"trainer\.ckpt_every=0: expected an integer >= 1"),
    "keep_last 0": (["trainer.keep_last=0"], r"trainer\.keep_last=0: expected an integer >= 1"),
    "warmup abc": (["schedule.warmup=abc"], r"schedule\.warmup='abc': expected a fraction in \[0, 1\)"),
    "warmup 2.5 steps": (["schedule.warmup=2.5"], r"schedule\.warmup=2\.5: use a fraction < 1 or a whole"),
    "mistyped key": (
        ["+trainer.micro_bach_size=16"],
        r"trainer\.micro_bach_size=16: unknown key; did you mean trainer\.micro_batch_size\?",
    ),
    "mistyped model key": (
        ["+model.num_layer=3"],
        r"model\.num_layer=3: unknown key; did you mean model\.num_layers\?",
    ),
    "unknown objective": (
        ["+objective.captioning.weight=1"],
        r"objective\.captioning=\{'weight': 1\}: unknown key; objective has itm, mim, mlm, mpp, wpa",
    ),
    "run name nan": (["name=nan"], r"name=nan: expected a string .*quote it, e\.g\. 'name=\"nan\"'"),
    "run name 123": (["name=123"], r"name=123: expected a string .*quote it, e\.g\. 'name=\"123\"'"),
    "negative lr": (["optim.lr=-1e-4"], r"optim\.lr=-0\.0001: expected a number > 0"),
    "nan lr": (["optim.lr=nan"], r"optim\.lr=nan: expected a number > 0"),
    "precision fp32": (
        ["trainer.precision=fp32"],
        r"trainer\.precision='fp32': expected one of 'bf16', 'fp16', 'no' or null",
    ),
    "logger mode": (
        ["logger.mode=sometimes"],
        r"logger\.mode='sometimes': expected one of 'online', 'offline', 'disabled'",
    ),
    "objective weight abc": (
        ["objective.itm.weight=abc"],
        r"objective\.itm\.weight='abc': expected a number >= 0",
    ),
    "mlm probability 1.5": (
        ["objective.mlm.probability=1.5"],
        r"objective\.mlm\.probability=1\.5: expected a number > 0 and < 1",
    ),
    "mlm rule": (
        ["objective.mlm.rule=bert"],
        r"objective\.mlm\.rule='bert': expected one of 'per_word', 'official'",
    ),
    "nonfinite": (
        ["++trainer.nonfinite=ignore"],
        r"trainer\.nonfinite='ignore': expected one of 'stop', 'skip'",
    ),
    "max skipped -1": (
        ["++trainer.max_skipped_steps=-1"],
        r"trainer\.max_skipped_steps=-1: expected an integer >= 0",
    ),
    "deterministic": (
        ["++trainer.deterministic=maybe"],
        r"trainer\.deterministic='maybe': expected true or false",
    ),
    "augment longer < shorter": (
        ["augment.longer=64"],
        r"augment\.longer=64: expected >= augment\.shorter=96",
    ),
    "randaugment magnitude": (
        ["augment=randaugment", "augment.randaugment.m=31"],
        r"augment\.randaugment\.m=31: expected an integer >= 0 and <= 30",
    ),
    "heads do not divide": (
        ["+model.num_heads=5"],
        r"model\.hidden_size=64 is not divisible by model\.num_heads=5",
    ),
    "model size": (["model.size=huge"], r"model\.size='huge': expected one of 'tiny', 'small32', 'base32'"),
    "task name": (
        ["task.name=caption"],
        r"task\.name='caption': expected one of 'pretrain', 'vqa', 'nlvr2', 'irtr'",
    ),
    "irtr negatives 0": (
        [*TASK_OVERRIDES["irtr"], "task.negatives=0"],
        r"task\.negatives=0: expected an integer >= 1",
    ),
    "irtr image negatives below 0": (
        [*TASK_OVERRIDES["irtr"], "task.image_negatives=-1"],
        r"task\.image_negatives=-1: expected an integer >= 0",
    ),
    "text padding": (
        ["data.text_padding=left"],
        r"data\.text_padding='left': expected one of 'longest', 'max_length'",
    ),
    "itm negatives": (
        ["objective.itm.negatives=random"],
        r"objective\.itm\.negatives='random': expected one of 'same_source', 'batch'",
    ),
    "caption sampling": (
        ["data.caption_sampling=per_word"],
        r"data\.caption_sampling='per_word': expected one of 'per_image', 'per_caption'",
    ),
    "mix weight 0": (
        ["data.sources.shapes.weight=0"],
        r"data\.sources\.shapes\.weight=0: expected a number > 0 or null",
    ),
    "betas": (["optim.betas=[0.9]"], r"optim\.betas=\[0\.9\]: expected a list of 2"),
    "batch split": (
        ["trainer.global_batch_size=6"],
        r"trainer\.global_batch_size=6 is not a multiple of trainer\.micro_batch_size=4",
    ),
    "steps and epochs": (
        ["schedule.max_epochs=1"],
        r"set exactly one of schedule\.max_steps \(4\) and schedule\.max_epochs \(1\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_a_bad_setting_is_refused_naming_key_value_and_allowed(case, shapes_world, tmp_path) -> None:
    overrides, message = BAD_SETTINGS[case]
    cfg = fast_config(shapes_world, tmp_path, *overrides)
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg, world_size=1)


def test_image_negatives_beyond_the_micro_batch_are_refused(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, *TASK_OVERRIDES["irtr"], "task.image_negatives=4")
    with pytest.raises(
        ValueError,
        match=r"task\.image_negatives=4 draws the other images of a micro batch, but "
        r"trainer\.micro_batch_size=4 holds only 3",
    ):
        validate_train_config(cfg, world_size=1)


def test_every_problem_of_a_stage_is_reported_at_once(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, "trainer.micro_batch_size=-1", "optim.lr=0", "+data.rooot=/x")
    with pytest.raises(ConfigError) as refused:
        validate_train_config(cfg, world_size=1)
    assert len(refused.value.problems) == 3
    assert "data.rooot='/x': unknown key; did you mean data.root?" in refused.value.problems


def test_run_refuses_before_any_work(shapes_world, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.micro_batch_size=-1"):
        run(fast_config(shapes_world, tmp_path, "trainer.micro_batch_size=-1"))
    assert not any(tmp_path.iterdir()), "no run dir, no file"


# ----------------------------------------------------------------------------------- bad data
def test_a_missing_data_root_says_it_does_not_exist(tmp_path) -> None:
    cfg = fast_config(tmp_path / "nowhere", tmp_path)
    with pytest.raises(ConfigError, match=rf"data\.root='{tmp_path}/nowhere': the directory does not exist"):
        validate_train_config(cfg, world_size=1)


def test_a_world_written_on_first_use_is_not_checked_before_it_exists(tmp_path) -> None:
    validate_train_config(fast_config(tmp_path / "new", tmp_path, "data.generate_n=100"), world_size=1)


def test_a_missing_tokenizer_directory_says_it_does_not_exist(shapes_world, tmp_path) -> None:
    missing = tmp_path / "tokenizer"
    cfg = fast_config(shapes_world, tmp_path, f"data.tokenizer={missing}")
    with pytest.raises(
        ConfigError, match=rf"data\.tokenizer='{missing}': tokenizer directory {missing} does not exist"
    ):
        validate_train_config(cfg, world_size=1)
    with pytest.raises(FileNotFoundError, match=rf"data\.tokenizer='{missing}': tokenizer directory"):
        load_tokenizer(missing, key="data.tokenizer")
    with pytest.raises(FileNotFoundError, match=r"tokenizer directory \./no/tokenizer does not exist"):
        load_tokenizer("./no/tokenizer")
    # Hub ids (namespace/name) are still names, not paths.
    assert (
        missing_directory("bert-base-uncased") is None
        and missing_directory("google-bert/bert-base-uncased") is None
    )


def test_a_missing_split_names_its_key(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, f"data.val_urls={shapes_world}/pretrain/vall")
    with pytest.raises(ConfigError, match=rf"data\.val_urls='{shapes_world}/pretrain/vall': does not exist"):
        validate_train_config(cfg, world_size=1)


def test_a_directory_without_sizes_json_is_not_a_split(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, f"data.sources.shapes.urls={shapes_world}/pretrain")
    with pytest.raises(
        ConfigError, match=rf"data\.sources\.shapes\.urls='{shapes_world}/pretrain': no sizes\.json"
    ):
        validate_train_config(cfg, world_size=1)


def _one_shard_split(write_raw_shard, shapes_world: Path) -> Path:
    samples = _good_samples(shapes_world, 4)
    return write_raw_shard("one_shard", samples)


def test_one_validation_shard_cannot_serve_two_ranks(write_raw_shard, shapes_world, tmp_path) -> None:
    val = _one_shard_split(write_raw_shard, shapes_world)
    overrides = [f"data.val_urls={val}", "trainer.micro_batch_size=2"]
    with pytest.raises(
        ConfigError, match=rf"data\.val_urls='{val}': 1 eval shards cannot be split over 2 ranks"
    ):
        validate_train_config(fast_config(shapes_world, tmp_path, *overrides), world_size=2)
    validate_train_config(fast_config(shapes_world, tmp_path, *overrides), world_size=1)
    # Retrieval deals images, not shards, to the ranks: one shard serves any number of them.
    irtr = [*TASK_OVERRIDES["irtr"], *overrides]
    validate_train_config(fast_config(shapes_world, tmp_path, *irtr), world_size=2)


def test_exact_epochs_need_a_shard_per_worker_of_each_rank(shapes_world, tmp_path) -> None:
    cfg = fast_config(shapes_world, tmp_path, "data.num_workers=2", "trainer.global_batch_size=12")
    with pytest.raises(
        ConfigError, match=r"data\.resampled=false .*5 shards cannot give each of 3 ranks x 2 workers"
    ):
        validate_train_config(cfg, world_size=3)


def test_eval_refuses_a_missing_checkpoint_and_bad_keys(shapes_world, tmp_path) -> None:
    base = [f"data.root={shapes_world}", "data.generate_n=0", f"paths.runs_dir={tmp_path}"]
    splits = {"data.val_urls": f"{shapes_world}/pretrain/val"}
    with pytest.raises(ConfigError, match=rf"checkpoint='{tmp_path}/none': does not exist"):
        validate_eval_config(
            compose_eval_config([*base, f"checkpoint={tmp_path}/none"]), splits, world_size=1
        )
    cfg = compose_eval_config([*base, f"checkpoint={tmp_path}", "+trainer.micro_bach_size=8"])
    with pytest.raises(ConfigError, match=r"trainer\.micro_bach_size=8: unknown key; did you mean"):
        validate_eval_config(cfg, splits, world_size=1)
    validate_eval_config(compose_eval_config([*base, f"checkpoint={tmp_path}"]), splits, world_size=1)


def _good_samples(shapes_world: Path, n: int) -> list[dict]:
    import webdataset as wds

    shard = sorted((shapes_world / "pretrain" / "train").glob("*.tar"))[0]
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))[:n]
    return [{k: v for k, v in s.items() if k in ("__key__", "jpg", "json")} for s in samples]


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """100 Mpx of one colour, a few kB as a PNG: over PIL's decompression-bomb limit."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_the_converter_refuses_are_refused_on_the_header(huge_png) -> None:
    resize = MinMaxResize(96, 160, 16)
    for tiny in (encode_image((1, 1)), encode_image((1, 1), fmt="PNG")):  # simplejpeg's path and PIL's
        with pytest.raises(BadImage, match=TOO_SMALL):
            decode_image(tiny, resize)
    with pytest.raises(BadImage, match=re.escape(TOO_LARGE)):
        decode_image(huge_png, resize)


def test_loader_skips_and_counts_a_tiny_image_and_never_decodes_a_huge_one(
    write_raw_shard, shapes_world, shapes_tokenizer, huge_png, monkeypatch, caplog
) -> None:
    caption = json.dumps({"captions": ["a red square"]})
    good = _good_samples(shapes_world, 6)
    bad = [
        {"__key__": "onepixel", "jpg": encode_image((1, 1)), "json": caption},
        {"__key__": "bomb", "png": huge_png, "json": caption},
    ]
    directory = write_raw_shard("converter_rules", [*good[:3], *bad, *good[3:]])
    decoded_sizes = []
    png_load = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(
        PngImagePlugin.PngImageFile, "load", lambda self: decoded_sizes.append(self.size) or png_load(self)
    )
    with caplog.at_level(logging.WARNING):
        batches = list(
            build_eval_loader(
                directory,
                shapes_tokenizer,
                LoaderConfig(batch_size=4, image_shorter=96, image_longer=160, patch_size=16),
            )
        )
    assert sum(len(b["input_ids"]) for b in batches) == len(good)
    assert sum(b["skipped"] for b in batches) == len(bad)
    assert (10_000, 10_000) not in decoded_sizes
    assert "onepixel" in caplog.text and "image too small" in caplog.text
    assert "bomb" in caplog.text and "decompression-bomb" in caplog.text


def _truncated_shard(write_raw_shard, shapes_world: Path, n: int) -> Path:
    """A split of ``n`` samples whose tar is cut inside its 6th sample; sizes.json still says n."""
    directory = write_raw_shard("truncated", _good_samples(shapes_world, n))
    tar = directory / "shard-000000.tar"
    with tarfile.open(tar) as members:
        cut = members.getmembers()[2 * 5 + 1].offset_data + 10  # inside sample 5's second member
    tar.write_bytes(tar.read_bytes()[:cut])
    return directory


def test_a_truncated_tar_counts_the_samples_it_lost(write_raw_shard, shapes_world, shapes_tokenizer) -> None:
    directory = _truncated_shard(write_raw_shard, shapes_world, 12)
    tar = str(directory / "shard-000000.tar")
    skips = SkipCounter()
    given = list(shard_samples([tar], skips, {tar: 12}))
    assert len(given) == 6 and skips.total == 6  # the sample at the cut comes without its json
    # Without a recorded count: one, the least it lost (not WebDataset's two exceptions).
    skips = SkipCounter()
    assert len(list(shard_samples([tar], skips, {}))) == 6 and skips.total == 1
    # The loader reads the counts from sizes.json: every sample is delivered or counted.
    config = LoaderConfig(batch_size=4, image_shorter=96, image_longer=160, patch_size=16)
    batches = list(build_eval_loader(directory, shapes_tokenizer, config))
    delivered, skipped = sum(len(b["input_ids"]) for b in batches), sum(b["skipped"] for b in batches)
    assert (delivered, skipped) == (5, 7)
    assert json.loads((directory / SIZES_FILE).read_text()) == {"shard-000000.tar": 12}


# ----------------------------------------------------------------------------------- every shipped config passes
GROUPS = (
    "model",
    "objective",
    "task",
    "data",
    "augment",
    "schedule",
    "optim",
    "trainer",
    "logger",
    "launcher",
)
OPTIONS = [
    f"{group}=[{p.stem}]" if group == "objective" else f"{group}={p.stem}"
    for group in GROUPS
    for p in sorted((CONF_DIR / group).glob("*.yaml"))
]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("override", [*OPTIONS, *(f"experiment={e}" for e in EXPERIMENTS)])
def test_every_config_option_and_experiment_fits_the_schema(override, tmp_path) -> None:
    cfg = compose_config([override, "model.init_from=/ckpt", f"paths.runs_dir={tmp_path}"])
    assert check(OmegaConf.to_container(cfg), TrainSchema) == []


@pytest.mark.parametrize("task", sorted(TASK_OVERRIDES))
def test_every_task_on_the_shapes_world_validates_fully(task, shapes_world, tmp_path) -> None:
    two_ranks = fast_config(shapes_world, tmp_path, *TASK_OVERRIDES[task], "trainer.micro_batch_size=2")
    validate_train_config(two_ranks, world_size=2)
    eval_overrides = [o for o in TASK_OVERRIDES[task] if not o.startswith("+model.")]  # from the checkpoint
    cfg = compose_eval_config([*eval_overrides, f"data.root={shapes_world}", "checkpoint=/ckpt"])
    assert check(OmegaConf.to_container(cfg), EvalSchema) == []


def test_the_schema_follows_the_code() -> None:
    assert {schema.__dataclass_fields__["name"].type.__args__[0] for schema in TASK_SCHEMAS} == set(TASKS)
    packages = {next(iter(OmegaConf.load(p))) for p in (CONF_DIR / "objective").glob("*.yaml")}
    assert packages == set(ObjectivesSchema.__dataclass_fields__)
    assert set(ViltConfig.__dataclass_fields__) < set(ModelSchema.__dataclass_fields__)
