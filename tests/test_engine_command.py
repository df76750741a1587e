"""The ``command`` engine with real processes, driven through the runtime."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker_runtime import commands
from worker_runtime.domain import WorkerIntent
from worker_runtime.engines.command import TRUNCATED, _BoundedOutput
from worker_runtime.testing import wait_for_run_end, wait_until

from .support.engine_support import (
    alive,
    create,
    read_pids,
    reply,
    run_once,
    runtimes,
    send,
    zombie_children,
)

PY = sys.executable

# Ignores TERM, forks two grandchildren (which inherit that), writes all three pids.
SPAWNER = r"""
import os, signal, sys, time
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        while True:
            time.sleep(1)
    pids.append(pid)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("\n".join(map(str, pids)))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(1)
"""


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    """``make(profiles, **config)`` opens a runtime on those profiles; closed after the test."""
    with runtimes(tmp_path) as open_:
        yield open_
    _kill_leftovers(tmp_path)


def _kill_leftovers(tmp_path: Path) -> None:
    """If a test failed, processes it started may still run: kill those we can prove
    are ours (their command line names this test's directory, or is our ``sleep 60``)."""
    for pidfile in tmp_path.glob("pid*"):
        for pid in map(int, pidfile.read_text().split()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in cmdline or cmdline == b"sleep\x0060\x00":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def cmd(argv: list[str], **settings: Any) -> dict[str, Any]:
    return {"engine": "command", "argv": argv, **settings}


def test_stdout_is_the_reply_and_stdin_the_input(make: Any) -> None:
    rt = make({"cat": cmd(["cat"])})
    worker = create(rt, "cat")
    end = run_once(rt, worker, "héllo, wörld ✓\nsecond line")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "héllo, wörld ✓\nsecond line"


def test_transcript_mode_sends_the_conversation_as_json(make: Any) -> None:
    script = (
        "import json, sys; d = json.load(sys.stdin); "
        "print(json.dumps([d['input'], d['intent']['role'], "
        "[(e['role'], e['content']) for e in d['transcript']]]))"
    )
    rt = make({"t": cmd([PY, "-c", script], stdin="transcript")})
    worker = create(rt, "t", WorkerIntent(kind="role", role="critic"))
    first = run_once(rt, worker, "one")
    second = run_once(rt, worker, "two")
    assert first.type == second.type == "run_completed"
    got = json.loads(reply(rt, worker, second.run_id))
    assert got[0] == "two"
    assert got[1] == "critic"
    assert got[2][0] == ["user", "one"]
    assert got[2][-1] == ["user", "two"]
    assert {role for role, _ in got[2][1:-1]} == {"assistant"}  # the first reply


def test_non_zero_exit_fails_with_status_and_stderr_tail(make: Any) -> None:
    script = "echo partial; i=0; while [ $i -lt 3000 ]; do echo noise $i >&2; i=$((i+1)); done; "
    script += "echo 'the real cause' >&2; exit 3"
    rt = make({"bad": cmd(["sh", "-c", script])})
    worker = create(rt, "bad")
    end = run_once(rt, worker, "x")
    assert end.type == "run_failed"
    error = str(end.data["error"])
    assert error.startswith("command exited with status 3: ...")
    assert error.endswith("the real cause")
    assert "noise 0\n" not in error and len(error) < 1200
    assert reply(rt, worker, end.run_id) == "partial\n"  # output so far is kept
    detail = rt.dispatch(commands.GetWorker(worker_id=worker))
    assert detail.last_error == error


def test_killed_by_a_signal_is_a_failure(make: Any) -> None:
    rt = make({"seg": cmd(["sh", "-c", "kill -SEGV $$"])})
    end = run_once(rt, create(rt, "seg"), "x")
    assert end.type == "run_failed"
    assert end.data["error"] == "command was killed by signal SIGSEGV"


def test_a_program_that_cannot_start_fails_the_run(make: Any) -> None:
    rt = make({"none": cmd(["/nonexistent/program"])})
    end = run_once(rt, create(rt, "none"), "x")
    assert end.type == "run_failed"
    assert "could not start '/nonexistent/program'" in str(end.data["error"])


def test_timeout_kills_the_process(make: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 60"
    rt = make({"slow": cmd(["sh", "-c", script], timeout_s=0.5, term_grace_s=0.5)})
    end = run_once(rt, create(rt, "slow"), "x")
    assert end.type == "run_timed_out"
    assert end.data["error"] == "timed out after 0.5s"
    [pid] = read_pids(pidfile, 1)
    wait_until(lambda: not alive(pid), what=f"pid {pid} to die")


@pytest.mark.parametrize("term", ["ignore", "default"])
def test_cancel_kills_the_whole_group(
    make: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, term: str
) -> None:
    pidfile = tmp_path / "pids"
    rt = make(
        {"spawner": cmd([PY, "-c", SPAWNER, str(pidfile), term], term_grace_s=0.3)},
        cancel_grace_s=10,
    )
    worker = create(rt, "spawner")
    run_id = send(rt, worker, "x")
    pids = read_pids(pidfile, 3)
    assert all(alive(pid) for pid in pids)
    with caplog.at_level(logging.WARNING):
        ack = rt.dispatch(commands.CancelRun(worker_id=worker, run_id=run_id))
    assert ack.run_status == "cancelled"
    # The engine returned by itself: the runtime never had to give up on it.
    assert "did not stop within the grace period" not in caplog.text
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), what=f"pid {pid} to die")
    assert pids[0] not in zombie_children()


def test_stop_kills_the_running_process(make: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    rt = make({"spawner": cmd([PY, "-c", SPAWNER, str(pidfile), "ignore"], term_grace_s=0.2)})
    worker = create(rt, "spawner")
    run_id = send(rt, worker, "x")
    pids = read_pids(pidfile, 3)
    ack = rt.dispatch(commands.StopWorker(worker_id=worker, reason="done"))
    assert ack.cancelled_run_id == run_id
    assert wait_for_run_end(rt, run_id).type == "run_cancelled"
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), what=f"pid {pid} to die")


