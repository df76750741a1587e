"""Reading a request: JSON bodies and typed query parameters, with typed 4xx errors.

Query strings are strings: integers and numbers are converted here (a bad one
is 400 ``invalid_query`` naming the parameter); everything else is passed on
as text for the core's schema to judge. Which parameters a route takes, and
their kinds, is its row in ``worker_runtime.routes``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import falcon

from worker_runtime.errors import InvalidQuery
from worker_runtime.routes import QueryKind

from .errors import ApiError

__all__ = ["MAX_QUERY_INTEGER", "parse_query", "read_body", "read_json_object"]

MAX_QUERY_INTEGER = 2**63 - 1
"""The largest integer a query parameter takes (a signed 64-bit integer, what
most clients can hold): the OpenAPI document states it as the maximum."""
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_NUMBER = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,3})?")


def _invalid(name: str, message: str) -> InvalidQuery:
    name = name[:100]  # the name is the caller's text: echo a bounded part of it
    return InvalidQuery(f"query parameter {name!r}: {message}", details={"parameter": name})


def _convert(name: str, kind: QueryKind, raw: str) -> Any:
    if kind is QueryKind.INTEGER:
        if not _INTEGER.fullmatch(raw):
            raise _invalid(name, "expected an integer")
        integer = int(raw)
        if abs(integer) > MAX_QUERY_INTEGER:
            raise _invalid(name, f"at most {MAX_QUERY_INTEGER} in size")
        return integer
    if kind is QueryKind.NUMBER:
        # A decimal, as in JSON: float() would also take "nan", "inf" and "1_0".
        if not _NUMBER.fullmatch(raw) or not math.isfinite(value := float(raw)):
            raise _invalid(name, "expected a number")
        return value
    return raw


def parse_query(req: falcon.Request, spec: Mapping[str, QueryKind]) -> dict[str, Any]:
    """The query parameters as command args; unknown or repeated ones are refused."""
    if not req.query_string:
        return {}
    args: dict[str, Any] = {}
    for name, raw in req.params.items():
        if name not in spec:
            raise _invalid(name, "unknown parameter")
        if not isinstance(raw, str):
            raise _invalid(name, "given more than once")
        args[name] = _convert(name, spec[name], raw)
    return args


def _media_type(req: falcon.Request) -> str:
    return (req.content_type or "").partition(";")[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _has_body(req: falcon.Request) -> bool:
    encoding = req.get_header("Transfer-Encoding") or ""
    return bool(req.content_length) or "chunked" in encoding.lower()


def read_body(req: falcon.Request, max_bytes: int) -> bytes:
    """The raw request body (``b""`` when there is none); more than ``max_bytes``
    is 413 ``payload_too_large``, also when no ``Content-Length`` announced it
    (a chunked body): the guard refuses an announced one before anything reads it."""
    if not _has_body(req):
        return b""
    stream: Any = req.bounded_stream
    if req.content_length is None and req.env.get("wsgi.input_terminated"):
        # A chunked body the server passes through unmeasured: the server ends
        # the stream at the body's end (falcon's bounded stream would read nothing).
        stream = req.stream
    raw: bytes = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"the request body is larger than {max_bytes} bytes",
            details={"maximum": max_bytes},
        )
    return raw


def read_json_object(req: falcon.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object; an absent or empty body is ``{}``.

    A body needs ``Content-Type: application/json`` (415 otherwise); more than
    ``max_bytes`` is 413 (before its media type is judged) even when no
    ``Content-Length`` announced it.
    """
    if not _has_body(req):
        return {}
    raw = read_body(req, max_bytes)
    if _media_type(req) != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "request bodies must be 'application/json'",
            details={"content_type": (req.content_type or "")[:100]},
        )
    if not raw:
        return {}
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}"[:300]) from None
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(data):
        raise ApiError(400, "invalid_json", "the body has a lone surrogate: not Unicode text")
    if not isinstance(data, dict):
        raise ApiError(
            400, "invalid_request", "the body must be a JSON object", details={"field": "/"}
        )
    return data


def _has_lone_surrogate(value: Any) -> bool:
    # json.loads joins escaped surrogate pairs, but lets a lone "\ud800" through
    # as a str that cannot be encoded: it would poison every later read.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False
