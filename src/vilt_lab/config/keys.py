"""The config keys as the schema declares them: one row per key, for the rules and the docs.

`declared_keys(TrainSchema)` walks the declarations of vilt_lab.config.schema (nested nodes,
the alternatives of a tagged union, the entries of a mapping of nodes) into rows: the dotted key,
what it allows, its default, its doc and whether a resume may change it. `may_change_keys` gives
what the run-dir hash leaves out and a resume may change (vilt_lab.training.run_dir); the
reference page (vilt_lab.config.reference) lists every row.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from .schema import DOC, MAY_CHANGE
from .typed_check import TAG, describe

REQUIRED = dataclasses.MISSING
ANY_NAME = "<name>"  # stands for every entry of a mapping of nodes (`data.sources.<name>.urls`)


@dataclass(frozen=True)
class DeclaredKey:
    """One key: ``key`` dotted, ``allowed`` in words, ``default`` (REQUIRED: none), ``doc``,
    ``may_change`` on resume, ``only`` (for a key of some alternatives of a tagged union: which,
    e.g. ``task.name=irtr``; empty for every alternative)."""

    key: str
    allowed: str
    default: Any
    doc: str
    may_change: bool
    only: str = ""


def declared_keys(schema: type, prefix: str = "", may_change: bool = False) -> list[DeclaredKey]:
    """Every key under ``schema`` (a schema dataclass), depth first in declaration order."""
    rows: list[DeclaredKey] = []
    hints = get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        key, changes = f"{prefix}{f.name}", may_change or bool(f.metadata.get(MAY_CHANGE))
        nodes, below = _nodes(hints[f.name])
        if not nodes:
            rows.append(DeclaredKey(key, describe(hints[f.name]), _default(f), f.metadata[DOC], changes))
        elif len(nodes) == 1:
            rows += declared_keys(nodes[0], f"{key}{below}.", changes)
        else:
            rows += _tagged_union(nodes, f"{key}.", changes)
    return rows


def may_change_keys(schema: type, prefix: str = "") -> tuple[str, ...]:
    """The keys a resume may change, a node declared so standing for every key under it."""
    keys: list[str] = []
    hints = get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        nodes, below = _nodes(hints[f.name])
        if f.metadata.get(MAY_CHANGE):
            keys.append(key)
        for node in nodes if not f.metadata.get(MAY_CHANGE) else ():
            keys += [k for k in may_change_keys(node, f"{key}{below}.") if k not in keys]
    return tuple(keys)


def _tagged_union(members: list[type], prefix: str, may_change: bool) -> list[DeclaredKey]:
    """The alternatives' keys once each: a key every alternative declares as the first does, its
    tag's allowed values joined; a key of some alternatives marked with their tags."""
    tags = {m: get_args(get_type_hints(m)[TAG])[0] for m in members}
    by_key: dict[str, list[tuple[type, DeclaredKey]]] = {}
    for member in members:
        for row in declared_keys(member, prefix, may_change):
            by_key.setdefault(row.key, []).append((member, row))
    rows = []
    for key, found in by_key.items():
        first = found[0][1]
        if key == f"{prefix}{TAG}":
            allowed = "one of " + ", ".join(repr(tags[m]) for m, _ in found)
            rows.append(
                dataclasses.replace(first, allowed=allowed, doc=f"picks the alternative: {allowed[7:]}")
            )
        elif len(found) == len(members):
            rows.append(first)
        else:
            only = f"{prefix}{TAG}=" + ", ".join(str(tags[m]) for m, _ in found)
            rows.append(dataclasses.replace(first, only=only))
    return rows


def _nodes(tp: Any) -> tuple[list[type], str]:
    """The schema dataclasses a field's type holds (itself, a union's members, a mapping's
    value type) and the key part between the field and their keys (``.<name>`` for a mapping)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _nodes(args[0])
    if dataclasses.is_dataclass(tp):
        return [tp], ""
    if origin in (Union, types.UnionType):
        return [a for a in args if dataclasses.is_dataclass(a)], ""
    if origin is dict and dataclasses.is_dataclass(args[1]):
        return [args[1]], f".{ANY_NAME}"
    return [], ""


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED
