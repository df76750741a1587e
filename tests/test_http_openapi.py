"""The OpenAPI document: valid 3.1, built from the core's own schemas, covering every route."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from adapters.openapi import build_openapi
from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.wire import schema_document

from .support.http_helpers import AUTH, ROUTES, client


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
    assert documented == {*ROUTES, ("GET", "/healthz")}


def test_only_healthz_is_open(document: dict[str, Any]) -> None:
    assert document["security"] == [{"bearer": []}]
    open_ops = [
        path
        for path, item in document["paths"].items()
        for op in item.values()
        if isinstance(op, dict) and op.get("security") == []
    ]
    assert open_ops == ["/healthz"]


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
