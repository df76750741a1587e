"""The JSON wire form of commands and results, checked against the package schemas.

``to_json`` turns any command, result or domain value into plain JSON data.
``decode_command`` validates a wire command with ``jsonschema`` and builds the
typed command; ``validate_result`` checks a result's JSON against its schema.
The schemas live in ``schemas/worker_runtime.json`` (one ``$defs`` entry per
command and per result) and are loaded once with ``importlib.resources``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from enum import Enum
from importlib import resources
from typing import Any, TypeVar

import jsonschema
from jsonschema.exceptions import best_match

from .commands import COMMANDS, Command
from .errors import InvalidRequest, InvalidWorkerId

__all__ = [
    "check_command",
    "decode_command",
    "encode_command",
    "from_json",
    "schema_document",
    "to_json",
    "validate_result",
    "validator_for",
]

T = TypeVar("T")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def to_json(value: Any) -> Any:
    """Plain JSON data (dicts, lists, str, int, float, bool, None) for ``value``."""
    tp: type = type(value)
    if tp in _SCALARS:  # exact types: a StrEnum is a str but must become its value
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
                data[name] = v if type(v) in _SCALARS else to_json(v)
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


@functools.cache
def schema_document() -> dict[str, Any]:
    """The package's schema document (a JSON Schema 2020-12 with ``$defs``)."""
    text = resources.files(__package__).joinpath("schemas/worker_runtime.json").read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


@functools.cache
def validator_for(name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``$defs/<name>`` (a command's args or a result)."""
    defs = schema_document()["$defs"]
    if name not in defs:
        raise KeyError(name)
    # Resolving each $ref on every validation costs more than the checks
    # themselves, so references are inlined once here (recursive ones stay).
    schema = {**_inline(defs[name], defs, (name,)), "$defs": defs}
    return jsonschema.Draft202012Validator(schema)


def _inline(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    """``node`` with each bare ``{"$ref": "#/$defs/X"}`` replaced by ``X`` itself."""
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = ref.removeprefix("#/$defs/")
        if target in defs and target not in seen:
            return _inline(defs[target], defs, (*seen, target))
    return {key: _inline(value, defs, seen) for key, value in node.items()}


def _pointer(path: Any) -> str:
    """A JSON Pointer (RFC 6901) to ``path``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path) or "/"


def _field(error: jsonschema.ValidationError) -> list[Any]:
    """The path of the offending field: for a missing or an unexpected
    property, the property itself rather than the object holding it."""
    path = list(error.absolute_path)
    instance, schema, expected = error.instance, error.schema, error.validator_value
    if isinstance(instance, Mapping) and isinstance(schema, Mapping):
        if error.validator == "required" and isinstance(expected, list):
            path += [p for p in expected if p not in instance][:1]
        elif error.validator == "additionalProperties":
            path += [k for k in instance if k not in schema.get("properties", {})][:1]
    return path


def _check(name: str, data: Any, prefix: str) -> None:
    error = best_match(validator_for(name).iter_errors(data))
    if error is None:
        return
    # An unexpected key is caller-chosen text: keep the pointer short.
    field = (prefix + _pointer(_field(error)).rstrip("/"))[:300]
    details = {"field": field or "/", "reason": error.message[:300]}
    # A malformed worker id is the one schema failure with its own code.
    if list(error.absolute_path)[-1:] == ["worker_id"]:
        raise InvalidWorkerId("worker_id is not a valid worker id", details=details)
    raise InvalidRequest(f"{field or 'request'}: {error.message[:300]}", details=details)


def decode_command(wire: Any) -> Command[Any]:
    """Validate ``{"command": NAME, "args": {...}}`` and return the typed command.

    Raises ``InvalidRequest`` (with ``details.field`` pointing at the fault)
    or ``InvalidWorkerId``.
    """
    if not isinstance(wire, Mapping) or not isinstance(wire.get("command"), str):
        raise InvalidRequest(
            'expected {"command": NAME, "args": {...}}', details={"field": "/command"}
        )
    name = wire["command"]
    cls = COMMANDS.get(name)
    if cls is None:
        raise InvalidRequest(f"unknown command {name!r}", details={"field": "/command"})
    if set(wire) - {"command", "args"}:
        raise InvalidRequest("unexpected keys beside command and args", details={"field": "/"})
    args = wire.get("args", {})
    key = _memo_key(name, args)
    if key is not None:
        return _decode_small(key)
    _check(name, args, "/args")
    return from_json(cls, args)


_MEMO_TEXT = 256


def _memo_key(name: str, args: Any) -> tuple[Any, ...] | None:
    """A hashable key for small all-scalar args (reads, mostly), else None.

    Each value's exact type is part of the key: ``True == 1 == 1.0`` in Python,
    but the schema tells them apart."""
    if type(args) is not dict or len(args) > 8:
        return None
    items = []
    for field, value in args.items():
        kind = type(value)
        if kind not in _SCALARS or (kind is str and len(value) > _MEMO_TEXT):
            return None
        items.append((field, kind, value))
    return (name, *items)


@functools.lru_cache(maxsize=4096)
def _decode_small(key: tuple[Any, ...]) -> Command[Any]:
    # Validation depends on nothing but the args, and commands are frozen, so
    # a validated command can be handed out again: the hot read paths (GET a
    # worker, a transcript page, an event page) skip jsonschema on repeats.
    name, *items = key
    args = {field: value for field, _kind, value in items}
    _check(name, args, "/args")
    return from_json(COMMANDS[name], args)


def check_command(command: Command[Any]) -> None:
    """Validate an in-process command's values against its wire schema.

    Typed callers skip ``decode_command``; this gives them the same checks
    (and the same ``InvalidRequest`` pointing at the field).
    """
    _check(type(command).__name__, to_json(command), "")


def encode_command(command: Command[Any]) -> dict[str, Any]:
    """The wire form of ``command``; ``decode_command`` turns it back into an equal one."""
    return {"command": type(command).__name__, "args": to_json(command)}


def validate_result(result_json: Any, name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``result_json`` fits ``$defs/<name>``."""
    validator_for(name).validate(result_json)
