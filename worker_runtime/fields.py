"""Type checks of an in-process command's fields, so a wrong type is a typed error.

A wire command is checked by its JSON schema when decoded; a command built in
Python skips that, and ``SendInput(content=5)`` would otherwise reach the
handler and fail with a ``TypeError``. :func:`check_fields` compares each
top-level field with its declared type (nested values of ``CreateWorker`` get
the full schema check in its handler) and raises ``InvalidRequest`` naming
the field. The per-class plan is built once, so a check costs a few ``type()``
lookups per field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from .commands import Command
from .errors import InvalidRequest

__all__ = ["check_fields"]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class _Field:
    name: str
    exact: frozenset[type]
    """Types accepted as they are (the fast path: ``type(value) in exact``)."""
    accepted: tuple[type, ...]
    """Types accepted by ``isinstance`` (subclasses), booleans aside."""
    nullable: bool
    items: tuple[type, ...] | None
    """For a tuple field, the type its items must have."""
    expected: str


def check_fields(command: Command[Any]) -> None:
    """Raise ``InvalidRequest`` (``details.field``) unless every field of
    ``command`` has its declared type."""
    for spec in _plan(type(command)):
        value = getattr(command, spec.name)
        kind = type(value)
        if kind in spec.exact:
            if spec.items is None or all(isinstance(v, spec.items) for v in value):
                continue
        elif (value is None and spec.nullable) or (
            isinstance(value, spec.accepted) and (bool in spec.exact or kind is not bool)
        ):
            continue
        raise InvalidRequest(
            f"{spec.name} must be {spec.expected}, not {kind.__name__}",
            details={"field": spec.name, "reason": f"expected {spec.expected}"},
        )


_PLANS: dict[type, tuple[_Field, ...]] = {}


def _plan(cls: type) -> tuple[_Field, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _make_plan(cls)
    return plan


def _make_plan(cls: type) -> tuple[_Field, ...]:
    if not dataclasses.is_dataclass(cls):
        return ()
    hints = typing.get_type_hints(cls)
    return tuple(_field(f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _field(name: str, hint: Any) -> _Field:
    nullable = False
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(options) < len(typing.get_args(hint))
        hint = options[0] if len(options) == 1 else object
        origin = typing.get_origin(hint)
    items: tuple[type, ...] | None = None
    if origin is tuple:
        item = typing.get_args(hint)[0]
        items = (item,) if isinstance(item, type) else (object,)
        accepted: tuple[type, ...] = (tuple,)
        expected = f"a tuple of {items[0].__name__}"
    elif origin is not None:
        base = origin if isinstance(origin, type) else object
        accepted = (Mapping,) if issubclass(base, Mapping) else (base,)
        expected = _describe(accepted[0])
    elif hint is float:
        accepted, expected = (float, int), "a number"
    elif isinstance(hint, type):
        accepted, expected = (hint,), _describe(hint)
    else:
        accepted, expected = (object,), "any value"
    if nullable:
        expected += " or None"
    return _Field(
        name=name,
        exact=frozenset(accepted),
        accepted=accepted,
        nullable=nullable,
        items=items,
        expected=expected,
    )


def _describe(tp: type) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", Mapping: "a mapping"}
    return names.get(tp, f"a {tp.__name__}")
