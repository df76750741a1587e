"""The JSON form of records and values: dataclasses, enums, tuples to plain data and back.

``to_json`` turns any command, result or domain value into plain JSON data;
``from_json`` builds a dataclass back from it. Stores encode their records
with these, so they depend on this module only, never on the command layer.

Both directions are compiled once per type. ``to_json`` looks up an encoder
by the value's exact type; a dataclass's encoder is generated Python source
(one dict display in field order, each field read once) built from its type
hints, so encoding does no per-field ``hasattr``, ``isinstance`` or Enum
test: a field's hint says which it is, and a cheap class check guards
against a value of another type (which takes the generic path). The output
is exactly what the generic walk gives (``tests/test_codec.py`` compares them
byte for byte). ``from_json`` uses one converter per type the same way.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

__all__ = ["SCALARS", "Convert", "Encode", "converter", "encoder", "from_json", "to_json"]

T = TypeVar("T")

SCALARS = frozenset({str, int, float, bool, type(None)})

Encode = Callable[[Any], Any]
"""Turns a value of one exact type into plain JSON data."""

Convert = Callable[[Any], Any]
"""Turns validated JSON data into a value of one type."""

_ENCODERS: dict[type, Encode] = {}
_CONVERTERS: dict[Any, Convert] = {}
_BUILDING = threading.Lock()


def to_json(value: Any) -> Any:
    """Plain JSON data (dicts, lists, str, int, float, bool, None) for ``value``."""
    tp = type(value)
    if tp in SCALARS:  # exact types: a StrEnum is a str but must become its value
        return value
    found = _ENCODERS.get(tp)
    if found is None:
        found = encoder(tp)
    return found(value)


def encoder(tp: type) -> Encode:
    """The encoder of values of exactly type ``tp`` (built on first use, then kept)."""
    found = _ENCODERS.get(tp)
    if found is None:
        with _BUILDING:
            found = _ENCODERS.get(tp)
            if found is None:
                found = _ENCODERS[tp] = _build_encoder(tp)
    return found


def _identity(value: Any) -> Any:
    return value


def _enum_value(value: Enum) -> Any:
    return value.value


def _sequence(value: Any) -> list[Any]:
    return [v if type(v) in SCALARS else to_json(v) for v in value]


def _mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): v if type(v) in SCALARS else to_json(v) for k, v in value.items()}


def _build_encoder(tp: type) -> Encode:
    if tp in SCALARS:
        return _identity
    if dataclasses.is_dataclass(tp):
        return _dataclass_encoder(tp)
    if issubclass(tp, Enum):
        return _enum_value
    if issubclass(tp, list | tuple):
        return _sequence
    if issubclass(tp, Mapping):
        return _mapping
    return _identity


def _dataclass_encoder(cls: type) -> Encode:
    """Generate ``encode(value) -> dict`` for dataclass ``cls``.

    Fields with default None are left out while None; required nullable ones
    are kept as an explicit null. Keys come in field order either way.
    """
    hints = typing.get_type_hints(cls)
    namespace: dict[str, Any] = {"_to_json": to_json, "_S": SCALARS}
    lines = ["def encode(value):"]
    literal: list[str] = []  # the leading fields that are always present
    later: list[str] = []  # statements for the fields after the first optional one
    for i, field in enumerate(dataclasses.fields(cls)):
        name, omit_none = field.name, field.default is None
        read = f"_v{i} = value.{name}"
        expr = _field_expression(f"_v{i}", hints[name], namespace, i)
        key = repr(name)
        if omit_none:
            later += [read, f"if _v{i} is not None:", f"    _d[{key}] = {expr}"]
        elif later:
            later += [read, f"_d[{key}] = {expr}"]
        else:
            lines.append(f"    {read}")
            literal.append(f"{key}: {expr}")
    lines.append("    _d = {" + ", ".join(literal) + "}")
    lines += [f"    {line}" for line in later]
    lines.append("    return _d")
    source = "\n".join(lines)
    exec(compile(source, f"<to_json {cls.__qualname__}>", "exec"), namespace)
    encode: Encode = namespace["encode"]
    encode.__doc__ = f"The JSON data of a {cls.__qualname__} (generated)."
    return encode


def _field_expression(var: str, hint: Any, namespace: dict[str, Any], index: int) -> str:
    """The expression turning field value ``var`` (hinted ``hint``) into JSON data.

    Whatever the hint, a None is kept as None (the caller omits optional ones)
    and a value of an unexpected type goes through the generic ``to_json``, so
    the output never depends on the hint being right."""
    inner = _without_none(hint)
    generic = f"({var} if {var}.__class__ in _S else _to_json({var}))"
    if inner in (str, int, float, bool):
        # The hinted scalar: as is. Anything else (an Enum in a str field) is
        # left to the generic path, so the check is the one class test.
        return f"({var} if {var}.__class__ is {inner.__name__} else {generic})"
    if isinstance(inner, type) and issubclass(inner, Enum):
        namespace[f"_E{index}"] = inner
        return f"({var}._value_ if {var}.__class__ is _E{index} else {generic})"
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        namespace[f"_C{index}"] = inner
        flat = _flat_fields(inner)
        if flat is not None:
            # A small record of required scalars (a WorkerRef): its dict display
            # inline, one function call fewer per value (an event page has 100).
            items = ", ".join(
                f"{name!r}: ({var}.{name} if {var}.{name}.__class__ is {kind.__name__}"
                f" else _to_json({var}.{name}))"
                for name, kind in flat
            )
            return f"({{{items}}} if {var}.__class__ is _C{index} else {generic})"
        namespace[f"_enc{index}"] = _lazy(inner, namespace, f"_enc{index}")
        return f"(_enc{index}({var}) if {var}.__class__ is _C{index} else {generic})"
    if typing.get_origin(inner) is dict:
        return (
            f"({{_k if _k.__class__ is str else str(_k): _x if _x.__class__ in _S"
            f" else _to_json(_x) for _k, _x in {var}.items()}}"
            f" if {var}.__class__ is dict else {generic})"
        )
    if typing.get_origin(inner) is tuple:
        item = _without_none(typing.get_args(inner)[0])
        if item in (str, int, float, bool):
            namespace[f"_I{index}"] = item
            return (
                f"([_x if _x.__class__ is _I{index} else _to_json(_x) for _x in {var}]"
                f" if {var}.__class__ is tuple else {generic})"
            )
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            namespace[f"_C{index}"] = item
            namespace[f"_enc{index}"] = _lazy(item, namespace, f"_enc{index}")
            return (
                f"([_enc{index}(_x) if _x.__class__ is _C{index} else _to_json(_x)"
                f" for _x in {var}] if {var}.__class__ is tuple else {generic})"
            )
    return generic


def _flat_fields(cls: type) -> list[tuple[str, type]] | None:
    """``(name, type)`` of each field of dataclass ``cls`` when there are at most
    four and each is a required ``str``, ``int`` or ``float``, else None."""
    fields = dataclasses.fields(cls)
    if len(fields) > 4:
        return None
    hints = typing.get_type_hints(cls)
    flat = []
    for field in fields:
        kind = hints[field.name]
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if kind not in (str, int, float) or not required:
            return None
        flat.append((field.name, kind))
    return flat


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None`` (a union of more than one other type is left as is)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _lazy(cls: type, namespace: dict[str, Any], name: str) -> Encode:
    """The encoder of ``cls`` if built, else a stand-in that builds it on first
    call and puts it in its place in the generated code's ``namespace`` (built
    lazily: a type may refer to itself, and the build lock is held)."""
    found = _ENCODERS.get(cls)
    if found is not None:
        return found

    def encode(value: Any) -> Any:
        real = namespace[name] = encoder(cls)
        return real(value)

    return encode


# -- from JSON -------------------------------------------------------------------------


def from_json(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from already-validated JSON ``data``.

    Absent keys take the dataclass defaults (unknown keys are ignored);
    nested dataclasses, tuples, enums and optionals follow the type hints.
    """
    return typing.cast(T, converter(cls)(data))


def converter(tp: Any) -> Convert:
    """The function turning validated JSON data into a value of type ``tp``,
    built once from the type hints and then kept."""
    found = _CONVERTERS.get(tp)
    if found is None:
        found = _CONVERTERS[tp] = _build_converter(tp)
    return found


def _build_converter(tp: Any) -> Convert:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)][:1]
        convert = converter(inner)
        return lambda data: None if data is None else convert(data)
    if origin is tuple:
        item = converter(typing.get_args(tp)[0])
        return lambda data: tuple(item(v) for v in data)
    if origin is dict:
        return dict
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass_converter(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp
    if tp is float:
        return lambda data: float(data) if isinstance(data, int) else data
    if tp is int:
        # JSON Schema counts 2.0 as an integer; the handlers need a real int.
        return lambda data: int(data) if isinstance(data, float) else data
    return _identity


def _dataclass_converter(cls: type) -> Convert:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
    # Converters are looked up on first use: a type may refer to itself.
    plan: list[tuple[str, Convert]] = []

    def convert(data: Any) -> Any:
        if not plan:
            plan.extend((name, converter(hint)) for name, hint in fields)
        return cls(**{name: fn(data[name]) for name, fn in plan if name in data})

    return convert
