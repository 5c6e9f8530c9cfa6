"""The shapes world: procedural scenes and grounded text, needing no download.

A scene is 1-4 objects (4 shapes x 9 colours x 2 sizes, each (colour, shape) at most once) on a
light background, in an image of 64-160 px sides and one of several aspect ratios, so variable
resolution and padding are exercised. All text comes from templates and is grounded: every
colour, shape, size, count and relation word can be read off the image, and template words are
fixed by the words around them, so MLM accuracy is not capped by coin flips (randomly chosen
synonyms would cap it). Relations are only stated along a clearly dominant axis, so "left of"
versus "above" is never a coin flip either.

``write_shapes_world(out, n_train)`` writes, through :class:`vilt_lab.data.shards.ShardWriter`::

    OUT/pretrain/{train,val}/    one image, 5 captions                ("captions")
    OUT/retrieval/{train,val,test}/  one image, 5 captions            ("captions"); test: 100 scenes
    OUT/vqa/{train,val}/         one image, 4 questions; OUT/vqa/answers.json  ("questions")
    OUT/nlvr2/{train,val}/       two images, one true + one false statement    ("statements")
    OUT/tokenizer/               WordPiece vocabulary trained on the train text

Every sample's json also carries its ``"scene"`` (``"scenes"`` for NLVR2): size, background and
objects with shape, colour, size, centre and radius in pixels. Each (task, split) draws from its
own seed, so splits are disjoint draws and the output is a function of ``seed`` alone.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vilt_lab.data.shards import ShardWriter
from vilt_lab.data.tokenizer import train_wordpiece

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 160, 50),
    "blue": (35, 75, 220),
    "yellow": (240, 215, 30),
    "purple": (135, 55, 185),
    "orange": (250, 135, 20),
    "turquoise": (35, 200, 195),
    "pink": (250, 140, 200),
    "brown": (130, 80, 35),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.16, "large": 0.26}  # radius as a fraction of the image's shorter side
BACKGROUNDS = ((250, 250, 250), (236, 236, 236), (245, 240, 228), (228, 236, 244))
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 2.0)
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
ANSWERS = ("yes", "no", *NUMBERS[:5], *COLOURS, *SHAPES, *SIZES)  # the fixed VQA answer set
MAX_OBJECTS = 4
# Relative frequency of scenes with 1, 2, 3, 4 objects (large objects that find no room are
# dropped, so 4-object scenes end up rarer still). Fewer objects, more colours and larger objects
# make in-batch ITM negatives easier to tell apart: a random other image is less likely to hold
# the colours a caption names. Measured with the tiny model trained on ITM alone: 0.71 / 0.76
# accuracy after 750 / 1500 steps, against 0.63 / 0.68 with 7 colours, uniform counts and radii
# 0.12 / 0.21.
OBJECT_COUNT_WEIGHTS = (4, 3, 2, 1)
CAPTIONS_PER_IMAGE = 5
QUESTIONS_PER_IMAGE = 4
# Small on purpose, so that about one caption word in eight ("three", "right", "smaller",
# "leftmost") splits into several pieces and whole-word masking differs from token masking.
VOCAB_SIZE = 130
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Obj:
    """One drawn object; (x, y) is its centre and r its circumscribed radius, in pixels."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    r: float


@dataclass(frozen=True)
class Scene:
    """An image to draw: its size, background and objects (sorted left to right)."""

    width: int
    height: int
    background: tuple[int, int, int]
    objects: tuple[Obj, ...]

    def to_json(self) -> dict[str, Any]:
        """The scene as plain JSON types (stored with every sample)."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Scene:
        """The scene a sample's ``"scene"`` describes (the inverse of :meth:`to_json`)."""
        objects = tuple(Obj(**obj) for obj in values["objects"])
        return cls(values["width"], values["height"], tuple(values["background"]), objects)


# ----------------------------------------------------------------------------------------------
# Scenes and images


