"""Tiny copies of the raw datasets in their real on-disk formats, drawn from the shapes world.

Each writer lays out ``root`` as the real download does (see raw-dataset-layouts.md and the
converters' docstrings) and returns what a correct conversion must contain, so tests compare
shards against what was written rather than against the converter's own reading. ``BAD_IMAGES``
holds the broken inputs every converter must survive; the helpers at the end run ``vilt-shards``
and read its output back.
"""

from __future__ import annotations

import io
import json
import random
import struct
import tarfile
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from vilt_lab.data.cli import main
from vilt_lab.data.shards import iter_samples
from vilt_lab.data.sources import images as img
from vilt_lab.data.sources.shapes import (
    ANSWERS,
    captions,
    questions,
    render,
    sample_scene,
    statements,
)

INVALID_UTF8 = b"a caption with \xff\xfe invalid bytes"
_PLACEHOLDER = "@@INVALID_UTF8@@"


def shapes_jpeg(rng: random.Random) -> tuple[bytes, list[str]]:
    """One shapes-world image (JPEG) and its five captions."""
    scene = sample_scene(rng)
    return render(scene), captions(scene, rng)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that *declares* ``width`` x ``height`` RGB pixels but holds no pixel data: enough for
    PIL's decompression-bomb check, which runs on the header at open time."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _bad_images() -> dict[str, tuple[bytes | None, str]]:
    rng = random.Random("bad images")
    jpeg, _ = shapes_jpeg(rng)
    base = Image.open(io.BytesIO(jpeg)).convert("RGB")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    return {
        # name: (file bytes, or None for no file; expected image action or skip reason)
        "missing": (None, img.MISSING),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], img.CORRUPT),
        "cmyk_jpeg": (_encode(base.convert("CMYK"), "JPEG"), "reencoded"),
        "grey_png": (_encode(base.convert("L"), "PNG"), "reencoded"),
        "alpha_png": (_encode(rgba, "PNG"), "reencoded"),
        "ten_pixel": (_encode(Image.new("RGB", (10, 10), (9, 99, 199)), "JPEG"), img.TOO_SMALL),
        "bomb_png": (png_header_only(20_000, 20_000), img.TOO_LARGE),
        "not_an_image": (b"<html>404 Not Found</html>", img.NOT_AN_IMAGE),
        "good_jpeg": (jpeg, "kept"),
    }


BAD_IMAGES = _bad_images()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_json(path: Path, obj: Any) -> None:
    """JSON with every ``_PLACEHOLDER`` string replaced by raw invalid UTF-8 bytes."""
    text = json.dumps(obj).encode()
    _write(path, text.replace(_PLACEHOLDER.encode(), INVALID_UTF8))


# ----------------------------------------------------------------------------------------------
# COCO and Flickr30K (Karpathy)


def write_karpathy(root: Path, dataset: str, counts: dict[str, int], seed: int = 0) -> dict[str, dict]:
    """COCO (``dataset="coco"``) or Flickr30K (``"flickr30k"``) with ``counts`` images per Karpathy
    split. Returns ``{karpathy split: {file name: captions}}``."""
    rng = random.Random(f"{dataset}/{seed}")
    images, expected = [], {}
    index = 0
    for split, n in counts.items():
        for _ in range(n):
            data, caps = shapes_jpeg(rng)
            if dataset == "coco":
                folder = "val2014" if index % 2 else "train2014"
                filename = f"COCO_{folder}_{100 + index:012d}.jpg"
                _write(root / folder / filename, data)
                entry = {"filepath": folder, "filename": filename, "cocoid": 100 + index}
            else:
                folder, filename = "flickr30k-images", f"{1000 + index}.jpg"
                _write(root / folder / filename, data)
                entry = {"filename": filename}
            sentences = [
                {"raw": c, "tokens": c.split(), "imgid": index, "sentid": 10 * index + k}
                for k, c in enumerate(caps)
            ]
            images.append(
                {
                    **entry,
                    "imgid": index,
                    "split": split,
                    "sentids": [s["sentid"] for s in sentences],
                    "sentences": sentences,
                }
            )
            expected.setdefault(split, {})[filename] = caps
            index += 1
    _write_json(root / "karpathy" / f"dataset_{dataset}.json", {"dataset": dataset, "images": images})
    return expected


