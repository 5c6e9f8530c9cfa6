"""Raw annotation files and their texts, read so that one bad text cannot sink a whole dataset.

JSON is decoded with ``surrogateescape``: an invalid UTF-8 byte inside one caption survives as a
lone surrogate in that caption only (strict decoding would reject the whole file), and
:func:`check_text` then skips exactly that caption with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """One JSON document (see the module docstring for invalid UTF-8).

    Raises:
        FileNotFoundError: naming the file, when it is missing.
        ValueError: naming the file, when it is not JSON.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {path} is missing (docs/data.md, 'Datasets', gives the layout)"
        )
    try:
        return json.loads(path.read_bytes().decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_json_lines(path: Path) -> list[Any]:
    """A JSON-lines file (one document per non-blank line).

    Raises:
        FileNotFoundError: naming the file, when it is missing.
        ValueError: naming the file and line, for a line that is not JSON.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {path} is missing (docs/data.md, 'Datasets', gives the layout)"
        )
    out = []
    for number, line in enumerate(path.read_bytes().decode("utf-8", "surrogateescape").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON: {err}") from err
    return out


def check_text(text: Any, what: str) -> str:
    """``text`` unchanged if it is usable as a ``what`` (caption, question, statement).

    Raises:
        ValueError: ``"<what> not valid UTF-8"``, ``"empty <what>"`` or ``"<what> not a string"``
            (the message is the skip reason).
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} not a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates: invalid bytes in the raw file
        raise ValueError(f"{what} not valid UTF-8") from err
    if not text.strip():
        raise ValueError(f"empty {what}")
    return text


def decode_text(data: bytes, what: str) -> str:
    """Raw bytes (e.g. an img2dataset ``.txt`` member) as a checked text; see :func:`check_text`."""
    return check_text(data.decode("utf-8", "surrogateescape"), what)


def clean_captions(
    item_id: str, raw_captions: Iterable[Any], skipped: list[dict[str, str]]
) -> tuple[list[str], int]:
    """The usable, distinct captions of one image, in order, and how many exact duplicates were dropped.

    Unusable captions are appended to ``skipped`` as ``{"id": "<item_id>/caption<i>", "reason"}``.
    Duplicates are dropped as the official loader's ``list(set(captions))`` does (one training
    item per distinct caption), but first occurrences keep their order.
    """
    kept: dict[str, None] = {}
    duplicates = 0
    for index, raw in enumerate(raw_captions):
        try:
            caption = check_text(raw, "caption")
        except ValueError as err:
            skipped.append({"id": f"{item_id}/caption{index}", "reason": str(err)})
            continue
        duplicates += caption in kept
        kept[caption] = None
    return list(kept), duplicates


def find_file(candidates: list[Path]) -> Path:
    """The first existing path of ``candidates``, else the first (a skip then names where it looked)."""
    return next((path for path in candidates if path.exists()), candidates[0])
