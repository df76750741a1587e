"""The client commands of ``worker-runtime`` through a real server: every
sub-command, in tables and with ``--json``, and the exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cli import build_parser, main
from worker_runtime import commands as c
from worker_runtime.client import RemoteRuntime

from .support.client_support import Proxy
from .support.helpers import examples, run_examples
from .support.server import TOKEN, Server, serve

pytestmark = pytest.mark.timeout(120)

PROFILES = {
    "profiles": {
        "slow": {"engine": "command", "argv": ["sleep", "30"], "timeout_s": 60},
        "fails": {"engine": "command", "shell": True, "argv": ["echo oops >&2; exit 3"]},
        "chatty": {
            "engine": "command",
            "shell": True,
            "argv": ['for i in 1 2 3; do echo "line $i"; done'],
        },
    }
}

GATE: list[Path] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("cli")
    path = root / "profiles.json"
    # "gated": a run that ends once the test creates the file GATE names.
    gated = f'while [ ! -e "{root / "gate"}" ]; do sleep 0.02; done; echo opened'
    profiles = {
        **PROFILES["profiles"],
        "gated": {"engine": "command", "shell": True, "argv": [gated]},
    }
    path.write_text(json.dumps({"profiles": profiles}))
    GATE.append(root / "gate")
    env = {"WORKER_RUNTIME_ID": "rt-cli", "WORKER_RUNTIME_PROFILES": str(path)}
    with serve(env) as running:
        yield running


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    for name in list(os.environ):
        if name.startswith("WORKER_RUNTIME_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WORKER_RUNTIME_URL", server.base_url)
    monkeypatch.setenv("WORKER_RUNTIME_TOKEN", TOKEN)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    data: dict[str, object] = json.loads(out)
    return data


def test_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "status")
    assert code == 0
    assert "runtime_id" in out and "rt-cli" in out and "slow" in out
    runtime = as_json(capsys, "status")["runtime"]
    assert isinstance(runtime, dict) and runtime["runtime_id"] == "rt-cli"


def test_create_workers_and_stop(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "create", "--id", "cli-a", "--name", "Alpha")
    assert (code, out) == (0, "cli-a\n")
    worker = as_json(capsys, "create", "--id", "cli-b", "--profile", "slow")["worker"]
    assert isinstance(worker, dict)
    assert worker["profile"] == {"kind": "named", "value": "slow"}
    code, out, _ = cli(capsys, "workers")
    lines = out.splitlines()
    assert lines[0].split() == ["WORKER", "STATUS", "NAME", "PROFILE", "TRANSCRIPT", "CREATED"]
    assert any(line.split()[:3] == ["cli-a", "idle", "Alpha"] for line in lines)
    code, out, _ = cli(capsys, "stop", "cli-a", "--reason", "done")
    assert (code, out) == (0, "cli-a stopped\n")
    code, out, _ = cli(capsys, "stop", "cli-a")
    assert (code, out) == (0, "cli-a stopped (already stopped)\n")
    stopped = as_json(capsys, "workers", "--status", "stopped")["workers"]
    assert isinstance(stopped, list) and "cli-a" in [w["worker_id"] for w in stopped]
    assert "cli-b" not in [w["worker_id"] for w in stopped]
    ack = as_json(capsys, "stop", "cli-b")["ack"]
    assert isinstance(ack, dict) and ack["status"] == "stopped"


def test_send_follow_prints_the_reply_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-echo")[0] == 0
    code, out, err = cli(capsys, "send", "cli-echo", "hello, world", "--follow")
    assert (code, out) == (0, "hello, world\n"), err
    code, out, _ = cli(capsys, "send", "cli-echo", "again")
    assert code == 0 and out.startswith("run-")
    code, out, _ = cli(capsys, "transcript", "cli-echo")
    assert out.splitlines()[:3] == [
        "[0] user: hello, world",
        "[1] assistant: hello, world",
        "[2] user: again",
    ]
    page = as_json(capsys, "transcript", "cli-echo", "--start", "1")
    assert isinstance(page["items"], list) and page["items"][0]["sequence"] == 1


def test_send_follow_streams_a_multi_part_reply(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-chatty", "--profile", "chatty")[0] == 0
    code, out, err = cli(capsys, "send", "cli-chatty", "go", "--follow")
    assert (code, out) == (0, "line 1\nline 2\nline 3\n\n"), err


def test_send_follow_exits_1_when_the_run_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-fails", "--profile", "fails")[0] == 0
    code, _out, err = cli(capsys, "send", "cli-fails", "x", "--follow")
    assert code == 1
    assert "run_failed" in err and "oops" in err


def test_send_follow_json_prints_the_ack_then_the_runs_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(capsys, "create", "--id", "cli-json")[0] == 0
    code, out, _ = cli(capsys, "send", "cli-json", "hi", "--follow", "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    run_id = lines[0]["ack"]["run_id"]
    assert [e["type"] for e in lines[1:]][-1] == "run_completed"
    assert all(e["run_id"] == run_id for e in lines[1:])


def test_cancel_a_running_run_then_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-slow", "--profile", "slow")[0] == 0
    code, run_id, _ = cli(capsys, "send", "cli-slow", "zzz")
    run_id = run_id.strip()
    code, out, _ = cli(capsys, "cancel", "cli-slow", "--run", run_id)
    assert (code, out) == (0, f"{run_id} cancelled\n")
    code, out, _ = cli(capsys, "cancel", "cli-slow")
    assert (code, out) == (0, "nothing to cancel\n")
    ack = as_json(capsys, "cancel", "cli-slow", "--run", run_id)["ack"]
    assert isinstance(ack, dict) and ack["run_status"] == "cancelled"


def test_runs_lists_a_workers_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-runs")[0] == 0
    assert cli(capsys, "send", "cli-runs", "one", "--follow")[0] == 0
    assert cli(capsys, "send", "cli-runs", "two", "--follow")[0] == 0
    code, out, _ = cli(capsys, "runs", "cli-runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUN", "STATUS", "INPUT", "REPLY", "QUEUED", "STARTED", "FINISHED", "ERROR"
    ]  # fmt: skip
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["completed", "0", "1"],
        ["completed", "2", "3"],
    ]
    assert all(line.split()[-1] == "-" for line in lines[1:])  # no error
    runs = as_json(capsys, "runs", "cli-runs")["runs"]
    assert isinstance(runs, list)
    assert [(r["status"], r["input_sequence"], r["output_chars"]) for r in runs] == [
        ("completed", 0, 3),
        ("completed", 2, 3),
    ]
    assert [r["run_id"] for r in runs] == [line.split()[0] for line in lines[1:]]
    code, out, err = cli(capsys, "runs", "nobody")
    assert (code, out) == (1, "")
    assert err.startswith("worker-runtime: worker_not_found: ")


def test_runs_shows_a_failed_runs_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-runs-fail", "--profile", "fails")[0] == 0
    assert cli(capsys, "send", "cli-runs-fail", "x", "--follow")[0] == 1
    code, out, _ = cli(capsys, "runs", "cli-runs-fail")
    assert code == 0
    (row,) = out.splitlines()[1:]
    assert row.split()[1] == "failed" and "oops" in row


def test_delete_only_a_stopped_worker(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-del")[0] == 0
    code, out, err = cli(capsys, "delete", "cli-del")
    assert (code, out) == (1, "")
    assert err.startswith("worker-runtime: worker_not_stopped: ")
    assert cli(capsys, "stop", "cli-del")[0] == 0
    code, out, _ = cli(capsys, "delete", "cli-del")
    assert (code, out) == (0, "cli-del deleted\n")
    workers = as_json(capsys, "workers")["workers"]
    assert isinstance(workers, list) and "cli-del" not in [w["worker_id"] for w in workers]
    code, _, err = cli(capsys, "delete", "cli-del")
    assert code == 1 and err.startswith("worker-runtime: worker_not_found: ")
    # The id may be used again; --json prints the ack.
    assert cli(capsys, "create", "--id", "cli-del")[0] == 0
    assert cli(capsys, "stop", "cli-del")[0] == 0
    ack = as_json(capsys, "delete", "cli-del")["ack"]
    assert isinstance(ack, dict) and ack["worker_ref"]["worker_id"] == "cli-del"
    assert isinstance(ack["event_id"], int)


def _await_queued(worker_id: str, count: int, server: Server) -> list[str]:
    """The worker's run ids once ``count`` runs exist, the last one queued."""
    with RemoteRuntime(server.base_url, token=TOKEN) as rt:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = rt.dispatch(c.ListRuns(worker_id=worker_id)).runs
            if len(runs) == count and runs[-1].status.value == "queued":
                return [r.run_id for r in runs]
            time.sleep(0.02)
    raise AssertionError(f"{worker_id}: no queued run #{count}")