def sample_scene(rng: random.Random) -> Scene:
    """A random scene; objects that find no free place after a few tries are left out."""
    aspect = rng.choice(ASPECTS)
    shorter = rng.randint(64, min(128, int(160 / aspect)))
    longer = round(shorter * aspect)
    width, height = (longer, shorter) if rng.random() < 0.5 else (shorter, longer)
    count = rng.choices(range(1, MAX_OBJECTS + 1), OBJECT_COUNT_WEIGHTS)[0]
    kinds = rng.sample([(c, s) for c in COLOURS for s in SHAPES], count)
    placed: list[Obj] = []
    for colour, shape in kinds:
        size = rng.choice(tuple(SIZES))
        r = SIZES[size] * shorter
        for _ in range(30):
            x, y = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
            if all((x - o.x) ** 2 + (y - o.y) ** 2 >= (r + o.r + 3) ** 2 for o in placed):
                placed.append(Obj(shape, colour, size, round(x, 1), round(y, 1), round(r, 1)))
                break
    return Scene(width, height, rng.choice(BACKGROUNDS), tuple(sorted(placed, key=lambda o: o.x)))


def _outline(obj: Obj) -> list[tuple[float, float]]:
    x, y, r = obj.x, obj.y, obj.r
    if obj.shape == "square":
        h = r * 0.75
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if obj.shape == "triangle":
        return [(x, y - r), (x + 0.87 * r, y + 0.5 * r), (x - 0.87 * r, y + 0.5 * r)]
    return [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]  # diamond


def render(scene: Scene) -> bytes:
    """The scene drawn with PIL, as JPEG bytes."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        if obj.shape == "circle":
            draw.ellipse(
                (obj.x - obj.r, obj.y - obj.r, obj.x + obj.r, obj.y + obj.r), fill=COLOURS[obj.colour]
            )
        else:
            draw.polygon(_outline(obj), fill=COLOURS[obj.colour])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Words


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def noun_phrase(obj: Obj, *, size: bool = True) -> str:
    """'a small red circle', or 'an orange square' without the size."""
    return _a(f"{obj.size} {obj.colour} {obj.shape}" if size else f"{obj.colour} {obj.shape}")


def the(obj: Obj) -> str:
    """'the red circle': unique, since a scene holds each (colour, shape) at most once."""
    return f"the {obj.colour} {obj.shape}"


def count_phrase(n: int, noun: str = "shape") -> str:
    """'one shape', 'three shapes'."""
    return f"{NUMBERS[n]} {noun}{'' if n == 1 else 's'}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def relation(a: Obj, b: Obj) -> str | None:
    """Where ``a`` is relative to ``b`` along a clearly dominant axis, else None (ambiguous)."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= 1.5 * abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    if abs(dy) >= 1.5 * abs(dx):
        return "above" if dy > 0 else "below"
    return None


OPPOSITE = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}


def _related_pairs(scene: Scene) -> list[tuple[Obj, Obj, str]]:
    objs = scene.objects
    return [(a, b, rel) for a in objs for b in objs if a is not b and (rel := relation(a, b))]


def _extreme(scene: Scene, rng: random.Random) -> str | None:
    """'the leftmost shape is a small red circle' when one object clearly leads on that side."""
    side, key = rng.choice(
        (("leftmost", lambda o: o.x), ("rightmost", lambda o: -o.x), ("top", lambda o: o.y))
    )
    if len(scene.objects) < 2:
        return None
    first, second = sorted(scene.objects, key=key)[:2]
    if key(second) - key(first) < first.r:
        return None
    return f"the {side} shape is {noun_phrase(first)}"


# Caption templates: each takes (scene, rng) and returns a caption, or None when it does not apply.
Template = Callable[[Scene, random.Random], str | None]


def _cap_listing(scene: Scene, rng: random.Random) -> str | None:
    objs = scene.objects
    return f"{count_phrase(len(objs))}: {_join([noun_phrase(o) for o in objs])}"


def _cap_there_is(scene: Scene, rng: random.Random) -> str | None:
    return f"there is {noun_phrase(rng.choice(scene.objects))}"


