"""Execution engines. ``ENGINES`` maps an engine name to a factory taking the
profile's settings; ``build_engine`` makes one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from .base import Emit, Engine, EngineFailure, RunContext, RunSignal
from .command import CommandEngine
from .echo import EchoEngine
from .openai_chat import OpenAIChatEngine
from .process_groups import kill_stale_group

__all__ = [
    "ENGINES",
    "CommandEngine",
    "EchoEngine",
    "Emit",
    "Engine",
    "EngineFactory",
    "EngineFailure",
    "OpenAIChatEngine",
    "RunContext",
    "RunSignal",
    "build_engine",
    "kill_stale_group",
]

EngineFactory = Callable[[Mapping[str, Any]], Engine]

ENGINES: dict[str, EngineFactory] = {
    "echo": lambda settings: EchoEngine(),
    "command": CommandEngine.from_settings,
    "openai_chat": OpenAIChatEngine.from_settings,
}


def build_engine(engine: str, settings: Mapping[str, Any]) -> Engine:
    """An engine instance for a profile; ``ConfigError`` for an unknown engine."""
    factory = ENGINES.get(engine)
    if factory is None:
        raise ConfigError(f"unknown engine {engine!r} (known: {', '.join(sorted(ENGINES))})")
    return factory(settings)
