"""The ``command`` engine: run a configured program once per input.

The input goes to the program's stdin as UTF-8 (or, with ``stdin: "transcript"``,
the whole conversation as one JSON document); its stdout is the reply, streamed
into the transcript as it arrives and bounded by ``max_output_bytes``. A
non-zero exit fails the run with the exit status and the tail of stderr.

``argv`` is executed directly, never through a shell, unless the profile sets
``shell: true``: then ``argv[0]`` is a ``/bin/sh -c`` script and the rest are its
positional parameters (``$0``, ``$1``, ...), like :mod:`subprocess` with ``shell=True``.

The program sees a minimal environment (``PATH``, ``HOME``, locale, ``TMPDIR``
and the names listed in ``inherit_env``), then the profile's ``env``, then
``WORKER_RUNTIME_ID``, ``WORKER_ID`` and ``RUN_ID``. Nothing else of the
runtime's environment (its token, API keys) leaks into it.

Each run is its own process group; cancel, stop and timeout terminate the group
(``SIGTERM``, then ``SIGKILL`` after ``term_grace_s``), and on Linux the
program dies with the runtime (``PR_SET_PDEATHSIG``). The group id is handed
to ``ctx.on_process_start`` as soon as the program runs. See :mod:`.process`.
"""

from __future__ import annotations

import codecs
import json
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .base import Emit, Engine, EngineFailure, RunContext
from .process import run_process

__all__ = ["CommandEngine", "CommandSettings"]

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
"""Variables passed through from the runtime's environment when set."""
STDIN_MODES = ("input", "transcript", "none")
STDERR_TAIL_CHARS = 1000
TRUNCATED = "\n[output truncated]"
DEFAULT_MAX_OUTPUT_BYTES = 1_048_576
DEFAULT_TERM_GRACE_S = 2.0


@dataclass(frozen=True, kw_only=True, slots=True)
class CommandSettings:
    """A ``command`` profile's settings (the profiles file's schema checks their types)."""

    argv: tuple[str, ...]
    shell: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = ()
    cwd: str | None = None
    stdin: str = "input"
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    term_grace_s: float = DEFAULT_TERM_GRACE_S

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> CommandSettings:
        """Settings from a profile; ``ConfigError`` for a value the engine cannot use."""
        argv = tuple(settings.get("argv") or ())
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise ConfigError("argv must be a non-empty list of strings")
        stdin = settings.get("stdin", "input")
        if stdin not in STDIN_MODES:
            raise ConfigError(f"stdin must be one of {', '.join(STDIN_MODES)}, not {stdin!r}")
        cwd = settings.get("cwd")
        if cwd is not None and not os.path.isdir(cwd):
            raise ConfigError(f"cwd {cwd!r} is not a directory")
        made = cls(
            argv=argv,
            shell=bool(settings.get("shell", False)),
            env=dict(settings.get("env") or {}),
            inherit_env=tuple(settings.get("inherit_env") or ()),
            cwd=cwd,
            stdin=stdin,
            max_output_bytes=int(settings.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)),
            term_grace_s=float(settings.get("term_grace_s", DEFAULT_TERM_GRACE_S)),
        )
        if made.max_output_bytes <= 0 or made.term_grace_s < 0:
            raise ConfigError("max_output_bytes must be positive and term_grace_s not negative")
        return made

    def command_line(self) -> list[str]:
        """What is executed: ``argv`` itself, or the shell running ``argv[0]``."""
        if self.shell:
            return ["/bin/sh", "-c", *self.argv]
        return list(self.argv)


class CommandEngine(Engine):
    """Runs one process per input; shared by every worker of its profile."""

    name = "command"

    def __init__(self, settings: CommandSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CommandEngine:
        return cls(CommandSettings.from_mapping(settings))

    def run(self, ctx: RunContext, emit: Emit) -> None:
        s = self.settings
        output = _BoundedOutput(emit, s.max_output_bytes)
        try:
            ended = run_process(
                s.command_line(),
                env=self.environment(ctx),
                cwd=s.cwd,
                stdin=self._stdin(ctx),
                on_stdout=output.write,
                should_stop=ctx.signal.is_set,
                term_grace_s=s.term_grace_s,
                on_start=_recording(ctx.on_process_start),
            )
        except OSError as exc:
            what = exc.filename if exc.filename is not None else s.command_line()[0]
            raise EngineFailure(f"could not start {what!r}: {exc.strerror or exc}") from None
        output.close()
        if ctx.signal.is_set() or ended.returncode == 0:
            return  # an aborted run's status comes from its signal, not the exit code
        raise EngineFailure(_exit_message(ended.returncode, ended.stderr_tail))

    def environment(self, ctx: RunContext) -> dict[str, str]:
        """The child's environment: minimal inherited, then the profile's, then the ids."""
        env = {k: os.environ[k] for k in (*BASE_ENV, *self.settings.inherit_env) if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(self.settings.env)
        env.update(WORKER_RUNTIME_ID=ctx.runtime_id, WORKER_ID=ctx.worker_id, RUN_ID=ctx.run_id)
        return env

    def _stdin(self, ctx: RunContext) -> bytes | None:
        if self.settings.stdin == "none":
            return None
        if self.settings.stdin == "input":
            return ctx.input.content.encode("utf-8")
        document = {
            "runtime_id": ctx.runtime_id,
            "worker_id": ctx.worker_id,
            "run_id": ctx.run_id,
            "intent": {
                "kind": ctx.intent.kind,
                "purpose": ctx.intent.purpose,
                "objective": ctx.intent.objective,
                "role": ctx.intent.role,
            },
            "input": ctx.input.content,
            "transcript": [
                {"sequence": e.sequence, "role": e.role.value, "content": e.content}
                | ({"run_id": e.run_id} if e.run_id else {})
                for e in ctx.history()
            ],
        }
        return json.dumps(document, ensure_ascii=False).encode("utf-8")


class _BoundedOutput:
    """Decodes stdout as UTF-8 (bad bytes become U+FFFD; a character split across
    reads survives) and stops passing it on past ``limit`` bytes (never half a
    character). The rest is read
    and dropped so the program is never blocked on a full pipe."""

    def __init__(self, emit: Emit, limit: int) -> None:
        self._emit = emit
        self._room = limit
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._truncated = False

    def write(self, chunk: bytes) -> None:
        if self._truncated:
            return
        if len(chunk) > self._room:
            chunk = chunk[: self._room]
            self._truncated = True
        self._room -= len(chunk)
        # Not final even when truncated: a character cut by the limit is dropped whole.
        text = self._decoder.decode(chunk)
        if self._truncated:
            text += TRUNCATED
        self._emit(text)

    def close(self) -> None:
        if not self._truncated:
            self._emit(self._decoder.decode(b"", final=True))


def _recording(hook: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """``hook`` with its failure turned into the run's (``run_process`` then
    kills the group): never mistaken for a program that could not start."""
    if hook is None:
        return None

    def started(pgid: int) -> None:
        try:
            hook(pgid)
        except Exception as exc:  # whatever the core raised, the run cannot go on
            raise EngineFailure(f"could not record the process group: {exc}") from None

    return started


def _exit_message(returncode: int | None, stderr_tail: bytes) -> str:
    if returncode is None:
        status = "could not be reaped"
    elif returncode < 0:
        status = f"was killed by signal {_signal_name(-returncode)}"
    else:
        status = f"exited with status {returncode}"
    tail = stderr_tail.decode("utf-8", errors="replace").strip()
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "..." + tail[-STDERR_TAIL_CHARS:]
    return f"command {status}" + (f": {tail}" if tail else "")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