def test_send_enqueue_queues_behind_a_busy_worker(
    capsys: pytest.CaptureFixture[str], server: Server
) -> None:
    assert cli(capsys, "create", "--id", "cli-q", "--profile", "slow")[0] == 0
    code, out, _ = cli(capsys, "send", "cli-q", "first")
    assert code == 0
    code, out, err = cli(capsys, "send", "cli-q", "second")
    assert code == 1 and err.startswith("worker-runtime: worker_busy: ")
    code, out, _ = cli(capsys, "send", "cli-q", "second", "--enqueue")
    assert code == 0
    run_id, status = out.split()
    assert run_id.startswith("run-") and status == "queued"
    ack = as_json(capsys, "send", "cli-q", "third", "--enqueue")["ack"]
    assert isinstance(ack, dict)
    assert (ack["run_status"], ack["transcript_sequence"]) == ("queued", None)
    code, out, _ = cli(capsys, "runs", "cli-q")
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["running", "queued", "queued"]
    assert cli(capsys, "stop", "cli-q")[0] == 0


def test_send_enqueue_follow_follows_the_queued_run_to_its_end(
    capsys: pytest.CaptureFixture[str], server: Server
) -> None:
    gate = GATE[0]
    assert cli(capsys, "create", "--id", "cli-qf", "--profile", "gated")[0] == 0
    assert cli(capsys, "send", "cli-qf", "first")[0] == 0
    result: list[int] = []
    follower = threading.Thread(
        target=lambda: result.append(main(["send", "cli-qf", "next", "--enqueue", "--follow"]))
    )
    capsys.readouterr()
    follower.start()
    try:
        _await_queued("cli-qf", 2, server)
    finally:
        gate.touch()  # both runs end
        follower.join(60)
    out, err = capsys.readouterr()
    assert result == [0], err
    assert out == "opened\n\n"


