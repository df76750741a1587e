"""The ``echo`` engine: the runtime default. Tool-less; replies with the input."""

from __future__ import annotations

from .base import Emit, Engine, RunContext

__all__ = ["EchoEngine"]


class EchoEngine(Engine):
    name = "echo"

    def run(self, ctx: RunContext, emit: Emit) -> None:
        emit(ctx.input.content)
