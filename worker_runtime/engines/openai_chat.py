"""The ``openai_chat`` engine: any OpenAI-compatible chat-completions endpoint
(OpenAI, vLLM, llama.cpp server, Ollama, ...).

The worker's transcript is the conversation: a system message from the
profile's ``system_prompt`` and the worker's intent, then every entry in order
(consecutive assistant entries of one run are one message). The reply streams
into the transcript (``stream: true``, the default, reads server-sent events);
non-streaming endpoints are supported with ``stream: false``.

Built on the standard library's ``http.client`` rather than the ``openai`` or
``httpx`` packages, on purpose: the protocol used here is one POST and an
event stream, so no new dependency (nor an extra to install) is needed, and
owning the socket is what lets cancel abandon a request at once (see
:mod:`.http_stream`) instead of waiting for a library's own timeout.

``base_url`` may carry a query string (Azure OpenAI's ``?api-version=...``);
it is kept on the chat-completions request.

A rate limit (429) or a server error (5xx) is tried again, up to
``max_retries`` times (default 3), honouring the server's ``Retry-After`` and
never waiting past the run's deadline (see :mod:`.retry`); cancel interrupts
the wait. Other errors end the run ``failed`` with a readable reason (HTTP
status and the provider's message, trimmed); the run deadline ends it
``timed_out``.

The API key is read from the variable ``api_key_env`` names at each request
(surrounding whitespace dropped) and is never logged nor put in an error,
event or transcript: any echo of it, in a provider's message or in the reply
itself (even split across stream events), is masked (see :mod:`.redact`).
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from ..domain import Role, WorkerIntent
from ..errors import ConfigError
from ..version import __version__
from .base import Emit, Engine, EngineFailure, RunContext
from .http_stream import AbortableConnection, SseError, iter_sse_data
from .redact import MaskingEmit, mask
from .retry import DEFAULT_MAX_RETRIES, RetryPolicy, is_retryable, parse_retry_after

__all__ = ["OpenAIChatEngine", "OpenAIChatSettings", "build_messages"]

MAX_BODY_BYTES = 8 * 1_048_576
MAX_REASON_CHARS = 300
DEFAULT_REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenAIChatSettings:
    """An ``openai_chat`` profile's settings (the profiles file's schema checks their types)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    stream: bool = True
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> OpenAIChatSettings:
        """Settings from a profile; ``ConfigError`` for a value the engine cannot use."""
        base_url = str(settings.get("base_url") or "")
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"base_url must be an http(s) URL, not {base_url!r}")
        if not settings.get("model"):
            raise ConfigError("model is required")
        timeout = float(settings.get("request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S))
        if timeout <= 0:
            raise ConfigError("request_timeout_s must be positive")
        max_retries = int(settings.get("max_retries", DEFAULT_MAX_RETRIES))
        if max_retries < 0:
            raise ConfigError("max_retries must not be negative")
        return cls(
            # The query is kept (Azure's api-version); a trailing slash and a fragment are not.
            base_url=urlunsplit(url._replace(path=url.path.rstrip("/"), fragment="")),
            model=str(settings["model"]),
            api_key_env=settings.get("api_key_env"),
            temperature=settings.get("temperature"),
            max_tokens=settings.get("max_tokens"),
            system_prompt=settings.get("system_prompt"),
            stream=bool(settings.get("stream", True)),
            request_timeout_s=timeout,
            max_retries=max_retries,
        )


class OpenAIChatEngine(Engine):
    """One POST to ``{base_url}/chat/completions`` per run."""

    name = "openai_chat"

    def __init__(self, settings: OpenAIChatSettings) -> None:
        self.settings = settings
        self._url: SplitResult = urlsplit(settings.base_url)
        self._retry = RetryPolicy(max_retries=settings.max_retries)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> OpenAIChatEngine:
        return cls(OpenAIChatSettings.from_mapping(settings))

    def run(self, ctx: RunContext, emit: Emit) -> None:
        key = self._api_key()
        masked = MaskingEmit(emit, key)
        try:
            self._attempts(ctx, masked, key)
        except EngineFailure as exc:
            if ctx.signal.is_set():
                return  # the abort caused it; the runtime reports the abort
            raise EngineFailure(mask(str(exc), key)) from None
        except (OSError, http.client.HTTPException, SseError) as exc:
            if ctx.signal.is_set():
                return
            raise EngineFailure(mask(self._transport_error(exc), key)) from None
        finally:
            masked.close()

    def _api_key(self) -> str | None:
        env_name = self.settings.api_key_env
        key = (os.environ.get(env_name) or "").strip() if env_name else ""
        # http.client would refuse a control character with the key in its message.
        if any(not " " < c < "\x7f" for c in key):
            raise EngineFailure(f"the API key in {env_name} has characters a header cannot carry")
        return key or None

    def _attempts(self, ctx: RunContext, emit: Emit, key: str | None) -> None:
        """The request, tried again after a 429 or 5xx as the retry policy allows."""
        for attempt in range(1, self._retry.max_retries + 2):
            try:
                self._request(ctx, emit, key)
                return
            except _HttpError as exc:
                wait = self._retry.wait_s(
                    retry=attempt,
                    retry_after=exc.retry_after,
                    remaining_s=ctx.deadline - time.monotonic(),
                )
                if not exc.retryable or wait is None:
                    suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise EngineFailure(f"{exc}{suffix}") from None
            if ctx.signal.wait(wait):
                return  # cancelled or timed out while waiting: nothing more to do

    def _request(self, ctx: RunContext, emit: Emit, key: str | None) -> None:
        s = self.settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": build_messages(ctx, s.system_prompt),
            "stream": s.stream,
        }
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if s.stream else "application/json",
            "User-Agent": f"worker-runtime/{__version__}",
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        path = f"{self._url.path}/chat/completions"
        if self._url.query:
            path += f"?{self._url.query}"
        with AbortableConnection(self._url, timeout=s.request_timeout_s, signal=ctx.signal) as conn:
            conn.request("POST", path, body=json.dumps(body).encode("utf-8"), headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise _HttpError(
                    self._http_error(response, key),
                    retryable=is_retryable(response.status),
                    retry_after=parse_retry_after(
                        response.getheader("Retry-After"), response.getheader("retry-after-ms")
                    ),
                )
            if "text/event-stream" in (response.getheader("Content-Type") or ""):
                _read_stream(response, emit, key)
            else:
                _read_whole(response, emit)

    def _http_error(self, response: http.client.HTTPResponse, key: str | None) -> str:
        # Mask before trimming, so that no cut-off piece of an echoed key survives.
        reason = _provider_message(mask(response.read(64 * 1024).decode("utf-8", "replace"), key))
        if response.status == 429:
            message = "rate limited by the endpoint (HTTP 429)"
            retry_after = response.getheader("Retry-After")
            if retry_after:
                message += f", retry after {retry_after[:20]}s"
        else:
            message = f"the endpoint answered HTTP {response.status} {response.reason}"
        if response.status in (401, 403) and self.settings.api_key_env and not key:
            message += f" (the API key variable {self.settings.api_key_env} is not set)"
        return f"{message}: {reason}" if reason else message

    def _transport_error(self, exc: BaseException) -> str:
        where = f"{self._url.hostname}:{self._url.port or ''}".rstrip(":")
        if isinstance(exc, TimeoutError):
            timeout = self.settings.request_timeout_s
            return f"the endpoint {where} did not respond within {timeout:g}s"
        if isinstance(exc, http.client.RemoteDisconnected | http.client.IncompleteRead):
            return f"the connection to {where} was lost before the reply was complete"
        if isinstance(exc, ConnectionRefusedError):
            return f"could not connect to {where}: connection refused"
        if isinstance(exc, SseError):
            return f"the endpoint {where} sent a malformed event stream: {exc}"
        if isinstance(exc, OSError):
            return f"the connection to {where} failed: {exc.strerror or type(exc).__name__}"
        return f"the endpoint {where} broke the HTTP protocol ({type(exc).__name__})"


class _HttpError(EngineFailure):
    """The endpoint answered an error status; ``retryable`` for 429 and 5xx."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def build_messages(ctx: RunContext, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages for a run: system prompt and intent, then the transcript."""
    messages: list[dict[str, str]] = []
    system = "\n\n".join(p for p in (system_prompt, _intent_prompt(ctx.intent)) if p)
    if system:
        messages.append({"role": "system", "content": system})
    last_run: str | None = None
    for entry in ctx.history():
        same_reply = (
            entry.role is Role.ASSISTANT
            and messages
            and messages[-1]["role"] == "assistant"
            and entry.run_id == last_run
        )
        if same_reply:
            messages[-1]["content"] += entry.content
        else:
            messages.append({"role": entry.role.value, "content": entry.content})
        last_run = entry.run_id
    return messages


def _intent_prompt(intent: WorkerIntent) -> str | None:
    lines = [
        f"{label}: {value}"
        for label, value in (
            ("Role", intent.role),
            ("Purpose", intent.purpose),
            ("Objective", intent.objective),
        )
        if value
    ]
    if intent.kind != "assistant":
        lines.insert(0, f"You are working as a {intent.kind}.")
    return "\n".join(lines) or None


def _read_stream(response: http.client.HTTPResponse, emit: Emit, key: str | None) -> None:
    finished = False
    for data in iter_sse_data(response):
        if data.strip() == "[DONE]":
            return
        chunk = _json(data)
        if "error" in chunk:
            reason = _reason(_json(mask(data, key)))
            raise EngineFailure(f"the endpoint reported an error: {reason}")
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                emit(content)
            finished = finished or bool(choice.get("finish_reason"))
    if not finished:
        raise EngineFailure("the endpoint closed the stream before the reply was complete")


def _read_whole(response: http.client.HTTPResponse, emit: Emit) -> None:
    too_large = response.length is not None and response.length > MAX_BODY_BYTES
    # Without a size, read() raises IncompleteRead when the body is cut short.
    raw = b"" if too_large else response.read(None if response.length else MAX_BODY_BYTES + 1)
    if too_large or len(raw) > MAX_BODY_BYTES:
        raise EngineFailure(f"the endpoint's reply is larger than {MAX_BODY_BYTES} bytes")
    reply = _json(raw)
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise EngineFailure("the endpoint's reply has no choices[0].message") from None
    if isinstance(content, str):
        emit(content)


def _json(data: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise EngineFailure("the endpoint sent something that is not JSON") from None
    if not isinstance(value, dict):
        raise EngineFailure("the endpoint sent JSON that is not an object")
    return value


def _provider_message(text: str) -> str:
    """The provider's error message from an error body (JSON or text), trimmed."""
    try:
        value = json.loads(text)
    except ValueError:
        return _trim(text)
    return _reason(value) if isinstance(value, dict) else _trim(str(value))


def _reason(body: dict[str, Any]) -> str:
    error = body.get("error", body)
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or json.dumps(error)
    return _trim(str(error))


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
