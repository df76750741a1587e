"""HTTP settings and the API token: frozen values read from the environment.

Reading the environment has no side effects: a generated token is only made
here, shown and stored by the caller (``adapters.app``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from worker_runtime.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HttpSettings",
    "Token",
    "generate_token",
    "read_token_file",
    "token_from_env",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
TOKEN_VAR = "WORKER_RUNTIME_TOKEN"
TOKEN_FILE_VAR = "WORKER_RUNTIME_TOKEN_FILE"
MAX_BODY_VAR = "WORKER_RUNTIME_MAX_BODY_BYTES"
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
