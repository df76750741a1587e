"""One plain function per command, and the registry the dispatcher is given.

A handler takes the :class:`Context` (the runtime's parts it works with) and
its command, and returns the command's result; it raises typed errors only.
Durability (``sync``) is the dispatcher's job, after the handler returns, so
several commands can share one flush. The handlers live by concern:
``workers`` (create, get, list, stop, delete), ``inputs`` (send input, cancel
a run), ``runs`` (run history, one run with a wait) and ``reads`` (runtime,
transcript, events, diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import commands as c
from .context import Context, Handler, Registration
from .inputs import cancel_run, send_input
from .reads import get_diagnostics, get_runtime, get_transcript, read_events
from .runs import get_run, list_runs
from .workers import create_worker, delete_worker, get_worker, list_workers, stop_worker

__all__ = ["HANDLERS", "Context", "Handler", "Registration"]

HANDLERS: Mapping[type[c.Command[Any]], Registration] = {
    c.GetRuntime: Registration(handler=get_runtime),
    c.ListWorkers: Registration(handler=list_workers),
    c.GetWorker: Registration(handler=get_worker),
    c.CreateWorker: Registration(handler=create_worker, one_hold=True),
    c.SendInput: Registration(handler=send_input, one_hold=True),
    c.StopWorker: Registration(handler=stop_worker),
    c.CancelRun: Registration(handler=cancel_run),
    c.GetTranscript: Registration(handler=get_transcript),
    c.ReadEvents: Registration(handler=read_events),
    c.GetDiagnostics: Registration(handler=get_diagnostics),
    c.ListRuns: Registration(handler=list_runs),
    c.GetRun: Registration(handler=get_run),
    c.DeleteWorker: Registration(handler=delete_worker, one_hold=True),
}
"""Every command's handler; ``one_hold`` marks those safe under a held lock."""
