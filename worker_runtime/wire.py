"""The JSON wire form of commands and results, checked against the package schemas.

``to_json``/``from_json`` (re-exported from ``codec``) turn values into plain JSON data and back.
``decode_command`` validates a wire command with ``jsonschema`` and builds the
typed command; ``validate_result`` checks a result's JSON against its schema.
The schemas live in ``schemas/worker_runtime.json`` (one ``$defs`` entry per
command and per result) and are loaded once with ``importlib.resources``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from .codec import SCALARS, from_json, to_json
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
        if kind not in SCALARS or (kind is str and len(value) > _MEMO_TEXT):
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
