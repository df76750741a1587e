"""HTTP settings and the API token: frozen values read from the environment.

Reading the environment has no side effects: a generated token is only made
here, shown and stored by the caller (``adapters.app``).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from worker_runtime.config import ENV_PREFIX, RuntimeConfig, env_variable
from worker_runtime.errors import ConfigError

__all__ = [
    "CLIENT_VARIABLES",
    "DEFAULT_MAX_BODY_BYTES",
    "HttpSettings",
    "LogSettings",
    "ServeSettings",
    "Token",
    "generate_token",
    "known_variables",
    "read_token_file",
    "token_from_env",
    "unknown_variables",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
TOKEN_VAR = "WORKER_RUNTIME_TOKEN"
TOKEN_FILE_VAR = "WORKER_RUNTIME_TOKEN_FILE"
MAX_BODY_VAR = "WORKER_RUNTIME_MAX_BODY_BYTES"
LOG_LEVEL_VAR = "WORKER_RUNTIME_LOG_LEVEL"
LOG_FORMAT_VAR = "WORKER_RUNTIME_LOG_FORMAT"
CONNECTION_LIMIT_VAR = "WORKER_RUNTIME_CONNECTION_LIMIT"
CHANNEL_TIMEOUT_VAR = "WORKER_RUNTIME_CHANNEL_TIMEOUT_S"
URL_VAR = "WORKER_RUNTIME_URL"
LOG_FORMATS = ("text", "json")
DEFAULT_CONNECTION_LIMIT = 500
DEFAULT_CHANNEL_TIMEOUT_S = 30
# waitress's own body limit sits this far above the app's, so that a body whose
# Content-Length is too large reaches the app and gets its JSON 413.
WAITRESS_BODY_HEADROOM = 1024 * 1024
# The adapter's own variables; the runtime's come from ``RuntimeConfig``'s fields.
_ADAPTER_VARIABLES = (
    TOKEN_VAR,
    TOKEN_FILE_VAR,
    MAX_BODY_VAR,
    LOG_LEVEL_VAR,
    LOG_FORMAT_VAR,
    CONNECTION_LIMIT_VAR,
    CHANNEL_TIMEOUT_VAR,
)
CLIENT_VARIABLES = frozenset({URL_VAR})
"""Variables only the client commands read (``adapters.remote_cli``): set in a
shell that also starts the server, they are known, not warned about."""
_GENERATED_TOKEN_BYTES = 32


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpSettings:
    """Knobs of the HTTP adapter itself (the runtime's own limits live in ``RuntimeConfig``)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Request bodies above this are refused with 413 before they are read."""

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ConfigError(f"max_body_bytes must be positive, not {self.max_body_bytes!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> HttpSettings:
        """Read ``WORKER_RUNTIME_MAX_BODY_BYTES``; a bad value raises ``ConfigError``
        naming the variable."""
        raw = environ.get(MAX_BODY_VAR, "").strip()
        if not raw:
            return cls()
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{MAX_BODY_VAR}={raw!r} is not an integer") from None
        if value <= 0:
            raise ConfigError(f"{MAX_BODY_VAR}={raw!r} must be a positive number of bytes")
        return cls(max_body_bytes=value)


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeSettings:
    """waitress's limits as ``worker-runtime serve`` sets them.

    waitress's defaults let 100 idle keep-alive or slow-header connections
    fill every slot for two minutes, and spool a 1 GB body to disk.
    """

    connection_limit: int = DEFAULT_CONNECTION_LIMIT
    """Connections open at once; past it waitress stops accepting."""
    channel_timeout_s: int = DEFAULT_CHANNEL_TIMEOUT_S
    """An idle connection (no request running, including one stuck mid-headers) is
    closed after this; a long-poll in progress is a running request, never idle."""

    def __post_init__(self) -> None:
        if self.connection_limit <= 0 or self.channel_timeout_s <= 0:
            raise ConfigError("connection_limit and channel_timeout_s must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServeSettings:
        """Read ``WORKER_RUNTIME_CONNECTION_LIMIT`` and ``WORKER_RUNTIME_CHANNEL_TIMEOUT_S``."""
        values: dict[str, int] = {}
        limit = _positive_int(environ, CONNECTION_LIMIT_VAR)
        if limit is not None:
            values["connection_limit"] = limit
        timeout = _positive_int(environ, CHANNEL_TIMEOUT_VAR)
        if timeout is not None:
            values["channel_timeout_s"] = timeout
        return cls(**values)

    def waitress_kwargs(self, http: HttpSettings) -> dict[str, int]:
        """The keyword arguments for ``waitress.serve`` (also the README's flags)."""
        return {
            "connection_limit": self.connection_limit,
            "channel_timeout": self.channel_timeout_s,
            "max_request_body_size": http.max_body_bytes + WAITRESS_BODY_HEADROOM,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class LogSettings:
    """Log level and format (``text`` lines or ``json``: one object per line)."""

    level: str = "INFO"
    format: str = "text"

    def __post_init__(self) -> None:
        if not isinstance(logging.getLevelName(self.level), int):
            raise ConfigError(
                f"log level must be DEBUG, INFO, WARNING or ERROR, not {self.level!r}"
            )
        if self.format not in LOG_FORMATS:
            raise ConfigError(f"log format must be 'text' or 'json', not {self.format!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        """Read ``WORKER_RUNTIME_LOG_LEVEL`` and ``WORKER_RUNTIME_LOG_FORMAT``."""
        level = environ.get(LOG_LEVEL_VAR, "").strip().upper() or "INFO"
        fmt = environ.get(LOG_FORMAT_VAR, "").strip().lower() or "text"
        try:
            return cls(level=level, format=fmt)
        except ConfigError as exc:
            name = LOG_LEVEL_VAR if "level" in exc.message else LOG_FORMAT_VAR
            raise ConfigError(f"{name}: {exc.message}", details={"variable": name}) from None


def known_variables() -> frozenset[str]:
    """Every ``WORKER_RUNTIME_*`` variable the runtime, its adapter and the client
    commands read (the server's own: all but ``CLIENT_VARIABLES``)."""
    runtime = {env_variable(f.name) for f in dataclasses.fields(RuntimeConfig)}
    return frozenset(runtime | set(_ADAPTER_VARIABLES) | CLIENT_VARIABLES)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``WORKER_RUNTIME_*`` variable nobody reads, naming the
    closest known one (a misspelt ``WORKER_RUNTIME_STOR`` must not pass silently)."""
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        # Compare the parts after the prefix: every name shares the prefix, which
        # would make any junk look close to something.
        suffixes = [k.removeprefix(ENV_PREFIX) for k in known]
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        warnings.append(f"unknown variable {name} is ignored{hint}")
    return warnings


@dataclass(frozen=True, kw_only=True, slots=True)
class Token:
    """The bearer token and where it came from.

    ``explicit`` is true when the operator configured it (variable or file);
    only then may the server listen on a non-loopback address.
    """

    value: str
    explicit: bool
    source: str

    def __repr__(self) -> str:
        # Never let the secret reach a log line or a traceback by accident.
        return f"Token(value=<hidden>, explicit={self.explicit}, source={self.source!r})"


def _check_token(value: str, source: str) -> str:
    # Printable ASCII without spaces: the header is compared as bytes, and a
    # token with spaces or non-ASCII characters could not be sent reliably.
    if not value or not value.isascii() or not value.isprintable() or " " in value:
        raise ConfigError(f"{source}: the token must be non-empty printable ASCII without spaces")
    if len(value) < 16:
        raise ConfigError(f"{source}: the token is too short (16 characters at least)")
    return value


def read_token_file(path: str, source: str) -> Token:
    """The token stored in ``path`` (surrounding whitespace ignored)."""
    try:
        with open(path, encoding="ascii") as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}={path!r} cannot be read: {exc}") from None
    return Token(value=_check_token(value, source), explicit=True, source=source)


def token_from_env(environ: Mapping[str, str]) -> Token | None:
    """The token configured by ``WORKER_RUNTIME_TOKEN`` or ``WORKER_RUNTIME_TOKEN_FILE``,
    or None when neither is set. Setting both is an error."""
    value = environ.get(TOKEN_VAR, "").strip()
    path = environ.get(TOKEN_FILE_VAR, "").strip()
    if value and path:
        raise ConfigError(f"set only one of {TOKEN_VAR} and {TOKEN_FILE_VAR}")
    if value:
        return Token(value=_check_token(value, TOKEN_VAR), explicit=True, source=TOKEN_VAR)
    if path:
        return read_token_file(path, TOKEN_FILE_VAR)
    return None


def generate_token() -> Token:
    """A fresh random token (32 bytes from ``secrets``, URL-safe text)."""
    return Token(
        value=secrets.token_urlsafe(_GENERATED_TOKEN_BYTES), explicit=False, source="generated"
    )
