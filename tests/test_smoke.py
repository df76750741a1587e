from __future__ import annotations

from worker_runtime import Runtime, commands
from worker_runtime.domain import Role

from .helpers import wait_for_run_end


def test_echo_round_trip(runtime: Runtime) -> None:
    worker = runtime.dispatch(commands.CreateWorker(display_name="scout"))
    ack = runtime.dispatch(commands.SendInput(worker_id=worker.worker_id, content="hello"))
    end = wait_for_run_end(runtime, ack.run_id)
    assert end.type == "run_completed"
    page = runtime.dispatch(commands.GetTranscript(worker_id=worker.worker_id))
    assert [(e.role, e.content) for e in page.items] == [
        (Role.USER, "hello"),
        (Role.ASSISTANT, "hello"),
    ]