def test_background_children_do_not_outlive_a_finished_run(make: Any, tmp_path: Path) -> None:
    # The leader exits at once; its background child still holds stdout open.
    pidfile = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; echo done"
    rt = make({"bg": cmd(["sh", "-c", script])})
    worker = create(rt, "bg")
    end = run_once(rt, worker, "x")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "done\n"
    [pid] = read_pids(pidfile, 1)
    wait_until(lambda: not alive(pid), what=f"background pid {pid} to die")


def test_large_output_is_bounded_and_the_program_is_not_blocked(make: Any) -> None:
    script = "import sys; sys.stdout.write('x' * 5_000_000); sys.stdout.flush(); print('end')"
    rt = make({"big": cmd([PY, "-c", script], max_output_bytes=10_000)})
    worker = create(rt, "big")
    end = run_once(rt, worker, "x")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "x" * 10_000 + TRUNCATED


def test_non_utf8_output_is_replaced_not_fatal(make: Any) -> None:
    rt = make({"raw": cmd(["sh", "-c", r"printf '\377\376ok \303\251'"])})
    worker = create(rt, "raw")
    end = run_once(rt, worker, "x")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "\ufffd\ufffdok é"


def test_a_character_split_across_reads_survives() -> None:
    chunks: list[str] = []
    out = _BoundedOutput(chunks.append, 100)
    encoded = "é✓".encode()
    for i in range(len(encoded)):
        out.write(encoded[i : i + 1])
    out.close()
    assert "".join(chunks) == "é✓"


def test_truncation_never_cuts_a_character_in_half() -> None:
    chunks: list[str] = []
    out = _BoundedOutput(chunks.append, 4)
    out.write("aé✓".encode())  # the limit falls inside "✓"
    out.write(b"more")
    out.close()
    assert "".join(chunks) == "aé" + TRUNCATED


def test_environment_is_minimal_plus_ids_and_profile_env(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_RUNTIME_TOKEN", "runtime-secret")
    monkeypatch.setenv("KEEP_ME", "kept")
    monkeypatch.setenv("DROP_ME", "dropped")
    script = (
        'echo "$WORKER_RUNTIME_ID|$WORKER_ID|$RUN_ID|$FOO|${KEEP_ME-unset}|'
        '${DROP_ME-unset}|${WORKER_RUNTIME_TOKEN-unset}|${PATH:+path}"'
    )
    profile = cmd(
        ["sh", "-c", script], env={"FOO": "bar", "RUN_ID": "spoofed"}, inherit_env=["KEEP_ME"]
    )
    rt = make({"env": profile})
    worker = create(rt, "env")
    end = run_once(rt, worker, "x")
    assert end.type == "run_completed"
    expected = f"rt-eng|{worker}|{end.run_id}|bar|kept|unset|unset|path\n"
    assert reply(rt, worker, end.run_id) == expected


def test_cwd_and_shell_mode(make: Any, tmp_path: Path) -> None:
    rt = make({"sh": cmd(['echo "$(pwd) $0-$1"', "a", "b"], shell=True, cwd=str(tmp_path))})
    worker = create(rt, "sh")
    end = run_once(rt, worker, "x")
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == f"{tmp_path} a-b\n"


def test_without_shell_argv_is_not_interpreted(make: Any) -> None:
    rt = make({"echo": cmd(["echo", "$HOME; true"])})
    worker = create(rt, "echo")
    end = run_once(rt, worker, "x")
    assert reply(rt, worker, end.run_id) == "$HOME; true\n"


def test_a_program_that_ignores_its_input_still_completes(make: Any) -> None:
    rt = make({"noread": cmd(["echo", "ok"])})
    worker = create(rt, "noread")
    end = run_once(rt, worker, "y" * 200_000)  # more than a pipe buffer
    assert end.type == "run_completed"
    assert reply(rt, worker, end.run_id) == "ok\n"
