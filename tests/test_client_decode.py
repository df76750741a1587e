"""The client's compiled decoder agrees with ``wire.from_json`` on every result
the runtime produces in a representative session."""

from __future__ import annotations

from typing import Any

from worker_runtime import Runtime
from worker_runtime import commands as c
from worker_runtime.client.decode import converter
from worker_runtime.commands import result_type
from worker_runtime.domain import ConfigBundleRef, ProfileSelector, WorkerIntent
from worker_runtime.wire import from_json, to_json

from .support.client_support import run_end


def test_decoder_agrees_with_from_json(runtime: Runtime) -> None:
    commands: list[c.Command[Any]] = [
        c.CreateWorker(
            worker_id="a",
            intent=WorkerIntent(kind="role", role="reviewer", purpose="p"),
            profile=ProfileSelector(kind="builtin", value="echo"),
            config_bundle=ConfigBundleRef(id="b"),
        ),
        c.GetRuntime(),
    ]
    results = [(cmd, runtime.dispatch(cmd)) for cmd in commands]
    ack = runtime.dispatch(c.SendInput(worker_id="a", content="x"))
    run_end(runtime, ack.run_id, ack.event_id)
    for cmd in (
        c.GetWorker(worker_id="a"),
        c.ListWorkers(),
        c.GetTranscript(worker_id="a"),
        c.ReadEvents(cursor=1),
        c.GetDiagnostics(),
        c.CancelRun(worker_id="a"),
        c.StopWorker(worker_id="a"),
    ):
        results.append((cmd, runtime.dispatch(cmd)))
    results.append((c.SendInput(worker_id="a", content="x"), ack))
    for cmd, result in results:
        data = to_json(result)
        decoded = converter(result_type(type(cmd)))(data)
        assert decoded == from_json(result_type(type(cmd)), data) == result
        assert type(decoded) is type(result)
