"""WebDataset shards: the one writer every converter uses, and the helpers that read them back.

Layout of one converted split (``OUT/<task>/<split>/``)::

    shard-000000.tar  shard-000001.tar  ...   complete shards only (see "Atomicity")
    sizes.json        {"shard-000000.tar": 5000, ...}  samples per shard (open_clip convention)
    texts.json        {"shard-000000.tar": 25012, ...} texts (captions, questions, statements) per shard
    manifest.json     source, split, counts, writer caps, skipped items with reasons, extras

Sample schema. One tar key per sample (the key has no ``.`` or ``/``: WebDataset splits a member
name at the first dot of its base name):

* images, stored as the bytes the converter hands over, named by their *actual* format
  (sniffed from the magic bytes, never trusted from a file name; NLVR2's ``.png`` files are not
  all PNGs): ``KEY.jpg`` / ``KEY.png`` / ``KEY.webp`` for one image; ``KEY.0.png``, ``KEY.1.png``
  for several, in order (NLVR2: 0 = left, 1 = right).
* ``KEY.json``, a UTF-8 object with ``"id"`` (the item's id in its source, a string) and the
  text of exactly one kind:

  - ``"captions": [str, ...]``: every caption of the image (pre-training, retrieval);
  - ``"questions": [{"id": str, "text": str, "answers": [str, ...], "labels": [int, ...],
    "scores": [float, ...]}, ...]``: VQA, labels index the ``answers.json`` beside the
    split directories, scores are the VQA soft scores; optionally also
    ``"annotator_answers": [str, ...]`` (every annotator's raw answer, in order, for the
    official accuracy; empty for test splits), ``"answer_type": str`` ("yes/no", "number",
    "other") and ``"question_type": str``;
  - ``"statements": [{"id": str, "text": str, "label": bool}, ...]``: NLVR2, about all the
    sample's images together.

  Sources may add fields (the shapes world adds ``"scene"``); readers ignore what they do not use.

Atomicity: a shard is written as ``shard-NNNNNN.tar.partial`` and renamed when it is closed, and
``sizes.json`` / ``manifest.json`` are written (also via a rename) only when the whole split
finished, so a killed conversion leaves no half shard that looks complete and no manifest.
Two writers share these pieces: :class:`ShardWriter` (one sequential stream of samples, shards
cut by count and bytes) and the parallel, resumable converter runner
(:mod:`vilt_lab.data.sources.runner`, which writes each shard with :class:`ShardFile`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import tarfile_samples

SHARD_PATTERN = "shard-%06d.tar"
PARTIAL_SUFFIX = ".partial"
SIZES_FILE = "sizes.json"
TEXTS_FILE = "texts.json"
TEXT_FIELDS = ("captions", "questions", "statements")
MANIFEST_FILE = "manifest.json"
IMAGE_EXTENSIONS = ("jpg", "png", "webp")

PROGRESS_DIR = ".progress"  # the runner's per-shard records of an unfinished split

_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))
_OWN_FILES = re.compile(r"^(shard-\d{6}\.tar|sizes\.json|texts\.json|manifest\.json)(\.partial)?$")


def image_extension(data: bytes) -> str:
    """The extension that names ``data`` by its magic bytes: ``jpg``, ``png`` or ``webp``.

    Raises:
        ValueError: for any other payload (re-encode it, or ``skip`` the item).
    """
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ValueError(f"not a JPEG, PNG or WebP image (starts with {bytes(data[:8])!r})")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a ``.partial`` file and a rename."""
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def encode_sample(key: str, images: list[bytes], meta: dict[str, Any]) -> dict[str, Any]:
    """One sample in the schema above, as the ``{"__key__", ext: bytes}`` dict a tar writer takes.

    Raises:
        ValueError: for a key with ``.`` or ``/``, no images, an image that is not
            JPEG/PNG/WebP, or metadata that is not a JSON object.
    """
    if not key or "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} must be non-empty without '.' or '/'")
    if not images:
        raise ValueError(f"sample {key!r} has no image")
    if not isinstance(meta, dict):
        raise ValueError(f"sample {key!r}: meta must be a dict, got {type(meta).__name__}")
    sample: dict[str, Any] = {"__key__": key}
    for i, data in enumerate(images):
        ext = image_extension(data)
        sample[ext if len(images) == 1 else f"{i}.{ext}"] = bytes(data)
    sample["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return sample


def num_texts(meta: dict[str, Any]) -> int:
    """Texts (captions, questions, statements) of one sample's metadata, as ``texts.json`` counts them."""
    return sum(len(meta.get(field) or ()) for field in TEXT_FIELDS)


def prepare_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; refuse (or, with ``overwrite``, delete) an earlier conversion in it.

    Only this module's own files are touched (shards, sizes, texts, manifest, their ``.partial``
    files, the runner's progress records), never anything else a user keeps there.

    Raises:
        FileExistsError: when ``out_dir`` holds a conversion and ``overwrite`` is false.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    own = [p for p in out_dir.iterdir() if _OWN_FILES.match(p.name) or p.name == PROGRESS_DIR]
    if own and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a conversion ({own[0].name}); pass overwrite=True")
    for path in own:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def build_manifest(
    *,
    source: str,
    split: str,
    sizes: dict[str, int],
    texts: dict[str, int],
    skipped: list[dict[str, str]],
    caps: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A split's manifest: counts, the writer's caps, every skipped item with its reason, extras."""
    return {
        "source": source,
        "split": split,
        "num_samples": sum(sizes.values()),
        "num_texts": sum(texts.values()),
        "num_shards": len(sizes),
        **caps,
        "num_skipped": len(skipped),
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "skipped": skipped,
        **extra,
    }


def write_split_index(
    out_dir: Path, sizes: dict[str, int], texts: dict[str, int], manifest: dict[str, Any]
) -> None:
    """Write ``sizes.json``, ``texts.json`` and, last, ``manifest.json``: the mark of a finished split."""
    write_json_atomic(out_dir / SIZES_FILE, sizes)
    write_json_atomic(out_dir / TEXTS_FILE, texts)
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)


class ShardFile:
    """One shard written atomically: samples go to ``NAME.partial``, renamed to ``NAME`` on close."""

    def __init__(self, path: Path) -> None:
        """Open ``path.partial`` for writing (an earlier ``.partial`` is replaced)."""
        self.path = path
        self._partial = path.with_name(path.name + PARTIAL_SUFFIX)
        # Fixed mtime and owner: the same input gives byte-identical shards (reproducible builds).
        # The mtime must be an int: tarfile stores a float mtime in an extra 1 KiB pax header per
        # member, which doubles small shards and costs every reader a pax parse per file.
        self._tar = wds.TarWriter(str(self._partial), encoder=False, mtime=0, user="vilt", group="vilt")

    def write(self, sample: dict[str, Any]) -> int:
        """Append an encoded sample (see :func:`encode_sample`); returns the bytes written."""
        return self._tar.write(sample)

    def close(self) -> None:
        """Finish the shard and rename it into place."""
        self._tar.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self._tar.close()
        self._partial.unlink(missing_ok=True)


class ShardWriter:
    """Write one split of one source as size-capped WebDataset shards, plus sizes and manifest.

    Use it as a context manager::

        with ShardWriter(out / "pretrain" / "train", source="coco", split="train") as w:
            for item in items:
                try:
                    w.write(item.key, [item.jpeg_bytes], {"id": item.id, "captions": item.captions})
                except ValueError as err:           # e.g. a payload that is not an image
                    w.skip(item.id, str(err))

    A shard is closed when it holds ``maxcount`` samples or ``maxsize`` bytes (a shard may pass
    ``maxsize`` by one sample). ``sizes.json`` and ``manifest.json`` are written on a clean exit
    only; on an exception the open shard is deleted and the error propagates.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        source: str,
        split: str,
        maxcount: int = 5000,
        maxsize: float = 1e9,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Open a writer for one split.

        Args:
            out_dir: the split's directory; created if missing.
            source, split: recorded in the manifest.
            maxcount, maxsize: caps per shard (samples, bytes). WebDataset's own default of 100k
                samples / 3 GB is far too coarse to give every worker several shards.
            overwrite: replace shards, sizes and manifest of an earlier conversion in ``out_dir``;
                without it an existing conversion is an error, never silently mixed with the new one.
            extra: JSON-able facts for the manifest (e.g. the seed, the raw root).
        """
        if maxcount < 1 or maxsize <= 0:
            raise ValueError(f"maxcount and maxsize must be positive, got {maxcount}, {maxsize}")
        self.out_dir = Path(out_dir)
        self.source, self.split = source, split
        self.maxcount, self.maxsize = maxcount, maxsize
        self.extra = dict(extra or {})
        prepare_output_dir(self.out_dir, overwrite)
        self._sizes: dict[str, int] = {}
        self._texts: dict[str, int] = {}
        self._skipped: list[dict[str, str]] = []
        self._keys: set[str] = set()
        self._shard: ShardFile | None = None
        self._count = 0
        self._num_texts = 0
        self._bytes = 0

    @property
    def num_samples(self) -> int:
        """Samples written so far, over all shards."""
        return sum(self._sizes.values()) + self._count

    def write(self, key: str, images: list[bytes], meta: dict[str, Any]) -> None:
        """Add one sample: its images (encoded bytes, in order) and its JSON metadata.

        Raises:
            ValueError: for a key with ``.`` or ``/``, a repeated key, no images, an image that
                is not JPEG/PNG/WebP, or metadata that is not a JSON object.
        """
        sample = encode_sample(key, images, meta)
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        if self._shard is None or self._count >= self.maxcount or self._bytes >= self.maxsize:
            self._next_shard()
        assert self._shard is not None
        self._bytes += self._shard.write(sample)
        self._count += 1
        self._num_texts += num_texts(meta)
        self._keys.add(key)

    def skip(self, item_id: str, reason: str) -> None:
        """Record that the source item ``item_id`` was not written, and why (kept in the manifest)."""
        self._skipped.append({"id": str(item_id), "reason": reason})

    def _shard_name(self) -> str:
        return SHARD_PATTERN % len(self._sizes)

    def _next_shard(self) -> None:
        self._close_shard()
        self._shard = ShardFile(self.out_dir / self._shard_name())
        self._count, self._bytes = 0, 0

    def _close_shard(self) -> None:
        if self._shard is None:
            return
        self._shard.close()
        self._shard = None
        name = self._shard_name()
        self._sizes[name] = self._count
        self._texts[name] = self._num_texts
        self._count, self._num_texts, self._bytes = 0, 0, 0

    def manifest(self) -> dict[str, Any]:
        """The manifest as it would be written now (the open shard counted as one)."""
        sizes, texts = dict(self._sizes), dict(self._texts)
        if self._shard is not None:
            sizes[self._shard_name()], texts[self._shard_name()] = self._count, self._num_texts
        return build_manifest(
            source=self.source,
            split=self.split,
            sizes=sizes,
            texts=texts,
            skipped=self._skipped,
            caps={"maxcount": self.maxcount, "maxsize": self.maxsize},
            extra=self.extra,
        )

    def close(self) -> None:
        """Finish the open shard, then write ``sizes.json`` and ``manifest.json``."""
        self._close_shard()
        write_split_index(self.out_dir, self._sizes, self._texts, self.manifest())

    def abort(self) -> None:
        """Drop the open (incomplete) shard and write nothing else."""
        if self._shard is not None:
            self._shard.abort()
            self._shard = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ----------------------------------------------------------------------------------------------
# Reading


def expand_shards(spec: str | os.PathLike[str] | Iterable[str]) -> list[str]:
    """Shard URLs from a split directory, a brace pattern, ``::``-joined patterns, or a list.

    A directory means every shard listed in its ``sizes.json`` (so partial shards of a killed
    conversion are never read), in name order. Patterns and URLs (``http://``, ``pipe:``...) go
    through WebDataset's brace expansion unchanged.
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = os.fspath(spec)
        if os.path.isdir(spec):
            return [os.path.join(spec, name) for name in sorted(read_sizes(spec))]
        return expand_urls(spec)
    return [url for item in spec for url in expand_shards(item)]


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def _read_counts(directory: str | os.PathLike[str], name: str) -> dict[str, int]:
    with wds.gopen(os.fspath(directory).rstrip("/") + "/" + name, "rb") as stream:
        return {str(shard): int(count) for shard, count in json.load(stream).items()}


def read_sizes(directory: str | os.PathLike[str]) -> dict[str, int]:
    """``sizes.json`` of a split directory (local path or any URL ``webdataset.gopen`` opens)."""
    return _read_counts(directory, SIZES_FILE)


def is_local(url: str) -> bool:
    """A path on this machine's file system, not a URL or a ``pipe:`` command."""
    return "://" not in url and not url.startswith("pipe:")


def known_sizes(shards: Iterable[str]) -> dict[str, int]:
    """Samples per shard from the ``sizes.json`` beside each local shard; shards without one
    (remote, or written by another tool) are left out rather than fetched or guessed."""
    sizes: dict[str, int] = {}
    for parent, urls in itertools.groupby(sorted(shards, key=_parent), key=_parent):
        if not (is_local(parent) and os.path.isfile(os.path.join(parent, SIZES_FILE))):
            continue
        counts = read_sizes(parent)
        sizes.update({url: counts[name] for url in urls if (name := url.rsplit("/", 1)[-1]) in counts})
    return sizes


def _count(shards: Iterable[str], name: str) -> int:
    per_dir: dict[str, dict[str, int]] = {}
    total = 0
    for url in shards:
        parent = _parent(url)
        if parent not in per_dir:
            per_dir[parent] = _read_counts(parent, name)
        total += per_dir[parent][url.rsplit("/", 1)[-1]]
    return total


def count_samples(shards: Iterable[str]) -> int:
    """Total samples in ``shards``, from the ``sizes.json`` beside each.

    Raises:
        FileNotFoundError: when a shard's directory has no ``sizes.json``.
        KeyError: when it does not list the shard.
    """
    return _count(shards, SIZES_FILE)


def count_texts(shards: Iterable[str]) -> int:
    """Total texts (captions, questions or statements) in ``shards``, from the ``texts.json``
    beside each: the official code samples uniformly over captions, so mixes weigh by this.

    Raises:
        FileNotFoundError: when a shard's directory has no ``texts.json``.
        KeyError: when it does not list the shard.
    """
    return _count(shards, TEXTS_FILE)


def sample_images(sample: dict[str, Any]) -> list[bytes]:
    """The image payloads of a raw WebDataset sample, in order (``jpg`` or ``0.jpg``, ``1.jpg``...)."""
    keys = [k for k in sample if not k.startswith("__") and k.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]
    return [sample[k] for k in sorted(keys, key=lambda k: int(k.split(".")[0]) if "." in k else -1)]


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The decoded ``json`` member of a raw sample.

    Raises:
        ValueError: when it is missing, not JSON, or not an object.
    """
    if "json" not in sample:
        raise ValueError("no json member")
    meta = json.loads(sample["json"])
    if not isinstance(meta, dict):
        raise ValueError(f"json member is a {type(meta).__name__}, not an object")
    return meta


def iter_samples(
    shards: str | os.PathLike[str] | Iterable[str],
) -> Iterator[tuple[str, list[bytes], dict[str, Any]]]:
    """Every sample of ``shards`` in order, as ``(key, images, meta)``; errors propagate.

    A simple sequential reader for tools, tests and evaluation code that needs whole splits
    (e.g. all retrieval captions); training reads through :mod:`vilt_lab.data.pipeline`.
    """
    urls = expand_shards(shards)
    for sample in tarfile_samples(iter([{"url": url} for url in urls])):
        yield sample["__key__"], sample_images(sample), sample_meta(sample)