# ----------------------------------------------------------------------------------------------
# Visual Genome


def write_vg(root: Path, n: int, seed: int = 0) -> dict[str, list[str]]:
    """``n`` images over both VG image folders, each phrase listed twice (the converter keeps one).
    Returns ``{image id: distinct phrases in order}``."""
    rng = random.Random(f"vg/{seed}")
    entries, expected = [], {}
    for i in range(n):
        image_id = 1 + i
        data, caps = shapes_jpeg(rng)
        _write(root / "images" / ("VG_100K" if i % 2 else "VG_100K_2") / f"{image_id}.jpg", data)
        phrases = caps + caps[:2]
        regions = [
            {
                "region_id": 100 * image_id + k,
                "image_id": image_id,
                "phrase": p,
                "x": 1,
                "y": 2,
                "width": 3,
                "height": 4,
            }
            for k, p in enumerate(phrases)
        ]
        entries.append({"id": image_id, "regions": regions})
        expected[str(image_id)] = caps
    _write_json(root / "annotations" / "region_descriptions.json", entries)
    return expected


# ----------------------------------------------------------------------------------------------
# GCC / SBU


def write_annotation_list(
    root: Path, split: str, annotation: str, n: int, bad: bool = False, seed: int = 0
) -> dict[str, list[str]]:
    """The official layout: ``images_<split>/<first 4>/<name>`` and ``annotation`` listing
    ``[image_path, caption]``; the first image is listed twice with two captions. With ``bad``,
    adds one image per :data:`BAD_IMAGES` case and captions with invalid UTF-8 / empty text.
    Returns ``{image name: captions}`` of the images a conversion must keep."""
    rng = random.Random(f"{split}/{annotation}/{seed}")
    pairs: list[list[str]] = []
    expected: dict[str, list[str]] = {}

    def add(name: str, data: bytes | None, caps: list[str]) -> None:
        path = f"images_{split}/{name[:4]}/{name}"
        if data is not None:
            _write(root / path, data)
        pairs.extend([path, c] for c in caps)

    for i in range(n):
        name = f"{i:07d}.jpg"
        data, caps = shapes_jpeg(rng)
        add(name, data, caps[:2] if i == 0 else caps[:1])
        expected[name] = caps[:2] if i == 0 else caps[:1]
    if bad:
        for case, (data, outcome) in BAD_IMAGES.items():
            add(f"{case}.img", data, [f"a picture for {case}"])
            if outcome in ("kept", "reencoded"):
                expected[f"{case}.img"] = [f"a picture for {case}"]
        data, caps = shapes_jpeg(rng)
        add("bad_utf8.jpg", data, [_PLACEHOLDER])  # its only caption is unusable: item skipped
        add("empty_caption.jpg", data, [""])
        add("one_good_caption.jpg", data, ["   ", caps[0], _PLACEHOLDER])
        expected["one_good_caption.jpg"] = [caps[0]]
    _write_json(root / annotation, pairs)
    return expected


