"""The generic ``to_json`` as it was before per-class encoders: the reference
the generated encoders are tested against (byte for byte)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from enum import Enum
from typing import Any

from worker_runtime.codec import SCALARS


def reference_to_json(value: Any) -> Any:
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
                data[name] = v if type(v) in SCALARS else reference_to_json(v)
        return data
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [reference_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): reference_to_json(v) for k, v in value.items()}
    return value


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, optional) per field. Optional fields (default None) are left out
    of the JSON when unset; required nullable ones are kept as an explicit null."""
    return tuple((f.name, f.default is None) for f in dataclasses.fields(cls))