def test_send_enqueue_follow_exits_1_when_the_queued_run_is_cancelled(
    capsys: pytest.CaptureFixture[str], server: Server
) -> None:
    assert cli(capsys, "create", "--id", "cli-qc", "--profile", "slow")[0] == 0
    assert cli(capsys, "send", "cli-qc", "first")[0] == 0
    result: list[int] = []
    follower = threading.Thread(
        target=lambda: result.append(main(["send", "cli-qc", "next", "--enqueue", "--follow"]))
    )
    capsys.readouterr()
    follower.start()
    try:
        queued = _await_queued("cli-qc", 2, server)[1]
        with RemoteRuntime(server.base_url, token=TOKEN) as rt:
            rt.dispatch(c.CancelRun(worker_id="cli-qc", run_id=queued))
    finally:
        follower.join(60)
    _out, err = capsys.readouterr()
    assert result == [1]
    assert "run_cancelled" in err
    assert cli(capsys, "stop", "cli-qc")[0] == 0


def test_events_and_diagnostics(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "create", "--id", "cli-ev")[0] == 0
    code, out, _ = cli(capsys, "events", "--worker", "cli-ev")
    assert code == 0
    (line,) = out.splitlines()
    assert line.split("\t")[1:3] == ["worker_created", "cli-ev"]
    code, out, _ = cli(capsys, "events", "--cursor", "1", "--json")
    events = [json.loads(x) for x in out.splitlines()]
    assert events[0]["type"] == "runtime_started"
    assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
    code, out, _ = cli(capsys, "diagnostics")
    assert code == 0 and "created_without_config_bundle" in out and "cli-ev" in out
    diagnostics = as_json(capsys, "diagnostics")["diagnostics"]
    assert isinstance(diagnostics, list) and diagnostics


