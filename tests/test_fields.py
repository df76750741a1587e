"""In-process commands with a wrong field type fail as ``invalid_request`` naming
the field, never as a ``TypeError`` from deep inside a handler."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from worker_runtime import Runtime, errors
from worker_runtime import commands as c
from worker_runtime.domain import BusyPolicy, InputKind, WorkerIntent, WorkerStatus

VALID: dict[type[c.Command[Any]], c.Command[Any]] = {
    c.GetRuntime: c.GetRuntime(),
    c.ListWorkers: c.ListWorkers(status=WorkerStatus.IDLE, limit=5, after="w"),
    c.GetWorker: c.GetWorker(worker_id="w"),
    c.CreateWorker: c.CreateWorker(worker_id="w2", display_name="two"),
    c.SendInput: c.SendInput(
        worker_id="w", content="hi", kind=InputKind.USER, on_busy=BusyPolicy.ENQUEUE
    ),
    c.StopWorker: c.StopWorker(worker_id="w", reason="done"),
    c.CancelRun: c.CancelRun(worker_id="w", run_id="run-1", reason="why"),
    c.GetTranscript: c.GetTranscript(worker_id="w", start=0, limit=5),
    c.ReadEvents: c.ReadEvents(cursor=0, limit=5, wait=0.0, worker_id="w"),
    c.GetDiagnostics: c.GetDiagnostics(after=0, limit=5),
    c.ListRuns: c.ListRuns(worker_id="w", limit=5, after="run-1"),
    c.GetRun: c.GetRun(worker_id="w", run_id="run-1", wait=0.0),
    c.DeleteWorker: c.DeleteWorker(worker_id="w"),
}


class Opaque:
    """A value of no field's type."""


def wrong_fields() -> list[tuple[c.Command[Any], str]]:
    cases = []
    for command in VALID.values():
        for field in dataclasses.fields(command):
            cases.append((dataclasses.replace(command, **{field.name: Opaque()}), field.name))
    return cases


def test_every_command_is_covered() -> None:
    assert set(VALID) == set(c.COMMANDS.values())


@pytest.mark.parametrize(
    ("command", "field"),
    wrong_fields(),
    ids=lambda v: type(v).__name__ if isinstance(v, c.Command) else v,
)
def test_a_field_of_the_wrong_type_is_invalid_request(
    runtime: Runtime, command: c.Command[Any], field: str
) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        runtime.dispatch(command)
    assert caught.value.code == "invalid_request"
    assert caught.value.details["field"] == field


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (c.SendInput(worker_id="w", content=5), "content"),  # type: ignore[arg-type]
        (c.ListWorkers(limit="5"), "limit"),  # type: ignore[arg-type]
        (c.ReadEvents(wait="1"), "wait"),  # type: ignore[arg-type]
        (c.ReadEvents(cursor=True), "cursor"),  # JSON tells booleans from integers
        (c.GetTranscript(worker_id="w", start=1.5), "start"),  # type: ignore[arg-type]
        (c.ListWorkers(status="idle"), "status"),  # type: ignore[arg-type]
        (c.SendInput(worker_id="w", content="x", kind="user"), "kind"),  # type: ignore[arg-type]
        (c.CreateWorker(intent={"kind": "assistant"}), "intent"),  # type: ignore[arg-type]
        (c.CreateWorker(workspace_refs=("ws",)), "workspace_refs"),  # type: ignore[arg-type]
        (c.CreateWorker(workspace_refs=["ws"]), "workspace_refs"),  # type: ignore[arg-type]
        (c.GetWorker(worker_id=None), "worker_id"),  # type: ignore[arg-type]
        (c.SendInput(worker_id="w", content="x", on_busy="enqueue"), "on_busy"),  # type: ignore[arg-type]
        (c.ReadEvents(worker_id=5), "worker_id"),  # type: ignore[arg-type]
        (c.GetRun(worker_id="w", run_id="r", wait="1"), "wait"),  # type: ignore[arg-type]
        (c.ListRuns(worker_id="w", after=3), "after"),  # type: ignore[arg-type]
    ],
)
def test_named_examples_are_invalid_request(
    runtime: Runtime, command: c.Command[Any], field: str
) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        runtime.dispatch(command)
    assert caught.value.details["field"] == field
    assert field in caught.value.message


def test_right_types_pass_including_ints_for_floats_and_none_where_optional(
    runtime: Runtime,
) -> None:
    assert runtime.dispatch(c.ReadEvents(cursor=1, wait=0)).cursor.next_event_id >= 1
    assert runtime.dispatch(c.ListWorkers(limit=None, status=None)).workers == ()
    worker = runtime.dispatch(c.CreateWorker(intent=WorkerIntent(kind="assistant")))
    assert runtime.dispatch(c.GetWorker(worker_id=worker.worker_id)).worker_id == worker.worker_id
