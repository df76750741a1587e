"""The generated per-class encoders give exactly what the generic walk gave:
the same plain data (same types, same key order) and so the same bytes, for
hypothesis-generated commands, results and records; and ``from_json`` (one
converter per type) builds back what was encoded."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from worker_runtime import commands as c
from worker_runtime import domain as d
from worker_runtime import results as r
from worker_runtime.codec import from_json, to_json
from worker_runtime.commands import RESULT_TYPES
from worker_runtime.testing import reference_to_json

from .support import strategies

RECORDS = (d.WorkerRecord, d.Event, d.Diagnostic, d.TranscriptEntry, d.Run, d.RuntimeRecord)
values = st.one_of(
    strategies.commands(),
    *(st.from_type(cls) for cls in {*RESULT_TYPES.values(), *RECORDS}),
)


def same_shape(a: Any, b: Any) -> None:
    """``a`` and ``b`` are the same plain data: equal, type for type, key order included."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            same_shape(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same_shape(x, y)
    elif a == a:  # NaN is the one value unequal to itself
        assert a == b


def encodings(data: Any) -> tuple[str, str]:
    return (
        json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        json.dumps(data),
    )


@given(values)
def test_generated_encoders_match_the_generic_walk(value: Any) -> None:
    new, old = to_json(value), reference_to_json(value)
    same_shape(new, old)
    assert encodings(new) == encodings(old)


@given(st.from_type(d.WorkerRecord), st.sampled_from(["idle", "running"]))
def test_a_value_of_an_unexpected_type_takes_the_generic_path(
    record: d.WorkerRecord, status: str
) -> None:
    # A plain str where the hint says WorkerStatus, a list where it says tuple:
    # the output is still the generic walk's.
    odd = dataclasses.replace(
        record,
        status=status,  # type: ignore[arg-type]
        workspace_refs=list(record.workspace_refs),  # type: ignore[arg-type]
    )
    same_shape(to_json(odd), reference_to_json(odd))


@given(st.one_of(*(st.from_type(cls) for cls in (d.WorkerRecord, d.Event, r.TranscriptPage))))
def test_from_json_builds_back_what_was_encoded(value: Any) -> None:
    data = to_json(value)
    rebuilt = from_json(type(value), data)
    assert encodings(to_json(rebuilt)) == encodings(data)


def test_scalars_enums_and_containers_outside_dataclasses() -> None:
    mixed = {"s": d.WorkerStatus.IDLE, 1: (d.Role.USER, [None, 2.5]), "n": c.GetRuntime()}
    same_shape(to_json(mixed), reference_to_json(mixed))
    assert to_json(d.WorkerStatus.STOPPED) == "stopped"
    assert type(to_json(d.WorkerStatus.STOPPED)) is str
