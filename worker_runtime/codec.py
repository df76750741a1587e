"""The JSON form of records and values: dataclasses, enums, tuples to plain data and back.

``to_json`` turns any command, result or domain value into plain JSON data;
``from_json`` builds a dataclass back from it. Stores encode their records
with these, so they depend on this module only, never on the command layer.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

__all__ = ["SCALARS", "from_json", "to_json"]

T = TypeVar("T")


SCALARS = frozenset({str, int, float, bool, type(None)})


def to_json(value: Any) -> Any:
    """Plain JSON data (dicts, lists, str, int, float, bool, None) for ``value``."""
    tp: type = type(value)
    if tp in SCALARS:  # exact types: a StrEnum is a str but must become its value
        return value
    if hasattr(tp, "__dataclass_fields__"):
        data: dict[str, Any] = {}
        for name, optional in _fields(tp):
            v = getattr(value, name)
            if v is None:
                if not optional:
                    data[name] = None
            else:
                # Most fields are scalars: skip the recursive call for them.
                data[name] = v if type(v) in SCALARS else to_json(v)
        return data
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from already-validated JSON ``data``.

    Absent keys take the dataclass defaults; nested dataclasses, tuples,
    enums and optionals follow the type hints.
    """
    return typing.cast(T, _convert(cls, data))


def _convert(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if data is None else _convert(args[0], data)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_convert(item_tp, v) for v in data)
    if origin is dict:
        return dict(data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        kwargs = {
            f.name: _convert(hints[f.name], data[f.name])
            for f in dataclasses.fields(tp)
            if f.name in data
        }
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    if tp is float and isinstance(data, int):
        return float(data)
    if tp is int and isinstance(data, float):
        # JSON Schema counts 2.0 as an integer; the handlers need a real int.
        return int(data)
    return data


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, optional) per field. Optional fields (default None) are left out
    of the JSON when unset; required nullable ones are kept as an explicit null."""
    return tuple((f.name, f.default is None) for f in dataclasses.fields(cls))
