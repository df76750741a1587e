"""Execution engines. ``ENGINES`` maps an engine name to its :data:`EngineFactory`;
the profile registry (``worker_runtime.profiles``) builds each profile's engine
with one, once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

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
    "kill_stale_group",
]

EngineFactory = Callable[[Mapping[str, Any]], Engine]
"""Builds an engine from a profile's settings; ``ConfigError`` for a bad setting."""

ENGINES: dict[str, EngineFactory] = {
    "echo": lambda settings: EchoEngine(),
    "command": CommandEngine.from_settings,
    "openai_chat": OpenAIChatEngine.from_settings,
}
