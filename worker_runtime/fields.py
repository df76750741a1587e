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
import operator
import types
import typing
from collections.abc import Callable, Mapping
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
    checker_for(type(command))(command)


def checker_for(cls: type) -> Callable[[Any], None]:
    """:func:`check_fields` for commands of class ``cls``, built once (the
    dispatcher keeps one per registered command)."""
    check = _CHECKERS.get(cls)
    if check is None:
        check = _CHECKERS[cls] = _build_checker(_make_plan(cls))
    return check


def _build_checker(fields: tuple[_Field, ...]) -> Callable[[Any], None]:
    # Tuple fields need their items looked at: never on the fast path.
    none: frozenset[type] = frozenset({type(None)})
    exact = tuple(
        frozenset() if f.items is not None else f.exact | (none if f.nullable else frozenset())
        for f in fields
    )
    names = [f.name for f in fields]
    if not names:
        return lambda command: None
    values = operator.attrgetter(*names) if len(names) > 1 else None
    name = names[0]
    contains = frozenset.__contains__

    def check(command: Any) -> None:
        found = values(command) if values is not None else (getattr(command, name),)
        # The common case, all in C: each value's exact type is in its field's set.
        if all(map(contains, exact, map(type, found))):
            return
        for spec in fields:
            _check_field(spec, getattr(command, spec.name))

    return check


def _check_field(spec: _Field, value: Any) -> None:
    kind = type(value)
    if value is None and spec.nullable:
        return
    if spec.items is not None:
        if isinstance(value, tuple) and all(isinstance(v, spec.items) for v in value):
            return
    elif isinstance(value, spec.accepted) and (bool in spec.accepted or kind is not bool):
        return
    raise InvalidRequest(
        f"{spec.name} must be {spec.expected}, not {kind.__name__}",
        details={"field": spec.name, "reason": f"expected {spec.expected}"},
    )


_CHECKERS: dict[type, Callable[[Any], None]] = {}


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
        exact=frozenset({dict} if accepted == (Mapping,) else accepted),
        accepted=accepted,
        nullable=nullable,
        items=items,
        expected=expected,
    )


def _describe(tp: type) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", Mapping: "a mapping"}
    return names.get(tp, f"a {tp.__name__}")
