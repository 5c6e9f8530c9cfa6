"""The shapes world: layout, variety, grounded text, balanced labels, vocabulary, determinism."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from helpers.worlds import SHAPES_TRAIN, SHAPES_VAL
from vilt_lab.data.cli import main as vilt_shards
from vilt_lab.data.shards import iter_samples, read_sizes
from vilt_lab.data.sources.shapes import (
    ANSWERS,
    COLOURS,
    NUMBERS,
    SHAPES,
    SIZES,
    TASKS,
    Obj,
    Scene,
    relation,
    write_shapes_world,
)
from vilt_lab.evaluation.shapes_ceiling import retrieval_ceiling, split_truth, top1_breakdown, true_captions

KIND = re.compile(rf"\b(?:({'|'.join(SIZES)}) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
RELATION = re.compile(r"the (\w+) (\w+) is (to the left of|to the right of|above|below) the (\w+) (\w+)$")


def _objects(meta: dict) -> list[Obj]:
    return [Obj(**o) for o in meta["scene"]["objects"]]


def test_layout_and_counts(shapes_world: Path) -> None:
    for task in TASKS:
        for split, n in (("train", SHAPES_TRAIN), ("val", SHAPES_VAL)):
            directory = shapes_world / task / split
            assert sum(read_sizes(directory).values()) == n
            manifest = json.loads((directory / "manifest.json").read_text())
            assert (manifest["source"], manifest["split"], manifest["task"]) == ("shapes", split, task)
            assert manifest["num_samples"] == n and manifest["num_skipped"] == 0
    assert json.loads((shapes_world / "vqa" / "answers.json").read_text()) == list(ANSWERS)


def test_scene_variety(shapes_world: Path) -> None:
    objects, counts, sizes = [], Counter(), set()
    for _, _, meta in iter_samples(shapes_world / "pretrain" / "train"):
        objs = _objects(meta)
        objects += objs
        counts[len(objs)] += 1
        sizes.add((meta["scene"]["width"], meta["scene"]["height"]))
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.colour for o in objects} == set(COLOURS) and len(COLOURS) >= 6
    assert {o.size for o in objects} == set(SIZES)
    assert set(counts) == {1, 2, 3, 4}
    assert all(64 <= min(s) and max(s) <= 160 for s in sizes)
    aspects = {round(max(w, h) / min(w, h), 1) for w, h in sizes}
    assert len(sizes) > 30 and len(aspects) >= 4
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_images_match_their_scene(shapes_world: Path) -> None:
    """The JPEG has the scene's size and each object's colour at its centre."""
    for _, images, meta in list(iter_samples(shapes_world / "retrieval" / "val"))[:10]:
        image = Image.open(io.BytesIO(images[0])).convert("RGB")
        assert image.size == (meta["scene"]["width"], meta["scene"]["height"])
        for obj in _objects(meta):
            pixel = image.getpixel((round(obj.x), round(obj.y)))
            assert max(abs(a - b) for a, b in zip(pixel, COLOURS[obj.colour], strict=True)) < 40


def test_captions_are_grounded_in_the_scene(shapes_world: Path) -> None:
    checked_relations = 0
    for task in ("pretrain", "retrieval"):
        for _, _, meta in iter_samples(shapes_world / task / "train"):
            objs = _objects(meta)
            kinds = {(o.colour, o.shape): o for o in objs}
            assert len(meta["captions"]) == 5 or len(objs) == 1
            assert len(set(meta["captions"])) == len(meta["captions"])
            for caption in meta["captions"]:
                for size, colour, shape in KIND.findall(caption):
                    assert (colour, shape) in kinds, caption
                    assert size in ("", kinds[colour, shape].size), caption
                if ": " in caption:  # "three shapes: a ..., a ... and a ..."
                    assert caption.split()[0] == NUMBERS[len(objs)], caption
                if match := RELATION.match(caption):
                    c1, s1, rel, c2, s2 = match.groups()
                    assert relation(kinds[c1, s1], kinds[c2, s2]) == rel, caption
                    checked_relations += 1
    assert checked_relations > 10


def test_vqa_answers_are_true_and_balanced(shapes_world: Path) -> None:
    answers = Counter()
    for _, images, meta in iter_samples(shapes_world / "vqa" / "train"):
        assert len(images) == 1
        objs = _objects(meta)
        for q in meta["questions"]:
            assert q["answers"][0] in ANSWERS and q["labels"] == [ANSWERS.index(q["answers"][0])]
            answers[q["answers"][0]] += 1
            if q["text"] == "how many shapes are there?":
                assert q["answers"] == [NUMBERS[len(objs)]]
            if match := re.fullmatch(r"is there an? (\w+) (\w+)\?", q["text"]):
                exists = any((o.colour, o.shape) == match.groups() for o in objs)
                assert q["answers"] == ["yes" if exists else "no"]
    assert 0.35 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.65
    assert len(answers) >= 15


def test_nlvr2_pairs_have_one_true_and_one_false_statement(shapes_world: Path) -> None:
    for _, images, meta in iter_samples(shapes_world / "nlvr2" / "val"):
        assert len(images) == 2 and len(meta["scenes"]) == 2
        assert sorted(s["label"] for s in meta["statements"]) == [False, True]


def test_vocabulary_loads_and_splits_words(shapes_world: Path, shapes_tokenizer) -> None:
    directory = shapes_world / "tokenizer"
    for loader in (AutoTokenizer, PreTrainedTokenizerFast):
        tok = loader.from_pretrained(directory)
        assert tok.is_fast
        assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    words = Counter(
        w
        for _, _, meta in iter_samples(shapes_world / "pretrain" / "train")
        for c in meta["captions"]
        for w in re.findall(r"\w+", c)
    )
    split = {w for w in words if len(shapes_tokenizer.tokenize(w)) > 1}
    assert "[UNK]" not in shapes_tokenizer.tokenize(" ".join(words))
    # Whole-word masking must matter: a good share of caption words are several pieces.
    assert 0.05 < sum(words[w] for w in split) / sum(words.values()) < 0.5
    assert len(shapes_tokenizer) < 400


def _digest(root: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return sha.hexdigest()


def test_deterministic_given_seed(tmp_path: Path) -> None:
    write_shapes_world(tmp_path / "a", 12, 3, seed=7)
    vilt_shards(["shapes", "--out", str(tmp_path / "b"), "--n", "12", "--n-val", "3", "--seed", "7"])
    write_shapes_world(tmp_path / "c", 12, 3, seed=8)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    train = [meta["scene"] for _, _, meta in iter_samples(tmp_path / "a" / "pretrain" / "train")]
    val = [meta["scene"] for _, _, meta in iter_samples(tmp_path / "a" / "pretrain" / "val")]
    assert not any(scene in train for scene in val)  # splits come from different seeds
    with pytest.raises(FileExistsError):
        write_shapes_world(tmp_path / "a", 12, 3, seed=7)


def test_top1_breakdown_sorts_picks_into_own_true_and_false(shapes_world, tmp_path) -> None:
    split = shapes_world / "retrieval" / "val"
    known = split_truth(split, draws=50)
    items, texts, truth = known
    text_image = torch.repeat_interleave(torch.tensor([len(captions) for captions, _, _ in items]))
    true = torch.tensor([[text in found for text in texts] for found in truth]).float()
    own = (text_image[None] == torch.arange(len(items))[:, None]).float()
    keys = [key for _, _, key in items]

    def breakdown(scores: torch.Tensor, name: str, image_keys=keys) -> dict[str, float]:
        record = {"scores": scores, "text_image": text_image, "image_keys": image_keys}
        torch.save(record, tmp_path / name)
        return top1_breakdown(split, tmp_path / name, known=known)

    # True pairs first, own pairs first among them: every pick is right, no true text loses.
    oracle = breakdown(true + 0.5 * own + 0.01 * torch.rand(own.shape), "oracle.pt")
    assert oracle["tr_top1_own"] == oracle["ir_top1_own"] == oracle["truth_order"] == 1.0
    assert oracle["tr_top1_false"] == oracle["ir_top1_false"] == 0.0
    # True pairs first but another image's captions above the own ones: the ceiling's ties.
    other_first = breakdown(true - 0.5 * own + 0.01 * torch.rand(own.shape), "other.pt")
    assert other_first["tr_top1_false"] == 0.0 and other_first["tr_top1_true_other"] > 0.0
    # One image above all the others for every text: a single hub takes all of image retrieval.
    hub = breakdown(-true + 10.0 * (torch.arange(len(items)) == 3)[:, None], "hub.pt")
    assert hub["ir_top1_to_hubs"] == 1.0 and hub["truth_order"] == 0.0
    for result in (oracle, other_first, hub):
        for side in ("tr", "ir"):
            parts = [result[f"{side}_top1_{part}"] for part in ("own", "true_other", "false")]
            assert sum(parts) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not those of"):
        breakdown(true, "shuffled.pt", image_keys=keys[::-1])


def test_retrieval_ceiling_counts_captions_true_of_several_images(shapes_world) -> None:
    _, _, meta = next(iter_samples(shapes_world / "retrieval" / "val"))
    assert set(meta["captions"]) <= true_captions(Scene.from_json(meta["scene"]), draws=100)
    ceiling = retrieval_ceiling(shapes_world / "retrieval" / "val", draws=50)
    assert ceiling["images"] == 30 and 0 < ceiling["texts_true_of_several_images"] < 1
    # Some texts are true of several images, so neither direction can reach 1.
    assert 0 < ceiling["ir_r1_ceiling"] < 1 and 0 < ceiling["tr_r1_ceiling"] < 1