def _cap_count(scene: Scene, rng: random.Random) -> str | None:
    if len(scene.objects) == 1:
        return f"a single {scene.objects[0].colour} {scene.objects[0].shape} on its own"
    return (
        f"{count_phrase(len(scene.objects))} including {noun_phrase(rng.choice(scene.objects), size=False)}"
    )


def _cap_relation(scene: Scene, rng: random.Random) -> str | None:
    pairs = _related_pairs(scene)
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    return f"{the(a)} is {rel} {the(b)}"


def _cap_bigger(scene: Scene, rng: random.Random) -> str | None:
    pairs = [(a, b) for a in scene.objects for b in scene.objects if a.size == "large" and b.size == "small"]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return f"{the(a)} is larger than {the(b)}" if rng.random() < 0.5 else f"{the(b)} is smaller than {the(a)}"


def _cap_colour_groups(scene: Scene, rng: random.Random) -> str | None:
    colours = list(dict.fromkeys(o.colour for o in scene.objects))  # left to right, unique
    counts = [sum(o.colour == c for o in scene.objects) for c in colours]
    return _join(
        [f"{NUMBERS[n]} {c} shape{'' if n == 1 else 's'}" for c, n in zip(colours, counts, strict=True)]
    )


def _cap_extreme(scene: Scene, rng: random.Random) -> str | None:
    return _extreme(scene, rng)


CAPTION_TEMPLATES: tuple[Template, ...] = (
    _cap_listing,
    _cap_there_is,
    _cap_count,
    _cap_relation,
    _cap_bigger,
    _cap_colour_groups,
    _cap_extreme,
)


def captions(scene: Scene, rng: random.Random, k: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """Up to ``k`` distinct captions, each from a different template while templates last."""
    out: list[str] = []
    for _ in range(8 * k):
        for template in rng.sample(CAPTION_TEMPLATES, len(CAPTION_TEMPLATES)):
            text = template(scene, rng)
            if text is not None and text not in out:
                out.append(text)
            if len(out) == k:
                return out
    return out


# ----------------------------------------------------------------------------------------------
# VQA


def _absent_kind(scene: Scene, rng: random.Random) -> tuple[str, str]:
    present = {(o.colour, o.shape) for o in scene.objects}
    return rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])


