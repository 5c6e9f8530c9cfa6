"""Check a plain config tree against a typed schema: dataclasses whose field types say what each
key allows. Returns every problem at once, each naming the key, the bad value and what is allowed.

Why not OmegaConf's structured configs: merging one stops at the first error, cannot say "an
integer >= 1", "one of 'stop', 'skip'" or "a path or a list of paths", suggests no name for a mistyped
key, and would add the schema's defaults to the config a run records and hashes. Here the config
is only read.

Types understood: ``bool``; ``int`` (not a bool); ``float`` (an int too, never a bool, NaN or an
infinity); ``str``; ``None``; ``Literal[...]``; ``X | Y``; ``list[X]``; ``tuple[X, Y]``;
``dict[str, X]``; ``Annotated[X, ...]`` with :class:`Bound`, :class:`NonEmpty` or
:class:`Allowed`; and dataclasses, whose fields are the keys of a mapping (a field without a
default must be present, one with a default may be absent; any other key is refused with the
closest valid name). A union of several dataclasses is a tagged union: the mapping's ``name``
picks the alternative whose ``name: Literal[...]`` field allows it (``task.name`` picks the task's
schema).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

TAG = "name"  # the key that picks the alternative of a tagged union
_REPR_LIMIT = 80  # a long value (a whole list of urls) is shortened in messages
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Bound:
    """``Annotated[int, Bound(">=", 1)]``: the value compared with ``limit`` by ``op``."""

    op: str
    limit: float

    def allows(self, value: Any) -> bool:
        return _OPERATORS[self.op](value, self.limit)

    def describe(self) -> str:
        return f"{self.op} {self.limit:g}"


@dataclass(frozen=True)
class MultipleOf:
    """``Annotated[int, MultipleOf(32)]``: a whole multiple of ``factor``."""

    factor: int

    def allows(self, value: Any) -> bool:
        return value % self.factor == 0

    def describe(self) -> str:
        return f"a multiple of {self.factor}"


@dataclass(frozen=True)
class NonEmpty:
    """A string, list or mapping with at least one character, element or key."""

    def allows(self, value: Any) -> bool:
        return len(value) > 0

    def describe(self) -> str:
        return "(not empty)"


@dataclass(frozen=True)
class Allowed:
    """What the messages say is allowed, where the type alone would read poorly."""

    text: str


def describe(tp: Any) -> str:
    """What ``tp`` allows, in words: "an integer >= 1", "one of 'stop', 'skip'", "a number or null"."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        base, *extras = args
        given = [e.text for e in extras if isinstance(e, Allowed)]
        if given:
            return given[0]
        constraints = [e.describe() for e in extras if hasattr(e, "describe")]
        return " ".join([describe(base), " and ".join(constraints)]).strip()
    if _is_union(tp):
        return " or ".join(describe(arg) for arg in args)
    if origin is Literal:
        return _short(args[0]) if len(args) == 1 else f"one of {', '.join(_short(arg) for arg in args)}"
    if origin is list:
        return f"a list of: {describe(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)}: " + ", ".join(describe(arg) for arg in args)
    if origin is dict:
        return f"a mapping of names to: {describe(args[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return _SCALARS.get(tp, (None, getattr(tp, "__name__", str(tp))))[1]


def check(value: Any, tp: Any, key: str = "") -> list[str]:
    """Every way ``value`` (a plain container, as ``OmegaConf.to_container`` gives) fails ``tp``;
    ``key`` is its dotted config key. Empty when it fits."""
    problems: list[str] = []
    _check(value, tp, key, problems)
    return problems


def _check(value: Any, tp: Any, key: str, problems: list[str]) -> None:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        found = check(value, args[0], key)
        if all(p.startswith(f"{key}=") for p in found):  # about the value itself, not a key inside
            fits = not found and all(e.allows(value) for e in args[1:] if hasattr(e, "allows"))
            found = [] if fits else [_problem(key, value, describe(tp), hint=_quote_hint(key, value, tp))]
        problems.extend(found)
    elif dataclasses.is_dataclass(tp):
        _check_fields(value, tp, key, problems)
    elif _is_union(tp):
        _check_union(value, tp, key, problems)
    elif origin is Literal:
        if not any(type(value) is type(arg) and value == arg for arg in args):
            problems.append(_problem(key, value, describe(tp)))
    elif origin is list:
        if not isinstance(value, list):
            problems.append(_problem(key, value, describe(tp)))
        else:
            for i, item in enumerate(value):
                _check(item, args[0], f"{key}[{i}]", problems)
    elif origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            problems.append(_problem(key, value, describe(tp)))
        else:
            for i, (item, arg) in enumerate(zip(value, args, strict=True)):
                _check(item, arg, f"{key}[{i}]", problems)
    elif origin is dict:
        if not isinstance(value, dict):
            problems.append(_problem(key, value, describe(tp)))
        else:
            for name, item in value.items():
                _check(item, args[1], _join(key, name), problems)
    elif not _SCALARS[tp][0](value):
        problems.append(_problem(key, value, describe(tp), hint=_quote_hint(key, value, tp)))


def _check_fields(value: Any, schema: type, key: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(_problem(key, value, describe(schema)))
        return
    hints = get_type_hints(schema, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name in value:
        if name not in fields:
            problems.append(_unknown(_join(key, name), value[name], name, sorted(fields)))
    for name, field in fields.items():
        if name in value:
            _check(value[name], hints[name], _join(key, name), problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{_join(key, name)}: missing; expected {describe(hints[name])}")


def _check_union(value: Any, tp: Any, key: str, problems: list[str]) -> None:
    args = get_args(tp)
    schemas = [arg for arg in args if dataclasses.is_dataclass(arg)]
    if schemas and isinstance(value, dict):
        # A mapping is checked key by key against its own schema, so each problem names its key.
        if len(schemas) == 1:
            _check_fields(value, schemas[0], key, problems)
            return
        tags = {tag: schema for schema in schemas for tag in get_args(get_type_hints(schema)[TAG])}
        tag = value.get(TAG)
        if tag in tags:
            _check_fields(value, tags[tag], key, problems)
        else:
            problems.append(_problem(_join(key, TAG), tag, f"one of {', '.join(_short(t) for t in tags)}"))
        return
    if all(check(value, arg, key) for arg in args):  # no alternative fits
        problems.append(_problem(key, value, describe(tp), hint=_quote_hint(key, value, tp)))


def _unknown(key: str, value: Any, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    if close:
        return f"{key}={_short(value)}: unknown key; did you mean {_join(parent, close[0])}?"
    return f"{key}={_short(value)}: unknown key; {parent or 'the top level'} has {', '.join(known)}"


def _quote_hint(key: str, value: Any, tp: Any) -> str:
    """Hydra reads `name=123`, `name=nan` or `name=true` as a number or a bool: say how to pass text."""
    if isinstance(value, (bool, int, float)) and "a string" in describe(tp):
        kind = "true/false" if isinstance(value, bool) else "a number"
        return f"Hydra reads {_short(value)} as {kind}: quote it, e.g. '{key}=\"{value}\"'"
    return ""


def _problem(key: str, value: Any, allowed: str, hint: str = "") -> str:
    return f"{key}={_short(value)}: expected {allowed}" + (f" ({hint})" if hint else "")


def _short(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Scalar type -> (accepts, what the messages call it)
_SCALARS: dict[Any, tuple[Callable[[Any], bool], str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (_is_number, "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    type(None): (lambda v: v is None, "null"),
}