def write_img2dataset(
    directory: Path, n: int, per_tar: int = 3, bad: bool = False, seed: int = 0
) -> dict[str, list[str]]:
    """img2dataset's output: ``{00000,00001..}.tar`` of ``KEY.jpg``, ``KEY.txt``, ``KEY.json``, and
    ``*_stats.json``. With ``bad`` the first sample has no image and the last an invalid UTF-8
    caption. Returns ``{key: [caption]}`` of what a conversion keeps."""
    rng = random.Random(f"img2dataset/{seed}")
    expected: dict[str, list[str]] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for t in range((n + per_tar - 1) // per_tar):
        with tarfile.open(directory / f"{t:05d}.tar", "w") as tar:
            for i in range(t * per_tar, min(n, (t + 1) * per_tar)):
                key = f"{t:05d}{i:04d}"
                data, caps = shapes_jpeg(rng)
                no_image, bad_caption = bad and i == 0, bad and i == n - 1
                files = {
                    "txt": INVALID_UTF8 if bad_caption else caps[0].encode(),
                    "json": json.dumps({"key": key, "status": "success"}).encode(),
                    **({} if no_image else {"jpg": data}),
                }
                for ext, payload in files.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                if not (no_image or bad_caption):
                    expected[key] = [caps[0]]
        (directory / f"{t:05d}_stats.json").write_text(json.dumps({"successes": per_tar}))
    return expected


def write_cc12m_tsv(root: Path, n: int, bad: bool = False, seed: int = 0) -> dict[str, list[str]]:
    """CC12M's released ``cc12m.tsv`` (``url<TAB>caption``, no header) and the downloaded images
    at ``images_train/<first 4>/<line as 8 digits>.<ext>``; every third image a PNG under
    ``.png``, and one caption with the release's ``<PERSON>``. With ``bad``, adds one line per
    :data:`BAD_IMAGES` case, a line without a tab, invalid UTF-8 and empty captions, and a line
    ending in CRLF. Returns ``{8-digit line: [caption]}`` of what a conversion keeps."""
    rng = random.Random(f"cc12m/{seed}")
    lines: list[bytes] = []
    expected: dict[str, list[str]] = {}

    def add(data: bytes | None, caption: bytes, ext: str = "jpg", keep: bool = True) -> None:
        name = f"{len(lines):08d}"
        if data is not None:
            _write(root / "images_train" / name[:4] / f"{name}.{ext}", data)
        lines.append(b"https://example.com/" + name.encode() + b".jpg\t" + caption + b"\n")
        if keep:
            expected[name] = [caption.decode()]

    for i in range(n):
        data, caps = shapes_jpeg(rng)
        if i % 3 == 2:
            add(_encode(Image.open(io.BytesIO(data)), "PNG"), caps[0].encode(), "png")
        else:
            add(data, (f"<PERSON> looks at {caps[0]}" if i == 1 else caps[0]).encode())
    if bad:
        for case, (data, outcome) in BAD_IMAGES.items():
            add(data, f"a picture for {case}".encode(), keep=outcome in ("kept", "reencoded"))
        data, caps = shapes_jpeg(rng)
        add(data, INVALID_UTF8, keep=False)
        add(data, b"", keep=False)
        lines.append(b"a line without a tab\n")
        add(data, caps[1].encode())
        lines[-1] = lines[-1].replace(b"\n", b"\r\n")
    _write(root / "cc12m.tsv", b"".join(lines))
    return expected


# ----------------------------------------------------------------------------------------------
# VQAv2


def _raw_answers(answer: str, rng: random.Random) -> list[str]:
    """Ten annotator answers: the main answer 1-10 times, the rest other vocabulary answers or a
    capitalised variant (not in the vocabulary, since raw answers are matched as given)."""
    n_main = rng.randint(1, 10)
    others = [rng.choice(ANSWERS) for _ in range(10 - n_main)]
    if others:
        others[0] = answer.capitalize()
    return [answer] * n_main + others


def write_vqav2(root: Path, n_images: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """VQAv2 with ``n_images`` per subset (``train2014``, ``val2014``, ``test2015``,
    ``test-dev2015``; test-dev images live in test2015). Main answers are shapes answers, so
    number words ("two") exercise the normalisation. Annotations carry the question's
    ``answer_type`` and, as ``question_type``, its first two words, except every third question's
    (both fields are optional). Returns, per subset, the questions by id with their image id, text,
    raw answers (``main`` and ``answers``) and the type fields of their annotation (``types``);
    test subsets get no annotation file."""
    rng = random.Random(f"vqav2/{seed}")
    out: dict[str, Any] = {}
    image_id = 1
    for subset, n in n_images.items():
        folder = "test2015" if subset.startswith("test") else subset
        records, annotations, expected = [], [], {}
        for _ in range(n):
            scene = sample_scene(rng)
            _write(root / folder / f"COCO_{folder}_{image_id:012d}.jpg", render(scene))
            for q in questions(scene, rng, str(image_id)):
                question_id = image_id * 1000 + len(expected)
                records.append({"image_id": image_id, "question": q["text"], "question_id": question_id})
                main = q["answers"][0]
                raw = _raw_answers(main, rng)
                question_type = " ".join(q["text"].split()[:2])
                types = (
                    {}
                    if len(expected) % 3 == 2
                    else {"answer_type": q["answer_type"], "question_type": question_type}
                )
                expected[question_id] = {
                    "image_id": image_id,
                    "text": q["text"],
                    "main": main,
                    "answers": raw,
                    "types": types,
                }
                annotations.append(
                    {
                        "question_id": question_id,
                        "image_id": image_id,
                        **types,
                        "multiple_choice_answer": main,
                        "answers": [
                            {"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                            for k, a in enumerate(raw)
                        ],
                    }
                )
            image_id += 1
        _write_json(
            root / f"v2_OpenEnded_mscoco_{subset}_questions.json",
            {"data_subtype": subset, "questions": records},
        )
        if not subset.startswith("test"):
            _write_json(root / f"v2_mscoco_{subset}_annotations.json", {"annotations": annotations})
        out[subset] = expected
    return out


# ----------------------------------------------------------------------------------------------
# NLVR2


def write_nlvr2(root: Path, n_pairs: dict[str, int], seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """NLVR2 with ``n_pairs`` per split; two statements per pair, as two JSON lines whose
    identifiers share the pair. Train images go to ``images/train/<n % 3>/``, dev and test1 to
    ``<split>/``; one left image per split is a JPEG named ``.png`` (as in the real data).
    Returns ``{split: {pair id: statements}}``."""
    rng = random.Random(f"nlvr2/{seed}")
    expected: dict[str, dict[str, list[dict]]] = {}
    for split, n in n_pairs.items():
        lines = []
        for p in range(n):
            pair = f"{split}-{10 * p + 3}-{p % 2}"
            left, right = sample_scene(rng), sample_scene(rng)
            folder = root / "images" / "train" / str(p % 3) if split == "train" else root / split
            for side, scene in enumerate((left, right)):
                data = render(scene)
                if not (p == 0 and side == 0):
                    data = _encode(Image.open(io.BytesIO(data)), "PNG")
                _write(folder / f"{pair}-img{side}.png", data)
            said = statements(left, right, rng, pair)
            for k, s in enumerate(said):
                identifier = f"{pair}-{k}"
                lines.append(
                    json.dumps(
                        {
                            "identifier": identifier,
                            "sentence": s["text"],
                            "label": "True" if s["label"] else "False",
                            "left_url": "http://x",
                            "right_url": "http://y",
                            "synset": "shape",
                            "query": "shapes",
                            "writer": 1,
                            "validation": {},
                        }
                    )
                )
            expected.setdefault(split, {})[pair] = [
                {"id": f"{pair}-{k}", "text": s["text"], "label": s["label"]} for k, s in enumerate(said)
            ]
        _write(root / "nlvr2" / "data" / f"{split}.json", ("\n".join(lines) + "\n").encode())
    return expected


# ----------------------------------------------------------------------------------------------
# Running the converters and reading their output


def run_cli(source: str, root: Path, out: Path, *extra: str, workers: int = 1, maxcount: int = 4) -> None:
    """``vilt-shards SOURCE --root ROOT --out OUT`` with small shards and ``workers`` processes."""
    main(
        [
            source,
            "--root",
            str(root),
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--maxcount",
            str(maxcount),
            *extra,
        ]
    )


def read_split(directory: Path) -> dict[str, tuple[list[bytes], dict[str, Any]]]:
    """``{sample id: (images, meta)}`` of a converted split (ids must be unique)."""
    samples = {meta["id"]: (images, meta) for _, images, meta in iter_samples(directory)}
    assert len(samples) == json.loads((directory / "manifest.json").read_text())["num_samples"]
    return samples


def manifest(directory: Path) -> dict[str, Any]:
    """The split's manifest."""
    return json.loads((directory / "manifest.json").read_text())


def skipped(directory: Path) -> dict[str, str]:
    """``{id: reason}`` of every item the split's manifest lists as skipped."""
    return {s["id"]: s["reason"] for s in manifest(directory)["skipped"]}
