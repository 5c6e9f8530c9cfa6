"""Acceptance 7: ``vilt-eval`` on converted random-weight official-layout checkpoints, one for the
task of each released ViLT checkpoint, on tiny real-format data (raw files -> ``vilt-shards`` ->
``vilt-eval``), writing its summary (and VQA's submission file)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from helpers.configs import compose_eval_config
from helpers.official import TEXT_LEN, VOCAB, random_official_state, write_lightning_ckpt
from helpers.raw_datasets import manifest, run_cli, write_karpathy, write_nlvr2, write_vqav2
from vilt_lab.convert_cli import main as vilt_convert
from vilt_lab.data.shards import iter_samples
from vilt_lab.data.sources.shapes import texts_of
from vilt_lab.data.tokenizer import load_tokenizer, train_wordpiece
from vilt_lab.eval import SUBMISSION_NAME, evaluate
from vilt_lab.evaluation.submission import read_vqa_submission
from vilt_lab.training.run_dir import RunDir

# The raw datasets: VQAv2 images per subset (train2014 only feeds the answer vocabulary), NLVR2
# test1 image pairs, Karpathy test images of COCO and Flickr30K.
VQA_IMAGES = {"train2014": 2, "val2014": 3, "test-dev2015": 2}
REST_VAL_IMAGES = 2
NLVR2_PAIRS = 3
KARPATHY_TEST_IMAGES = 4
KARPATHY = {"coco": "coco", "f30k": "flickr30k"}  # data config -> write_karpathy's dataset
# The released checkpoints as random official-layout states: file stem -> (variant, seed).
RELEASES = {
    "vilt_200k_mlm_itm": ("mlm_itm", 0),
    "vilt_vqa": ("vqa", 1),
    "vilt_nlvr2": ("nlvr2", 2),
    "vilt_irtr_coco": ("irtr", 3),
    "vilt_irtr_f30k": ("irtr", 4),
}
# Evaluated from their `vilt-convert official` output; the others from the .ckpt file itself.
CONVERTED = ("vilt_nlvr2", "vilt_irtr_coco")
# Small images (the states' 16 px patches, a 4 x 6 grid at most), texts as long as the states'
# position table, the whole split in the main process.
FAST = [
    "data.image_shorter=64",
    "data.image_longer=96",
    f"data.max_text_len={TEXT_LEN}",
    "data.num_workers=0",
    "trainer.progress=false",
    "trainer.micro_batch_size=4",
]
# (shards root with vqa/{rest_val,test-dev} and vqa/answers.json, what write_vqav2 wrote).
VQAv2 = tuple[Path, dict[str, Any]]
SUMMARY_KEYS = {"run_dir", "task", "checkpoint", "split", "eval_seconds", "eval"}
# Metrics that count what was evaluated (every other one is a rate in [0, 1] or the_metric).
COUNTS = {"questions", "statements", "images", "texts"}


def texts(root: Path) -> list[str]:
    """Every text of every split converted under ``root``."""
    return [
        text
        for split in sorted(root.glob("*/*/manifest.json"))
        for _, _, meta in iter_samples(split.parent)
        for text in texts_of(meta)
    ]


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory: pytest.TempPathFactory) -> VQAv2:
    """(shards root with vqa/{rest_val,test-dev} and vqa/answers.json, what write_vqav2 wrote)."""
    tmp = tmp_path_factory.mktemp("vqav2")
    raw = write_vqav2(tmp / "raw", VQA_IMAGES)
    for split in ("vqa/rest_val", "vqa/test-dev"):
        run_cli(
            "vqav2",
            tmp / "raw",
            tmp / "shards",
            "--split",
            split,
            "--min-answer-count",
            "1",
            "--rest-val-images",
            str(REST_VAL_IMAGES),
        )
    return tmp / "shards", raw


@pytest.fixture(scope="module")
def nlvr2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards root with nlvr2/test1."""
    tmp = tmp_path_factory.mktemp("nlvr2")
    write_nlvr2(tmp / "raw", {"test1": NLVR2_PAIRS})
    run_cli("nlvr2", tmp / "raw", tmp / "shards", "--split", "nlvr2/test1")
    return tmp / "shards"


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data config (coco, f30k) -> shards root with retrieval/test."""
    roots = {}
    for data, dataset in KARPATHY.items():
        tmp = tmp_path_factory.mktemp(data)
        write_karpathy(tmp / "raw", dataset, {"test": KARPATHY_TEST_IMAGES})
        run_cli(data, tmp / "raw", tmp / "shards", "--split", "retrieval/test")
        roots[data] = tmp / "shards"
    return roots


@pytest.fixture(scope="module")
def tokenizers(
    tmp_path_factory: pytest.TempPathFactory, vqav2: VQAv2, nlvr2: Path, karpathy: dict[str, Path]
) -> dict[int, Path]:
    """Vocabulary size -> a WordPiece tokenizer trained on every converted text: one with the
    states' vocabulary (VOCAB), one a few tokens short of it."""
    corpus = [text for root in (vqav2[0], nlvr2, *karpathy.values()) for text in texts(root)]
    out = {}
    for size in (VOCAB, VOCAB - 8):
        directory = tmp_path_factory.mktemp(f"tokenizer_{size}")
        train_wordpiece(corpus, directory, size)
        assert len(load_tokenizer(directory)) == size  # the corpus has merges enough to fill it
        out[size] = directory
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, vqav2: VQAv2) -> dict[str, Path]:
    """Release stem -> what vilt-eval is given: the Lightning .ckpt, or for CONVERTED its
    `vilt-convert official` output directory."""
    tmp = tmp_path_factory.mktemp("releases")
    num_answers = len(json.loads((vqav2[0] / "vqa" / "answers.json").read_text()))
    paths = {}
    for stem, (variant, seed) in RELEASES.items():
        state = random_official_state(variant, seed)
        if variant == "vqa":
            # The released head has a row per answer of the real answers.json (3,129); this one
            # has a row per answer of the tiny data's vocabulary, as a checkpoint made for it would.
            for key in ("vqa_classifier.3.weight", "vqa_classifier.3.bias"):
                state[key] = state[key][:num_answers].clone()
        ckpt = write_lightning_ckpt(tmp / f"{stem}.ckpt", state)
        if stem in CONVERTED:
            assert vilt_convert(["official", str(ckpt), "--out", str(tmp / stem)]) == 0
            paths[stem] = tmp / stem
        else:
            paths[stem] = ckpt
    return paths