def _q_count(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    return "how many shapes are there?", NUMBERS[len(scene.objects)]


def _q_count_colour(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    colour = rng.choice(scene.objects).colour if rng.random() < 0.5 else rng.choice(tuple(COLOURS))
    return f"how many {colour} shapes are there?", NUMBERS[sum(o.colour == colour for o in scene.objects)]


def _distinct_by(scene: Scene, attribute: str) -> list[Obj]:
    """The objects whose `attribute` (shape or colour) no other object in the scene shares."""
    values = [getattr(o, attribute) for o in scene.objects]
    return [o for o, v in zip(scene.objects, values, strict=True) if values.count(v) == 1]


def _q_colour(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    unique = _distinct_by(scene, "shape")
    if not unique:
        return None
    obj = rng.choice(unique)
    return f"what colour is the {obj.shape}?", obj.colour


def _q_shape(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    unique = _distinct_by(scene, "colour")
    if not unique:
        return None
    obj = rng.choice(unique)
    return f"what shape is the {obj.colour} object?", obj.shape


def _q_exists(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        return f"is there {noun_phrase(obj, size=False)}?", "yes"
    colour, shape = _absent_kind(scene, rng)
    return f"is there {_a(f'{colour} {shape}')}?", "no"


def _q_relation(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    pairs = _related_pairs(scene)
    if not pairs:
        return None
    a, b, rel = rng.choice(pairs)
    truth = rng.random() < 0.5
    return f"is {the(a)} {rel if truth else OPPOSITE[rel]} {the(b)}?", "yes" if truth else "no"


def _q_size(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    obj = rng.choice(scene.objects)
    return f"what size is {the(obj)}?", obj.size


QUESTION_TEMPLATES = (_q_count, _q_count_colour, _q_colour, _q_shape, _q_exists, _q_relation, _q_size)


def answer_type(answer: str) -> str:
    """VQAv2's answer type of a shapes answer, so that accuracy is split as on VQAv2."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer in NUMBERS else "other"


def questions(
    scene: Scene, rng: random.Random, key: str, k: int = QUESTIONS_PER_IMAGE
) -> list[dict[str, Any]]:
    """``k`` questions from different templates, in the shard schema's VQA form; the one true
    answer stands for ten agreeing annotators, as many as VQAv2 has, so that the official
    accuracy's leave-one-out rule applies unchanged."""
    out: list[dict[str, Any]] = []
    for template in rng.sample(QUESTION_TEMPLATES, len(QUESTION_TEMPLATES)):
        qa = template(scene, rng)
        if qa is None:
            continue
        text, answer = qa
        out.append(
            {
                # Numeric, as VQAv2's question ids (the evaluation server's submission wants ints):
                # the scene's index times 10 plus the question's, unique within a split.
                "id": str(int(key.lstrip("abcdefghijklmnopqrstuvwxyz")) * 10 + len(out)),
                "text": text,
                "answers": [answer],
                "labels": [ANSWERS.index(answer)],
                "scores": [1.0],
                "annotator_answers": [answer] * 10,
                "answer_type": answer_type(answer),
            }
        )
        if len(out) == k:
            break
    return out


# ----------------------------------------------------------------------------------------------
# NLVR2


def _has(scene: Scene, colour: str, shape: str) -> bool:
    return any(o.colour == colour and o.shape == shape for o in scene.objects)


def _candidate_statements(left: Scene, right: Scene, rng: random.Random) -> Iterator[tuple[str, bool]]:
    """Statements about the pair with their truth, several per template."""
    n_left, n_right = len(left.objects), len(right.objects)
    yield "the left image has more shapes than the right image", n_left > n_right
    yield "the right image has more shapes than the left image", n_right > n_left
    yield "both images have the same number of shapes", n_left == n_right
    total = rng.randint(2, 2 * MAX_OBJECTS) if rng.random() < 0.5 else n_left + n_right
    yield f"there are {count_phrase(total)} in total", total == n_left + n_right
    for side, scene in (("left", left), ("right", right)):
        n = rng.randint(1, MAX_OBJECTS)
        yield f"the {side} image contains exactly {count_phrase(n)}", n == len(scene.objects)
        kinds = [(o.colour, o.shape) for o in left.objects + right.objects] + [_absent_kind(scene, rng)]
        for colour, shape in kinds:
            yield f"there is {_a(f'{colour} {shape}')} in the {side} image", _has(scene, colour, shape)
    for o in left.objects + right.objects:
        yield (
            f"both images contain {_a(f'{o.colour} {o.shape}')}",
            _has(left, o.colour, o.shape) and _has(right, o.colour, o.shape),
        )
        in_left = any(p.colour == o.colour for p in left.objects)
        in_right = any(p.colour == o.colour for p in right.objects)
        yield f"only one image contains {_a(o.colour)} shape", in_left != in_right


def statements(left: Scene, right: Scene, rng: random.Random, key: str) -> list[dict[str, Any]]:
    """One true and one false statement about the pair (so labels are exactly balanced)."""
    candidates = list(dict(_candidate_statements(left, right, rng)).items())
    true = rng.choice([text for text, label in candidates if label])
    false = rng.choice([text for text, label in candidates if not label])
    pair = [(true, True), (false, False)]
    rng.shuffle(pair)
    return [{"id": f"{key}-{i}", "text": text, "label": label} for i, (text, label) in enumerate(pair)]


# ----------------------------------------------------------------------------------------------
# Writing


def _samples(
    task: str, rng: random.Random, n: int, split: str
) -> Iterator[tuple[str, list[bytes], dict[str, Any]]]:
    """``n`` samples ``(key, images, meta)`` of one task in the shard schema."""
    for index in range(n):
        key = f"{split}{index:07d}"
        if task == "nlvr2":
            left, right = sample_scene(rng), sample_scene(rng)
            meta = {
                "id": key,
                "statements": statements(left, right, rng, key),
                "scenes": [left.to_json(), right.to_json()],
            }
            yield key, [render(left), render(right)], meta
            continue
        scene = sample_scene(rng)
        if task == "vqa":
            text: dict[str, Any] = {"questions": questions(scene, rng, key)}
        else:
            text = {"captions": captions(scene, rng)}
            # The retrieval test holds 5 captions per image, as COCO and Flickr30K do: scenes with
            # fewer distinct true captions (one lone object) are drawn again.
            while split == "test" and len(text["captions"]) < CAPTIONS_PER_IMAGE:
                scene = sample_scene(rng)
                text = {"captions": captions(scene, rng)}
        yield key, [render(scene)], {"id": key, **text, "scene": scene.to_json()}


def texts_of(meta: dict[str, Any]) -> list[str]:
    """Every piece of text in a sample's metadata (the tokenizer's training corpus)."""
    return (
        meta.get("captions", [])
        + [q["text"] for q in meta.get("questions", [])]
        + [s["text"] for s in meta.get("statements", [])]
    )


TASKS = ("pretrain", "retrieval", "vqa", "nlvr2")
# Exact retrieval scores every test image against every test caption: 100 scenes x 5 captions is
# 50K pairs, small enough to evaluate in seconds on a CPU, as large as the paper's F30K test is
# relative to its 1K images (task=irtr with data=shapes_retrieval evaluates it).
RETRIEVAL_TEST_SCENES = 100


def write_shapes_world(
    out_dir: str | Path,
    n_train: int,
    n_val: int | None = None,
    *,
    seed: int = 0,
    maxcount: int = 100,
    maxsize: float = 1e9,
    overwrite: bool = False,
) -> dict[str, dict[str, int]]:
    """Write the whole shapes world (see the module docstring) and return sample counts.

    Args:
        out_dir: the root OUT.
        n_train: images (NLVR2: image pairs) per task in train; ``n_val`` defaults to a tenth.
        seed: the only source of randomness.
        maxcount, maxsize: caps per shard; the small count gives even a small world several
            shards per worker.
        overwrite: replace an earlier world in ``out_dir``.
    """
    out = Path(out_dir)
    n_val = max(1, n_train // 10) if n_val is None else n_val
    corpus: list[str] = list(ANSWERS)
    counts: dict[str, dict[str, int]] = {}
    for task in TASKS:
        splits = [("train", n_train), ("val", n_val)]
        if task == "retrieval":
            splits.append(("test", RETRIEVAL_TEST_SCENES))
        for split, n in splits:
            # A string seed is hashed with SHA-512 by random.Random: stable across runs and platforms.
            rng = random.Random(f"shapes/{seed}/{task}/{split}")
            extra = {"seed": seed, "world": "shapes", "task": task}
            with ShardWriter(
                out / task / split,
                source="shapes",
                split=split,
                maxcount=maxcount,
                maxsize=maxsize,
                overwrite=overwrite,
                extra=extra,
            ) as writer:
                for key, images, meta in _samples(task, rng, n, split):
                    writer.write(key, images, meta)
                    if split == "train":
                        corpus.extend(texts_of(meta))
            counts.setdefault(task, {})[split] = n
    (out / "vqa" / "answers.json").write_text(json.dumps(list(ANSWERS)) + "\n")
    train_wordpiece(corpus, out / "tokenizer", VOCAB_SIZE)
    return counts


# ----------------------------------------------------------------------------------------------
# Command line (``vilt-shards shapes --out DIR --n N``)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The shapes world's options for ``vilt-shards shapes``."""
    parser.add_argument("--n", type=int, default=2000, help="train images per task (val: a tenth)")
    parser.add_argument("--n-val", type=int, default=None, help="val images per task (default: n / 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maxsize", type=float, default=1e9, help="bytes per shard")
    parser.set_defaults(maxcount=100)


def convert(args: argparse.Namespace) -> None:
    """Run ``vilt-shards shapes`` with parsed arguments."""
    counts = write_shapes_world(
        args.out,
        args.n,
        args.n_val,
        seed=args.seed,
        maxcount=args.maxcount,
        maxsize=args.maxsize,
        overwrite=args.overwrite,
    )
    print(json.dumps({"out": str(args.out), "samples": counts}))