def test_events_follow_prints_new_events_as_they_come(server: Server) -> None:
    """The real console script, stopped once it has printed what we wait for."""
    env = {**os.environ, "WORKER_RUNTIME_URL": server.base_url, "WORKER_RUNTIME_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "adapters.cli", "events", "--follow", "--worker", "cli-f"]
    argv += ["--cursor", "1"]  # from the start: the follower may begin after our commands
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            with RemoteRuntime(server.base_url, token=TOKEN) as rt:
                rt.dispatch(c.CreateWorker(worker_id="cli-f"))
                ack = rt.dispatch(c.SendInput(worker_id="cli-f", content="x"))
                assert process.stdout is not None
                seen = []
                for line in process.stdout:
                    seen.append(line.split("\t")[1])
                    if seen[-1] == "run_completed":
                        break
            assert seen == [
                "worker_created",
                "input_accepted",
                "run_started",
                "run_output",
                "run_completed",
            ]
            assert ack.run_id
        finally:
            process.kill()
            process.wait(10)


def test_events_of_one_worker_are_filtered_by_the_runtime(
    capsys: pytest.CaptureFixture[str], server: Server
) -> None:
    assert cli(capsys, "create", "--id", "cli-w1")[0] == 0
    assert cli(capsys, "create", "--id", "cli-w2")[0] == 0
    with Proxy(server.port) as proxy:
        code, out, _ = cli(capsys, "events", "--worker", "cli-w1", "--json", "--url", proxy.url)
        reads = [path for _m, path, _h in proxy.rules.seen if path.startswith("/v1/events")]
    assert code == 0
    assert [
        (e["type"], e["worker_ref"]["worker_id"]) for e in map(json.loads, out.splitlines())
    ] == [("worker_created", "cli-w1")]
    assert reads and all("worker_id=cli-w1" in path for path in reads)


def test_a_closed_stdout_ends_the_follower_quietly(server: Server) -> None:
    """``worker-runtime events --follow --json | head -1``: once the reader has
    gone, the next event ends the command with 141 and no traceback."""
    env = {**os.environ, "WORKER_RUNTIME_URL": server.base_url, "WORKER_RUNTIME_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "adapters.cli", "events", "--follow", "--json", "--cursor", "1"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            assert json.loads(process.stdout.readline())["event_id"] == 1
            process.stdout.close()  # head -1 is done
            with RemoteRuntime(server.base_url, token=TOKEN) as rt:
                rt.dispatch(c.CreateWorker(worker_id="cli-pipe"))  # one more line to write
            assert process.wait(30) == 141
            assert process.stderr.read() == b""
        finally:
            process.kill()
            process.wait(10)


def test_the_top_level_help_describes_the_whole_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert "serve" in description and "client" in description
    assert "run the HTTP adapter" not in description  # the serve command's own docstring


def test_a_typed_error_prints_its_code_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "send", "nobody", "hi")
    assert (code, out) == (1, "")
    assert err.startswith("worker-runtime: worker_not_found: ")
    code, _, err = cli(capsys, "status", "--token", "wrong-token-0123456789")
    assert code == 1 and "unauthorized" in err


def test_connection_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with Proxy(upstream=None) as proxy:
        code, out, err = cli(capsys, "status", "--url", proxy.url)
    assert (code, out) == (2, "")
    assert "cannot reach" in err


def test_configuration_errors_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, _, err = cli(capsys, "status", "--url", "ftp://nowhere")
    assert code == 2 and "ftp://nowhere" in err
    monkeypatch.delenv("WORKER_RUNTIME_TOKEN")
    code, _, err = cli(capsys, "status")
    assert code == 2 and "no token" in err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert cli(capsys, "status", "--token-file", str(token_file))[0] == 0
    monkeypatch.setenv("WORKER_RUNTIME_TOKEN_FILE", str(token_file))
    assert cli(capsys, "status")[0] == 0


@pytest.mark.parametrize(
    "argv", [["send", "only-a-worker"], ["bogus"], ["status", "--nope"], ["cancel"]]
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2


@pytest.mark.parametrize("document", ["docs/cli.md", "README.md"])
def test_docs_python_example_runs_against_a_real_server(server: Server, document: str) -> None:
    """The remote example (docs/cli.md's, and the README's twin of its in-process
    example) prints what it says against a real server."""
    text = (Path(__file__).resolve().parent.parent / document).read_text("utf-8")
    match = re.search(r"<!-- section:remote -->(.*?)<!-- /section:remote -->", text, re.DOTALL)
    assert match
    blocks = examples(match.group(1))
    assert len(blocks) == 1 and blocks[0][1] is not None
    run_examples(blocks, "remote", {"url": server.base_url, "token": TOKEN})


def test_docs_cover_every_client_command() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text("utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        if name != "serve":
            assert f"### `{name}" in text, name
            assert f"$ worker-runtime {name}" in text, name