def eval_config(
    checkpoint: Path, task: str, data: str, root: Path, split: str, tokenizer: Path, out: Path
) -> DictConfig:
    """The config of `vilt-eval checkpoint=... task=... data=... split=...` on the tiny data."""
    return compose_eval_config(
        [
            f"checkpoint={checkpoint}",
            f"task={task}",
            f"data={data}",
            f"data.root={root}",
            f"data.tokenizer={tokenizer}",
            f"split={split}",
            f"out_dir={out}",
            *FAST,
        ]
    )


def run_eval(
    checkpoint: Path, task: str, data: str, root: Path, split: str, tokenizer: Path, out: Path
) -> dict[str, Any]:
    """Evaluate, check what every evaluation writes, and return summary.json's content."""
    returned = evaluate(eval_config(checkpoint, task, data, root, split, tokenizer, out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary == returned
    assert SUMMARY_KEYS <= set(summary) <= SUMMARY_KEYS | {"submission"}
    assert (summary["task"], summary["split"], summary["checkpoint"]) == (task, split, str(checkpoint))
    assert summary["run_dir"] == str(out) and summary["eval_seconds"] > 0
    assert RunDir(out).config.is_file()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and summary["eval"].items() <= logged[0].items()
    prefix = f"eval/{task}/"
    assert summary["eval"] and all(key.startswith(prefix) for key in summary["eval"])
    for key, value in summary["eval"].items():
        name = key.removeprefix(prefix)
        if name in COUNTS:
            assert isinstance(value, int) and value > 0, key
        elif name != "the_metric":
            assert math.isfinite(value) and 0 <= value <= 1, (key, value)
    return summary


def test_vqa_rest_val(
    vqav2: VQAv2, tokenizers: dict[int, Path], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The VQA checkpoint, given as the .ckpt file, on rest_val: VQA score and accuracy."""
    root, _ = vqav2
    summary = run_eval(checkpoints["vilt_vqa"], "vqa", "vqav2", root, "val", tokenizers[VOCAB], tmp_path)
    metrics = summary["eval"]
    assert {"eval/vqa/score", "eval/vqa/accuracy"} <= set(metrics)  # rest_val has annotator answers
    assert metrics["eval/vqa/questions"] == manifest(root / "vqa" / "rest_val")["num_texts"]
    assert "submission" not in summary and not (tmp_path / SUBMISSION_NAME).exists()


def test_vqa_test_dev_submission(
    vqav2: VQAv2, tokenizers: dict[int, Path], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """On test-dev: every question of the split once in submission.json, answered from answers.json."""
    root, raw = vqav2
    summary = run_eval(checkpoints["vilt_vqa"], "vqa", "vqav2", root, "test", tokenizers[VOCAB], tmp_path)
    assert "eval/vqa/accuracy" not in summary["eval"]  # test-dev has no annotator answers
    questions = raw["test-dev2015"]
    assert summary["eval"]["eval/vqa/questions"] == len(questions)
    assert summary["submission"] == str(tmp_path / SUBMISSION_NAME)
    answers = read_vqa_submission(tmp_path / SUBMISSION_NAME)  # refuses a question listed twice
    assert sorted(answers) == sorted(questions)
    assert set(answers.values()) <= set(json.loads((root / "vqa" / "answers.json").read_text()))


def test_nlvr2_test1(
    nlvr2: Path,
    tokenizers: dict[int, Path],
    checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The NLVR2 checkpoint, converted by vilt-convert, on test-P: its 3 modality rows taken as they are."""
    summary = run_eval(
        checkpoints["vilt_nlvr2"], "nlvr2", "nlvr2", nlvr2, "test", tokenizers[VOCAB], tmp_path
    )
    assert summary["eval"]["eval/nlvr2/statements"] == manifest(nlvr2 / "nlvr2" / "test1")["num_texts"]
    report = capsys.readouterr().out
    assert " 0 adapted, 0 left new" in report  # no row copied: the model has the checkpoint's 3


@pytest.mark.parametrize(
    ("data", "release"),
    [("coco", "vilt_irtr_coco"), ("f30k", "vilt_irtr_f30k"), ("coco", "vilt_200k_mlm_itm")],
    ids=["coco", "f30k", "zero_shot_coco"],
)
def test_retrieval_test(
    data: str,
    release: str,
    karpathy: dict[str, Path],
    tokenizers: dict[int, Path],
    checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Karpathy test retrieval: the rank head of the irtr checkpoints, or (zero-shot, from the
    pre-trained checkpoint) one built from ITM's match row."""
    root = karpathy[data]
    summary = run_eval(checkpoints[release], "irtr", data, root, "test", tokenizers[VOCAB], tmp_path)
    metrics = summary["eval"]
    test = manifest(root / "retrieval" / "test")
    assert metrics["eval/irtr/images"] == test["num_samples"] == KARPATHY_TEST_IMAGES
    assert metrics["eval/irtr/texts"] == test["num_texts"]
    assert {f"eval/irtr/{way}_r{k}" for way in ("ir", "tr") for k in (1, 5, 10)} <= set(metrics)
    assert metrics["eval/irtr/the_metric"] == metrics["eval/irtr/ir_r1"] + metrics["eval/irtr/tr_r1"]
    adapted = "adapted heads.irtr" in capsys.readouterr().out
    assert adapted == (release == "vilt_200k_mlm_itm")


def test_checkpoint_without_the_task_head(
    vqav2: VQAv2, tokenizers: dict[int, Path], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The pre-trained checkpoint has no VQA head: an error naming it, never a random one."""
    cfg = eval_config(
        checkpoints["vilt_200k_mlm_itm"], "vqa", "vqav2", vqav2[0], "val", tokenizers[VOCAB], tmp_path
    )
    with pytest.raises(ValueError, match=r"heads\.vqa\.") as err:
        evaluate(cfg)
    assert "task=vqa" in str(err.value)
    assert not (tmp_path / "summary.json").exists()


def test_tokenizer_of_another_size(
    karpathy: dict[str, Path], tokenizers: dict[int, Path], checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """A tokenizer whose size is not the checkpoint's vocabulary: an error naming both sizes."""
    cfg = eval_config(
        checkpoints["vilt_irtr_f30k"],
        "irtr",
        "f30k",
        karpathy["f30k"],
        "test",
        tokenizers[VOCAB - 8],
        tmp_path,
    )
    with pytest.raises(ValueError, match=rf"vocabulary of {VOCAB} tokens.* has {VOCAB - 8}\b"):
        evaluate(cfg)
    assert not (tmp_path / "summary.json").exists()
