"""The OpenAPI document: valid 3.1, built from the core's own schemas, covering every route."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from adapters.openapi import build_openapi
from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.commands import CreateWorker, GetRuntime, SendInput
from worker_runtime.routes import ROUTES as ROUTES_TABLE
from worker_runtime.testing import wait_until
from worker_runtime.wire import schema_document

from .support.http_helpers import AUTH, ROUTES, SPEC_CODES, client, error_code


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(RuntimeConfig())


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_component_schemas_are_the_core_schemas(document: dict[str, Any]) -> None:
    core = json.dumps(schema_document()["$defs"], sort_keys=True)
    core = core.replace('"#/$defs/', '"#/components/schemas/')
    served = {k: v for k, v in document["components"]["schemas"].items() if k != "ErrorEnvelope"}
    assert json.dumps(served, sort_keys=True) == core


def test_no_reference_dangles(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert "#/$defs/" not in text
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = document
        for part in ref.split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_every_route_is_documented_and_nothing_else(document: dict[str, Any]) -> None:
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == {*ROUTES, ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def test_only_the_probes_are_open(document: dict[str, Any]) -> None:
    assert document["security"] == [{"bearer": []}]
    open_ops = [
        path
        for path, item in document["paths"].items()
        for op in item.values()
        if isinstance(op, dict) and op.get("security") == []
    ]
    assert open_ops == ["/healthz", "/readyz"]


def test_parameter_maxima_follow_the_runtime_limits() -> None:
    document = build_openapi(RuntimeConfig(max_worker_page=7, max_event_wait_s=3.0))
    params = {p["name"]: p["schema"] for p in document["paths"]["/v1/workers"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 7
    events = {p["name"]: p["schema"] for p in document["paths"]["/v1/events"]["get"]["parameters"]}
    assert events["wait"]["maximum"] == 3.0


def test_input_body_omits_the_path_worker_id(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/workers/{worker_id}/input"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert "worker_id" not in schema["properties"]
    assert schema["required"] == ["content"]
    assert body["required"] is True


def test_served_document_matches_the_runtime(document: dict[str, Any]) -> None:
    runtime = Runtime.open()
    try:
        served = client(runtime).simulate_get("/v1/openapi.json", headers=AUTH)
    finally:
        runtime.close()
    assert served.status_code == 200
    assert served.json == json.loads(json.dumps(document))


# -- honesty: what the document allows, the runtime takes ---------------------------


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method.lower()]
    return operation


def _query_schemas(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = _operation(document, method, path)
    parameters = operation.get("parameters", [])
    return {p["name"]: p["schema"] for p in parameters if p["in"] == "query"}


def test_every_integer_query_parameter_has_a_maximum(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method in item:
            for name, schema in _query_schemas(document, method, path).items():
                if schema.get("type") in ("integer", "number"):
                    assert "maximum" in schema, (method, path, name)
    diagnostics = _query_schemas(document, "GET", "/v1/diagnostics")
    assert diagnostics["limit"]["maximum"] == RuntimeConfig().max_event_page


@pytest.fixture
def served() -> Iterator[tuple[Any, dict[str, Any]]]:
    runtime = Runtime.open()
    try:
        runtime.dispatch(CreateWorker(worker_id="w"))
        # A run to name in /runs/{run_id} (its id is generated).
        _RUN["id"] = runtime.dispatch(SendInput(worker_id="w", content="hi")).run_id
        c = client(runtime)
        yield c, c.simulate_get("/v1/openapi.json", headers=AUTH).json
    finally:
        runtime.close()


_RUN: dict[str, str] = {}


def _bounded_parameters(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for route in ROUTES_TABLE:
        for name, schema in _query_schemas(document, route.method, route.path).items():
            if "maximum" in schema:
                path = route.path.replace("{worker_id}", "w").replace("{run_id}", _RUN["id"])
                found.append((path, name, schema))
    return found


def test_the_documented_maximum_of_every_parameter_is_accepted(
    served: tuple[Any, dict[str, Any]],
) -> None:
    """A 19-digit start, cursor or after is within the document, so it is taken."""
    c, document = served
    bounded = _bounded_parameters(document)
    assert {name for _, name, _ in bounded} >= {"start", "cursor", "after", "limit", "wait"}
    for path, name, schema in bounded:
        top = schema["maximum"]
        value = str(top) if schema["type"] == "integer" else f"{top:g}"
        if name == "wait":
            value = "0"  # its bound is checked below, without holding the test
        result = c.simulate_get(path, params={name: value}, headers=AUTH)
        if name == "cursor":
            # Taken, and answered as SPEC section 3 says for a cursor past the log.
            assert error_code(result) == "cursor_ahead", (path, name, value, result.json)
            continue
        assert result.status_code == 200, (path, name, value, result.json)


def test_one_past_the_documented_maximum_is_refused(served: tuple[Any, dict[str, Any]]) -> None:
    c, document = served
    for path, name, schema in _bounded_parameters(document):
        past = schema["maximum"] + 1
        value = str(past) if schema["type"] == "integer" else f"{past:g}"
        result = c.simulate_get(path, params={name: value}, headers=AUTH)
        assert result.status_code == 400, (path, name, value)
        assert error_code(result) in {"invalid_query", "limit_too_large"}


def test_input_content_is_bounded_by_the_runtime_limit() -> None:
    document = build_openapi(RuntimeConfig(max_input_chars=10))
    body = _operation(document, "POST", "/v1/workers/{worker_id}/input")["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["content"]["maxLength"] == 10


def test_each_operation_lists_only_its_own_errors(document: dict[str, Any]) -> None:
    def statuses(method: str, path: str) -> set[str]:
        return {s for s in _operation(document, method, path)["responses"] if s[0] in "45"}

    assert statuses("GET", "/v1/runtime") == {"400", "401", "403", "413", "503", "504"}
    assert "404" in statuses("GET", "/v1/workers/{worker_id}")
    assert "409" not in statuses("GET", "/v1/workers/{worker_id}")
    assert "422" in statuses("POST", "/v1/workers")
    assert "422" not in statuses("POST", "/v1/workers/{worker_id}/input")
    assert "415" not in statuses("GET", "/v1/events")
    conflict = _operation(document, "POST", "/v1/workers/{worker_id}/input")["responses"]["409"]
    codes = conflict["content"]["application/json"]["schema"]["properties"]["error"]
    assert set(codes["properties"]["code"]["enum"]) == {
        "idempotency_key_reused",
        "worker_busy",
        "worker_stopped",
    }


def test_every_documented_code_is_in_the_spec_table_for_its_status(
    document: dict[str, Any],
) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status[0] not in "45" or (path, status) == ("/readyz", "503"):
                    continue  # /readyz's 503 is a readiness answer, not an error
                error = response["content"]["application/json"]["schema"]["properties"]["error"]
                codes = set(error["properties"]["code"]["enum"])
                assert codes <= SPEC_CODES[int(status)], (method, path, status, codes)


# (method, path, body or None, query) -> an error the operation must document.
REFUSALS: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", "/v1/workers", None, {"after": "nobody"}),
    ("GET", "/v1/workers", None, {"limit": "100000"}),
    ("GET", "/v1/workers", None, {"bogus": "1"}),
    ("GET", "/v1/workers/ghost", None, {}),
    ("GET", "/v1/workers/w%0A", None, {}),
    ("POST", "/v1/workers", {"worker_id": "w"}, {}),
    ("POST", "/v1/workers", {"profile": {"kind": "named", "value": "nope"}}, {}),
    ("POST", "/v1/workers", {"requested_capabilities": [{"name": "shell"}]}, {}),
    ("POST", "/v1/workers", {"config_bundle": {"id": "b\n"}}, {}),
    ("POST", "/v1/workers/w/input", {}, {}),
    ("POST", "/v1/workers/w/input", {"worker_id": "x", "content": "hi"}, {}),
    ("POST", "/v1/workers/ghost/stop", {}, {}),
    ("POST", "/v1/workers/w/cancel", {"run_id": "never"}, {}),
    ("POST", "/v1/workers/w/cancel", {"run_id": "r\n"}, {}),
    ("GET", "/v1/workers/w/transcript", None, {"start": "-1"}),
    ("GET", "/v1/events", None, {"wait": "31"}),
    ("GET", "/v1/diagnostics", None, {"limit": "0"}),
    ("GET", "/v1/events", None, {"cursor": "99999"}),
    ("GET", "/v1/events", None, {"worker_id": "ghost"}),
    ("GET", "/v1/workers/w/runs", None, {"after": "never"}),
    ("GET", "/v1/workers/w/runs/never", None, {}),
    ("DELETE", "/v1/workers/w", None, {}),
]


def _template(method: str, path: str) -> str:
    for route in ROUTES_TABLE:
        pattern = re.escape(route.path).replace(r"\{worker_id\}", "[^/]+")
        pattern = pattern.replace(r"\{run_id\}", "[^/]+")
        if route.method == method and re.fullmatch(pattern, path):
            return route.path
    raise LookupError(path)


@pytest.mark.parametrize(("method", "path", "body", "query"), REFUSALS)
def test_refusals_are_documented_for_their_operation(
    served: tuple[Any, dict[str, Any]],
    method: str,
    path: str,
    body: Any,
    query: dict[str, str],
) -> None:
    c, document = served
    result = c.simulate_request(method, path, json=body, params=query, headers=AUTH)
    assert 400 <= result.status_code < 500, result.json
    response = _operation(document, method, _template(method, path))["responses"]
    assert str(result.status_code) in response, (result.status_code, result.json)
    schema = response[str(result.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(result.json, schema)  # the code is in that status's enum


def test_the_id_pattern_is_portable_and_a_trailing_newline_is_still_refused(
    document: dict[str, Any],
) -> None:
    identifier = document["components"]["schemas"]["Id"]
    assert "(?" not in identifier["pattern"]  # no look-around: RE2 tools take it
    check = jsonschema.Draft202012Validator(identifier)
    assert check.is_valid("w-1.a_b")
    assert not check.is_valid("w\n")
    assert not check.is_valid("w\nx")


def test_timestamps_are_date_times(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["Timestamp"]["format"] == "date-time"


@pytest.mark.parametrize("union", ["WorkerIntent", "ProfileSelector"])
def test_unions_are_one_of_with_a_discriminator(document: dict[str, Any], union: str) -> None:
    schema = document["components"]["schemas"][union]
    assert schema["discriminator"]["propertyName"] == "kind"
    mapping = schema["discriminator"]["mapping"]
    assert sorted(mapping.values()) == sorted(b["$ref"] for b in schema["oneOf"])
    for kind, ref in mapping.items():
        branch = document["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
        assert branch["properties"]["kind"] == {"const": kind}


_TEXTS = st.one_of(st.text(max_size=3), st.integers(), st.none())


@settings(max_examples=300, deadline=None)
@given(
    union=st.sampled_from(["WorkerIntent", "ProfileSelector"]),
    value=st.dictionaries(
        st.sampled_from(["kind", "purpose", "objective", "role", "value", "other"]),
        st.one_of(
            st.sampled_from(["assistant", "task", "role", "runtime_default", "builtin", "named"]),
            _TEXTS,
        ),
    ),
)
def test_the_one_of_and_the_conditionals_agree(union: str, value: dict[str, Any]) -> None:
    """The union is written twice (oneOf for tools, conditionals for pointed
    errors): they accept exactly the same values."""
    defs = schema_document()["$defs"]
    schema = defs[union]
    one_of = {"$defs": defs, "oneOf": schema["oneOf"]}
    conditionals = {"$defs": defs, **{k: v for k, v in schema.items() if k != "oneOf"}}
    assert jsonschema.Draft202012Validator(one_of).is_valid(value) == (
        jsonschema.Draft202012Validator(conditionals).is_valid(value)
    )


def test_only_long_polls_declare_retry_after_on_success(document: dict[str, Any]) -> None:
    for route in ROUTES_TABLE:
        success = _operation(document, route.method, route.path)["responses"][str(route.status)]
        assert ("Retry-After" in success["headers"]) is route.long_poll, route.operation_id
    assert {r.operation_id for r in ROUTES_TABLE if r.long_poll} == {"readEvents", "getRun"}


def test_a_wait_without_a_free_slot_is_answered_as_documented() -> None:
    """One waiter slot, held: both long-polls answer at once, 200 with
    ``Retry-After: 1``, headers and body as their 200 response says."""
    runtime = Runtime.open(RuntimeConfig(max_waiters=1))
    held = threading.Thread(target=lambda: None)
    try:
        c = client(runtime)
        document = c.simulate_get("/v1/openapi.json", headers=AUTH).json
        runtime.dispatch(CreateWorker(worker_id="w"))
        run_id = runtime.dispatch(SendInput(worker_id="w", content="hi")).run_id
        # A wait on a worker nothing happens to: only the close answers it.
        runtime.dispatch(CreateWorker(worker_id="quiet"))
        cursor = runtime.dispatch(GetRuntime()).last_event_id + 1
        ahead = {"cursor": str(cursor), "worker_id": "quiet", "wait": "20"}
        held = threading.Thread(
            target=lambda: c.simulate_get("/v1/events", params=ahead, headers=AUTH)
        )
        held.start()
        wait_until(lambda: runtime.dispatch(GetRuntime()).waiters == 1, what="the held wait")
        for path, template in (
            ("/v1/events", "/v1/events"),
            (f"/v1/workers/w/runs/{run_id}", "/v1/workers/{worker_id}/runs/{run_id}"),
        ):
            result = c.simulate_get(path, params={"wait": "20"}, headers=AUTH)
            assert result.status_code == 200, result.json
            assert result.headers["retry-after"] == "1"
            success = _operation(document, "GET", template)["responses"]["200"]
            header = success["headers"]["Retry-After"]["schema"]
            jsonschema.validate(result.headers["retry-after"], header)
            envelope = success["content"]["application/json"]["schema"]
            # Its $refs point into the document: the document is the root.
            jsonschema.validate(result.json, {**document, **envelope})
    finally:
        runtime.close()  # answers the held wait at once
        held.join(10)
    assert not held.is_alive()
