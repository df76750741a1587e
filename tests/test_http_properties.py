"""Properties of the adapter: whatever arrives, the answer is a typed JSON error or a
schema-valid success, never a 5xx; and every route refuses every token but the right one."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from falcon import testing
from hypothesis import example, given
from hypothesis import strategies as st

from worker_runtime import Runtime, RuntimeConfig

from .support.http_helpers import AUTH, ROUTES, TOKEN, Conformance, client

_TEMPLATES = [
    (method, re.compile("^" + t.replace("{worker_id}", "[^/]+") + "$"), t)
    for method, t in [*ROUTES, ("GET", "/healthz")]
]


def template_for(method: str, path: str) -> str | None:
    for route_method, pattern, template in _TEMPLATES:
        if route_method == method and pattern.match(path):
            return template
    return None


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    # Long-polls stay short: the properties are about answers, not waiting.
    runtime = Runtime.open(RuntimeConfig(runtime_id="rt-prop", max_event_wait_s=0.05))
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def c(rt: Runtime) -> testing.TestClient:
    c = client(rt, max_body_bytes=2048)
    c.simulate_post("/v1/workers", json={"worker_id": "w1"}, headers=AUTH)
    return c


@pytest.fixture(scope="module")
def conf(c: testing.TestClient) -> Conformance:
    return Conformance(c.simulate_get("/v1/openapi.json", headers=AUTH).json)


def check(conf: Conformance, method: str, path: str, result: Any) -> None:
    assert result.status_code < 500, (method, path, result.text)
    assert result.headers["X-Request-Id"]
    assert result.headers["Content-Type"].startswith("application/json"), result.headers
    if method != "HEAD":
        conf.check(method, template_for(method, path), result.status_code, result.json)
    assert TOKEN not in result.text


# Text may hold lone surrogates: JSON can escape them, Unicode cannot encode them.
texts = st.text(
    st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=20
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["worker_id", "display_name", "intent", "profile", "content", "kind", "reason", "run_id"]
plausible_bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4)
worker_ids = st.sampled_from(["w1", "missing", "-bad", "a" * 129, "w.1_x-2"])
POSTS = [t for m, t in ROUTES if m == "POST"]


@given(
    template=st.sampled_from(POSTS),
    worker_id=worker_ids,
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: repr(v).encode()),
        plausible_bodies.map(lambda v: json.dumps(v).encode()),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/json; x=1", ""]),
)
def test_junk_bodies_never_5xx(
    c: testing.TestClient,
    conf: Conformance,
    template: str,
    worker_id: str,
    body: bytes,
    content_type: str,
) -> None:
    path = template.replace("{worker_id}", worker_id)
    headers = {**AUTH, "Content-Type": content_type}
    check(conf, "POST", path, c.simulate_post(path, body=body, headers=headers))


QUERY_CHARS = string.ascii_letters + string.digits + "-_.%&=+ ;/\x00\u00e9"
PARAMS = ["status", "limit", "after", "start", "cursor", "wait", "x"]
query_values = st.one_of(
    st.integers(-5, 2000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        ["idle", "running", "stopped", "w1", "", "1e3", "0x10", " 1", "\u0661", "0.01"]
    ),
    st.text(QUERY_CHARS, max_size=12),
)


@given(
    template=st.sampled_from([t for m, t in ROUTES if m == "GET"]),
    worker_id=worker_ids,
    params=st.lists(st.tuples(st.sampled_from(PARAMS), query_values), max_size=4),
    raw=st.text(QUERY_CHARS, max_size=30),
)
def test_junk_queries_never_5xx(
    c: testing.TestClient,
    conf: Conformance,
    template: str,
    worker_id: str,
    params: list[tuple[str, str]],
    raw: str,
) -> None:
    path = template.replace("{worker_id}", worker_id)
    query = urlencode(params) if params else raw
    check(conf, "GET", path, c.simulate_get(path, query_string=query, headers=AUTH))


path_text = st.text(string.ascii_letters + string.digits + "/._-%~:@!$", max_size=40)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.one_of(
        path_text.map(lambda p: "/" + p),
        path_text.map(lambda p: "/v1/" + p),
        path_text.map(lambda p: "/v1/workers/" + p),
    ),
)
def test_junk_paths_never_5xx(
    c: testing.TestClient, conf: Conformance, method: str, path: str
) -> None:
    # A generated path may name a real route: then its success must conform too.
    check(conf, method, path, c.simulate_request(method, path, headers=AUTH))


@given(
    route=st.sampled_from(ROUTES),
    token=st.one_of(
        st.text(max_size=60),
        st.text(string.printable, min_size=len(TOKEN) - 2, max_size=len(TOKEN) + 2),
        st.just(TOKEN).flatmap(
            lambda t: st.integers(0, len(t) - 1).map(
                lambda i: t[:i] + chr(ord(t[i]) ^ 1) + t[i + 1 :]
            )
        ),
    ),
    scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
)
def test_every_route_refuses_every_other_token(
    c: testing.TestClient, route: tuple[str, str], token: str, scheme: str
) -> None:
    method, template = route
    header = (scheme + token).strip()
    if header.lower().startswith("bearer") and header[6:].strip() == TOKEN:
        return  # generated the right token after all
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        header = header.encode("utf-8").decode("latin-1")  # what a WSGI server would pass on
    result = c.simulate_request(
        method, template.replace("{worker_id}", "w1"), headers={"Authorization": header}
    )
    assert result.status_code == 401
    assert result.json["error"]["code"] == "unauthorized"
    assert result.headers["WWW-Authenticate"] == "Bearer"


@given(name=texts.filter(lambda t: 0 < len(t) <= 200), content=texts.filter(bool))
@example(name="\ud800\udc00", content="\ud800\udc00")  # a pair JSON joins into one char
@example(name="\ud800", content="x")  # a lone surrogate: refused
def test_any_text_is_refused_or_read_back_intact(
    c: testing.TestClient, conf: Conformance, name: str, content: str
) -> None:
    """Text goes in as JSON and comes back equal, or is refused as a whole (lone
    surrogates cannot be stored as Unicode): never a poisoned worker."""
    headers = {**AUTH, "Content-Type": "application/json"}
    created = c.simulate_post(
        "/v1/workers", body=json.dumps({"display_name": name}), headers=headers
    )
    check(conf, "POST", "/v1/workers", created)
    if created.status_code != 201:
        assert created.json["error"]["code"] == "invalid_json"
        return
    worker_id = created.json["worker"]["worker_id"]
    path = f"/v1/workers/{worker_id}"
    read = c.simulate_get(path, headers=AUTH)
    check(conf, "GET", path, read)
    # What the server received: JSON joins an escaped surrogate pair into one
    # character, so a Python str holding the pair comes back as that character.
    assert read.json["worker"]["display_name"] == json.loads(json.dumps(name))
    sent = c.simulate_post(f"{path}/input", body=json.dumps({"content": content}), headers=headers)
    check(conf, "POST", f"{path}/input", sent)
    page = c.simulate_get(f"{path}/transcript", headers=AUTH)
    check(conf, "GET", f"{path}/transcript", page)
    if sent.status_code == 202:
        assert page.json["transcript"]["items"][0]["content"] == json.loads(json.dumps(content))
