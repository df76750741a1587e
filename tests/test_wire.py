"""Wire forms: commands round-trip, results fit their schemas, schema errors name the field."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_runtime import Runtime, RuntimeConfig, errors, wire
from worker_runtime import commands as c
from worker_runtime import results as r
from worker_runtime.commands import RESULT_TYPES
from worker_runtime.domain import (
    MAX_REASON_CHARS,
    ConfigBundleRef,
    InputKind,
    OpaqueRef,
    WorkerIntent,
    WorkerStatus,
)
from worker_runtime.handlers import HANDLERS
from worker_runtime.testing import (
    GateEngine,
    ScriptEngine,
    fail_with,
    make_runtime,
    named,
    wait_for_run_end,
)
from worker_runtime.wire import (
    decode_command,
    encode_command,
    from_json,
    schema_document,
    to_json,
    validate_result,
)

from .support import strategies

ERROR_CODES = {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.WorkerRuntimeError)
}


def check_result(command: c.Command[Any], result: r.Result) -> dict[str, Any]:
    """Assert ``result`` is the command's result type, fits its schema and
    decodes back to an equal value (idempotent replays rely on that)."""
    result_type = RESULT_TYPES[type(command)]
    assert type(result) is result_type
    data: dict[str, Any] = json.loads(json.dumps(to_json(result)))
    validate_result(data, result_type.__name__)
    assert from_json(result_type, data) == result
    return data


def test_every_command_has_a_handler_a_result_and_schemas() -> None:
    defs = schema_document()["$defs"]
    assert set(HANDLERS) == set(RESULT_TYPES) == set(c.COMMANDS.values())
    for name, cls in c.COMMANDS.items():
        assert name in defs, f"no schema for command {name}"
        assert RESULT_TYPES[cls].__name__ in defs, f"no schema for the result of {name}"


@given(strategies.commands())
def test_every_command_round_trips_through_its_wire_form(command: c.Command[Any]) -> None:
    text = json.dumps(encode_command(command))
    assert decode_command(json.loads(text)) == command


@given(strategies.commands(), st.data())
def test_defaults_may_be_left_out_of_the_wire_form(command: c.Command[Any], data: Any) -> None:
    """A field at its default can be omitted and the command is the same."""
    wire = encode_command(command)
    defaults = {
        f.name
        for f in dataclasses.fields(command)
        if f.default is not dataclasses.MISSING
        and getattr(command, f.name) == f.default
        and f.name in wire["args"]
    }
    drop = data.draw(st.sets(st.sampled_from(sorted(defaults)))) if defaults else set()
    args = {k: v for k, v in wire["args"].items() if k not in drop}
    assert decode_command({"command": wire["command"], "args": args}) == command


def test_args_may_be_left_out_when_nothing_is_required() -> None:
    assert decode_command({"command": "GetRuntime"}) == c.GetRuntime()
    assert decode_command({"command": "ReadEvents"}) == c.ReadEvents()


WORKERS = st.sampled_from(["w1", "w2", "w3"])


@settings(max_examples=30)
@given(st.lists(strategies.commands(WORKERS, waits=st.just(0.0)), min_size=1, max_size=12))
def test_every_result_the_dispatcher_produces_fits_its_schema(
    script: list[c.Command[Any]],
) -> None:
    """Random command sequences over a few worker ids: every success fits its
    schema, every failure is a typed error whose wire form fits ``Error``."""
    with Runtime.open(RuntimeConfig(runtime_id="rt-wire")) as rt:
        for command in script:
            try:
                data = rt.dispatch_json(encode_command(command))
            except errors.WorkerRuntimeError as exc:
                assert exc.code in ERROR_CODES
                validate_result(exc.to_json(), "Error")
            else:
                validate_result(data, RESULT_TYPES[type(command)].__name__)


def test_each_kind_of_result_fits_its_schema() -> None:
    """One scripted pass through every command, reaching the optional parts
    (runs, errors, refs, diagnostics with a worker) that random scripts miss."""
    gate = GateEngine()
    failing = ScriptEngine(fail_with("the model is away"))
    with make_runtime({"gate": gate, "failing": failing}, display_name="wire") as rt:

        def run(command: c.Command[Any]) -> Any:
            result = rt.dispatch(command)
            check_result(command, result)
            return result

        create = c.CreateWorker(
            worker_id="full",
            display_name="Full",
            intent=WorkerIntent(kind="role", role="reviewer", purpose="check"),
            profile=named("gate"),
            config_bundle=ConfigBundleRef(id="bundle-1"),
            workspace_refs=(OpaqueRef(name="repo", reference="git:abc"),),
            mount_refs=(OpaqueRef(name="data", reference="vol:1"),),
        )
        run(create)
        run(c.CreateWorker(worker_id="bad", profile=named("failing")))
        ack = run(c.SendInput(worker_id="full", content="hello", kind=InputKind.SYSTEM))
        gate.wait_started(ack.run_id)
        run(c.GetWorker(worker_id="full"))  # with an active run
        run(c.CancelRun(worker_id="full", reason="enough"))
        run(c.CancelRun(worker_id="full", run_id=ack.run_id))  # names a finished run
        failed = run(c.SendInput(worker_id="bad", content="x"))
        wait_for_run_end(rt, failed.run_id)
        detail = run(c.GetWorker(worker_id="bad"))
        assert detail.last_error == "the model is away"
        run(c.StopWorker(worker_id="bad", reason="done"))
        run(c.StopWorker(worker_id="bad"))
        for command in (
            c.GetRuntime(),
            c.ListWorkers(limit=1),
            c.ListWorkers(status=WorkerStatus.STOPPED),
            c.GetTranscript(worker_id="bad", start=0, limit=1),
            c.ReadEvents(cursor=0, limit=3),
            c.GetDiagnostics(),
        ):
            run(command)


BAD_WIRE = [
    # (wire, code, field)
    ([], "invalid_request", "/command"),
    ({"args": {}}, "invalid_request", "/command"),
    ({"command": "Frobnicate"}, "invalid_request", "/command"),
    ({"command": "GetRuntime", "args": {}, "extra": 1}, "invalid_request", "/"),
    ({"command": "GetRuntime", "args": []}, "invalid_request", "/args"),
    ({"command": "GetWorker", "args": {}}, "invalid_request", "/args/worker_id"),
    (
        {"command": "GetWorker", "args": {"worker_id": "../etc"}},
        "invalid_worker_id",
        "/args/worker_id",
    ),
    (
        {"command": "GetWorker", "args": {"worker_id": "w\n"}},
        "invalid_worker_id",
        "/args/worker_id",
    ),
    ({"command": "GetWorker", "args": {"worker_id": 7}}, "invalid_worker_id", "/args/worker_id"),
    ({"command": "CreateWorker", "args": {"bogus": 1}}, "invalid_request", "/args/bogus"),
    ({"command": "CreateWorker", "args": {"a/b": 1}}, "invalid_request", "/args/a~1b"),
    (
        {"command": "CreateWorker", "args": {"intent": {"kind": "task"}}},
        "invalid_request",
        "/args/intent/objective",
    ),
    (
        {"command": "CreateWorker", "args": {"profile": {"kind": "named"}}},
        "invalid_request",
        "/args/profile/value",
    ),
    (
        {"command": "CreateWorker", "args": {"requested_capabilities": [{"name": "a b"}]}},
        "invalid_request",
        "/args/requested_capabilities/0/name",
    ),
    (
        {"command": "SendInput", "args": {"worker_id": "w", "content": ""}},
        "invalid_request",
        "/args/content",
    ),
    (
        {"command": "SendInput", "args": {"worker_id": "w", "content": "x", "kind": "assistant"}},
        "invalid_request",
        "/args/kind",
    ),
    ({"command": "ListWorkers", "args": {"limit": 0}}, "invalid_request", "/args/limit"),
    ({"command": "ListWorkers", "args": {"status": "zombie"}}, "invalid_request", "/args/status"),
    ({"command": "ReadEvents", "args": {"wait": -1}}, "invalid_request", "/args/wait"),
    ({"command": "ReadEvents", "args": {"cursor": True}}, "invalid_request", "/args/cursor"),
    (
        {"command": "GetTranscript", "args": {"worker_id": "w", "start": 1.5}},
        "invalid_request",
        "/args/start",
    ),
    (
        {"command": "CancelRun", "args": {"worker_id": "w", "run_id": "r\n"}},
        "invalid_request",
        "/args/run_id",
    ),
]


@pytest.mark.parametrize(("wire", "code", "field"), BAD_WIRE)
def test_schema_errors_point_at_the_field(wire: Any, code: str, field: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        decode_command(wire)
    assert caught.value.code == code
    assert caught.value.details["field"] == field
    validate_result(caught.value.to_json(), "Error")


def test_integral_floats_become_ints(runtime: Runtime) -> None:
    """JSON Schema counts 1.0 as an integer; the handler must get an int, not crash."""
    runtime.dispatch(c.CreateWorker(worker_id="w"))
    command = decode_command(
        {"command": "GetTranscript", "args": {"worker_id": "w", "start": 1.0, "limit": 2.0}}
    )
    assert command == c.GetTranscript(worker_id="w", start=1, limit=2)
    assert type(command.start) is int and type(command.limit) is int
    page = runtime.dispatch_json(encode_command(command))
    assert page["start"] == 1 and page["limit"] == 2


def test_in_process_create_values_get_the_schema_check(runtime: Runtime) -> None:
    """Typed callers skip decode_command; a bad nested value is still refused,
    so no stored worker can later produce a result that breaks its schema."""
    bad = WorkerIntent(kind="task")  # a task needs an objective
    with pytest.raises(errors.InvalidRequest) as caught:
        runtime.dispatch(c.CreateWorker(intent=bad))
    assert caught.value.details["field"] == "/intent/objective"


def test_the_error_schema_rejects_what_is_not_an_error() -> None:
    """The check above can fail: the Error schema is not an accept-all."""
    with pytest.raises(jsonschema.ValidationError):
        validate_result({"code": "x"}, "Error")


def test_the_reason_bound_is_the_schemas() -> None:
    """In-process stop and cancel refuse the reasons the wire form refuses."""
    assert wire.schema_document()["$defs"]["Reason"]["anyOf"][0]["maxLength"] == MAX_REASON_CHARS
