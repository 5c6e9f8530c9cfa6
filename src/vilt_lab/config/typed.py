"""A validated config as the schema's typed objects: what code reads instead of raw keys.

`typed(cfg, TrainSchema)` builds the frozen dataclasses of `vilt_lab.config.schema` from a config
that `vilt_lab.config.validation` has passed: every node becomes its dataclass, a key the config
leaves out takes the declared default (the one place a default lives), a tagged union
(`task.name`) becomes the alternative the tag picks, lists become tuples; values stay as
written (an integer where a number is allowed stays an integer). Code then reads
`run.trainer.keep_last`, never `cfg.trainer.get("keep_last", 3)`.

The config a run records and hashes stays the composed one (`config.yaml`): defaults are not
written into it, so adding a key with a default changes no existing run's identity.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from .typed_check import TAG, check

T = TypeVar("T")


def typed(cfg: DictConfig | Mapping[str, Any], schema: type[T]) -> T:
    """``cfg`` (a validated config, or a plain mapping of one) as an instance of ``schema``."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    return _build(values, schema)


def _build(value: Any, tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _build(value, args[0])
    if dataclasses.is_dataclass(tp):
        return _instance(value, tp)
    if origin in (Union, types.UnionType):
        return _build(value, _alternative(value, args))
    if origin is list or origin is tuple:
        inner = args[0] if origin is list else None
        return tuple(_build(item, inner if inner is not None else args[i]) for i, item in enumerate(value))
    if origin is dict:
        return types.MappingProxyType({name: _build(item, args[1]) for name, item in value.items()})
    return value


def _instance(value: Mapping[str, Any], schema: type) -> Any:
    hints = get_type_hints(schema, include_extras=True)
    given = {
        f.name: _build(value[f.name], hints[f.name]) for f in dataclasses.fields(schema) if f.name in value
    }
    return schema(**given)


def _alternative(value: Any, args: tuple[Any, ...]) -> Any:
    """The member of a union that ``value`` (already validated) fits: the tag's schema for a
    tagged union, else the first alternative the checker accepts."""
    schemas = [a for a in args if dataclasses.is_dataclass(a)]
    if isinstance(value, Mapping) and len(schemas) > 1:
        return next(s for s in schemas if value.get(TAG) in get_args(get_type_hints(s)[TAG]))
    return next(arg for arg in args if not check(value, arg))
