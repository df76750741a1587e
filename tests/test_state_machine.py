"""The dispatcher state machine (``support.runtime_machine``) on both targets:
the in-process ``Runtime``, and a ``RemoteRuntime`` talking to that runtime
served by a real waitress server on loopback. The remote one runs fewer
examples (each step is a few dozen HTTP round trips)."""

from __future__ import annotations

import pytest
from hypothesis import settings

from worker_runtime import Runtime
from worker_runtime.client import RemoteRuntime
from worker_runtime.domain import BusyPolicy, Role

from .support.runtime_machine import RuntimeMachine

RuntimeMachine.TestCase.settings = settings(stateful_step_count=40, deadline=None)
TestRuntimeMachine = RuntimeMachine.TestCase


class RemoteRuntimeMachine(RuntimeMachine):
    """The same rules and invariants, every command over HTTP."""

    target = "remote"


RemoteRuntimeMachine.TestCase.settings = settings(
    stateful_step_count=30, max_examples=15, deadline=None
)
TestRemoteRuntimeMachine = RemoteRuntimeMachine.TestCase


@pytest.mark.parametrize("machine_class", [RuntimeMachine, RemoteRuntimeMachine])
def test_the_model_check_can_fail(machine_class: type[RuntimeMachine]) -> None:
    """A runtime that forgets an entry, or writes a queued input before its run
    starts, breaks the transcript invariant: the comparisons are not vacuous."""
    machine = machine_class()
    assert isinstance(machine.api, RemoteRuntime if machine.target == "remote" else Runtime)
    try:
        worker_id = machine.create(worker_id="w")
        machine.send_input(worker_id, "hello", hold=False, on_busy=BusyPolicy.REJECT)
        worker = machine.model[worker_id]
        worker.transcript.append((Role.USER, "phantom", None))
        try:
            machine.transcripts_are_contiguous_and_match()
        except AssertionError:
            pass
        else:
            raise AssertionError("the transcript invariant accepted a wrong model")
        worker.transcript.pop()
        machine.transcripts_are_contiguous_and_match()
        machine.send_input(worker_id, "first", hold=True, on_busy=BusyPolicy.REJECT)
        machine.send_input(worker_id, "second", hold=True, on_busy=BusyPolicy.ENQUEUE)
        queued = worker.queue[0]
        worker.transcript.append((Role.USER, "second", queued))  # as if it had started
        try:
            machine.transcripts_are_contiguous_and_match()
        except AssertionError:
            pass
        else:
            raise AssertionError("the transcript invariant accepted a queued input")
        worker.transcript.pop()
        machine._complete(worker_id)  # the queued run starts: its input enters now
        machine.transcripts_are_contiguous_and_match()
        machine.run_history_matches()
    finally:
        machine.teardown()
