"""Three runtimes on loopback, each its own process, id, data directory (fs
store) and token, one client each: kill -9 one, the others serve on; restart
it on its directory and its workers and transcripts are back.

Each runtime runs with the settings of the Kubernetes StatefulSet in deploy/
(its pod name as the runtime id, its arguments and environment), with only
the data directory, the Secret volume and the listener moved onto this
machine. Every runtime's volume holds the one Secret with all three tokens, as
on Kubernetes: each must read its own key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker_runtime import commands as c
from worker_runtime import errors
from worker_runtime.client import RemoteRuntime

from .support.client_support import run_end
from .support.deploy import on_loopback, statefulset
from .support.server import Server, start, stop

pytestmark = pytest.mark.timeout(180)

NAMES = ("runtime-0", "runtime-1", "runtime-2")
# The Secret ``worker-runtime-tokens``: one key per pod name.
TOKENS = {name: f"token-of-{name}-0123456789abcdef" for name in NAMES}


def launch(name: str, root: Path) -> Server:
    """Pod ``name`` of the StatefulSet, on loopback, with its own directory and token."""
    token = TOKENS[name]
    argv, env = on_loopback(statefulset(name), root / name, token, secret=TOKENS)
    assert env["WORKER_RUNTIME_ID"] == name and env["WORKER_RUNTIME_STORE"] == "fs"
    assert env["WORKER_RUNTIME_TOKEN_FILE"].endswith(f"/{name}")
    server = start(env, argv=argv, token=None)  # the token comes from its file
    server.token = token
    return server


def client(server: Server) -> RemoteRuntime:
    assert server.token is not None
    return RemoteRuntime(server.base_url, token=server.token, retries=1)


def test_one_runtime_killed_the_others_serve_and_it_comes_back(tmp_path: Path) -> None:
    servers = {name: launch(name, tmp_path) for name in NAMES}
    clients = {name: client(server) for name, server in servers.items()}
    try:
        transcripts = {}
        for name, rt in clients.items():
            assert rt.dispatch(c.GetRuntime()).runtime_id == name
            for n in range(2):
                worker_id = f"{name}-w{n}"
                rt.dispatch(c.CreateWorker(worker_id=worker_id))
                ack = rt.dispatch(c.SendInput(worker_id=worker_id, content=f"hi from {name}"))
                assert run_end(rt, ack.run_id, ack.event_id).type == "run_completed"
                transcripts[worker_id] = rt.dispatch(c.GetTranscript(worker_id=worker_id))
        # Tokens are per runtime: a client of one is refused by another.
        wrong = RemoteRuntime(servers["runtime-1"].base_url, token=servers["runtime-0"].token or "")
        with wrong, pytest.raises(errors.WorkerRuntimeError) as refused:
            wrong.dispatch(c.GetRuntime())
        assert refused.value.code == "unauthorized"

        servers["runtime-1"].kill()  # SIGKILL: no flush, no goodbye
        with pytest.raises(errors.RuntimeUnavailable):
            clients["runtime-1"].dispatch(c.GetRuntime())
        for name in ("runtime-0", "runtime-2"):
            rt = clients[name]
            ack = rt.dispatch(c.SendInput(worker_id=f"{name}-w0", content="still here"))
            assert run_end(rt, ack.run_id, ack.event_id).type == "run_completed"
            assert rt.dispatch(c.GetRuntime()).workers.total == 2

        stop(servers["runtime-1"])
        servers["runtime-1"] = launch("runtime-1", tmp_path)
        clients["runtime-1"].close()
        clients["runtime-1"] = back = client(servers["runtime-1"])
        assert back.dispatch(c.GetRuntime()).runtime_id == "runtime-1"
        listed = back.dispatch(c.ListWorkers())
        assert [w.worker_id for w in listed.workers] == ["runtime-1-w0", "runtime-1-w1"]
        for worker_id in ("runtime-1-w0", "runtime-1-w1"):
            assert back.dispatch(c.GetTranscript(worker_id=worker_id)) == transcripts[worker_id]
        ack = back.dispatch(c.SendInput(worker_id="runtime-1-w1", content="back again"))
        assert run_end(back, ack.run_id, ack.event_id).type == "run_completed"
    finally:
        for rt in clients.values():
            rt.close()
        for server in servers.values():
            stop(server)
