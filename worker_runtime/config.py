"""Runtime configuration: a frozen dataclass, read from the environment without side effects."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .domain import is_valid_id
from .errors import ConfigError

__all__ = ["ENV_PREFIX", "RuntimeConfig", "env_variable"]

ENV_PREFIX = "WORKER_RUNTIME_"


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeConfig:
    """Everything that shapes a runtime. Defaults give the embedded default:
    memory store, echo engine, generated runtime id."""

    runtime_id: str | None = None
    display_name: str | None = None
    store: str = "memory"
    data_dir: str | None = None
    profiles_path: str | None = None
    max_transcript_page: int = 256
    default_transcript_page: int = 100
    max_worker_page: int = 1000
    default_worker_page: int = 100
    max_event_page: int = 1000
    default_event_page: int = 100
    max_event_wait_s: float = 30.0
    max_input_chars: int = 262_144
    max_output_chars: int = 1_048_576
    run_timeout_s: float = 300.0
    operation_timeout_s: float = 10.0
    cancel_grace_s: float = 5.0
    max_concurrent_runs: int = 8
    idempotency_ttl_s: float = 86400.0
    """How long an idempotency key's first answer is replayed (then compacted away)."""
    max_queued_runs: int = 16
    """Inputs a worker's FIFO holds (``on_busy: "enqueue"``) beside its active run."""
    max_waiters: int = 2
    """Long-polls (``wait``) held at once over HTTP; more answer at once with
    ``Retry-After: 1`` (waitress's default 4 threads keep room for other routes)."""

    def __post_init__(self) -> None:
        if self.runtime_id is not None and not is_valid_id(self.runtime_id):
            raise _bad("runtime_id", f"runtime id {self.runtime_id!r} is not a valid id")
        if self.store not in ("memory", "fs"):
            raise _bad("store", f"store must be 'memory' or 'fs', not {self.store!r}")
        if self.store == "fs" and not self.data_dir:
            raise _bad("data_dir", "the fs store needs a data directory")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and not (math.isfinite(value) and value > 0):
                raise _bad(f.name, f"{f.name} must be a positive number, not {value!r}")
        if self.default_transcript_page > self.max_transcript_page:
            raise _bad(
                "default_transcript_page", "default_transcript_page exceeds max_transcript_page"
            )

    def replace(self, **changes: Any) -> RuntimeConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RuntimeConfig:
        """Read ``WORKER_RUNTIME_*`` variables; a bad value raises ``ConfigError``
        naming the variable. Unset or empty variables keep the defaults."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_variable(f.name)
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            parse = _PARSERS.get(str(f.type), str)
            try:
                values[f.name] = parse(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a valid {f.type}") from None
        try:
            return cls(**values)
        except ConfigError as exc:
            # Point the operator at the variable, not at the dataclass field.
            name = env_variable(str(exc.details.get("field", "")))
            raw = environ.get(name, "")
            raise ConfigError(
                f"{name}={raw!r}: {exc.message}", details={"variable": name}
            ) from None


def env_variable(field: str) -> str:
    """The ``WORKER_RUNTIME_*`` variable that sets ``field``."""
    return ENV_PREFIX + _ENV_NAMES.get(field, field.upper())


def _bad(field: str, message: str) -> ConfigError:
    return ConfigError(message, details={"field": field})


_ENV_NAMES = {"runtime_id": "ID", "display_name": "NAME", "profiles_path": "PROFILES"}
_PARSERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float}
