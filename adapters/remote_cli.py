"""``worker-runtime status | workers | create | send | runs | cancel | stop | delete |
transcript | events | diagnostics``: the client commands of the console script, on
:class:`worker_runtime.client.RemoteRuntime`.

Each prints a human-readable table, or with ``--json`` the API's JSON (paged
lists joined into one document; followed events one object per line). Exit
status: 0 done; 1 a typed error (its code and message on stderr) or, for
``send --follow``, a run that did not complete; 2 a usage or connection error;
141 the reader of stdout went away (``| head -1``), quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

from worker_runtime import commands as c
from worker_runtime.client import RemoteRuntime, RuntimeUnreachable
from worker_runtime.domain import (
    RUN_END_EVENTS,
    BusyPolicy,
    Diagnostic,
    Event,
    ProfileSelector,
    WorkerStatus,
)
from worker_runtime.errors import ConfigError, OperationTimeout, WorkerRuntimeError
from worker_runtime.results import RunInfo, WorkerSummary
from worker_runtime.wire import to_json

from .settings import URL_VAR, read_token_file, token_from_env

__all__ = ["DEFAULT_URL", "EXIT_BROKEN_PIPE", "add_client_commands", "run_client"]

DEFAULT_URL = "http://127.0.0.1:8780"
EXIT_BROKEN_PIPE = 128 + 13
"""The exit status when stdout's reader went away: a shell's for SIGPIPE."""

Runner = Callable[[RemoteRuntime, argparse.Namespace, TextIO], int]
T = TypeVar("T")
K = TypeVar("K")


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the runtime's URL ({URL_VAR}, default {DEFAULT_URL})")
    token = common.add_mutually_exclusive_group()
    token.add_argument("--token", help="API token (WORKER_RUNTIME_TOKEN)")
    token.add_argument("--token-file", help="file holding the token (WORKER_RUNTIME_TOKEN_FILE)")
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return common


def add_client_commands(subparsers: Any) -> None:
    """Add the client sub-commands to ``subparsers`` (from ``add_subparsers``);
    each sets ``client_runner``, which :func:`run_client` calls."""
    common = [_common()]

    def add(name: str, runner: Runner, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help, parents=common)
        parser.set_defaults(client_runner=runner)
        return parser

    add("status", _status, "the runtime's summary")
    workers = add("workers", _workers, "list the workers")
    workers.add_argument("--status", choices=[s.value for s in WorkerStatus])
    create = add("create", _create, "create a worker")
    create.add_argument("--id", dest="worker_id", help="worker id (generated if absent)")
    create.add_argument("--name", dest="display_name", help="display name")
    create.add_argument("--profile", help="a named profile (default: the runtime's)")
    send = add("send", _send, "send input to a worker (starts a run)")
    send.add_argument("worker")
    send.add_argument("text")
    send.add_argument("--follow", action="store_true", help="print the reply as it streams")
    send.add_argument(
        "--enqueue", action="store_true", help="queue the input if the worker is busy"
    )
    runs = add("runs", _runs, "list a worker's runs")
    runs.add_argument("worker")
    cancel = add("cancel", _cancel, "cancel the worker's active run")
    cancel.add_argument("worker")
    cancel.add_argument("--run", dest="run_id", help="cancel only this run")
    cancel.add_argument("--reason")
    stop = add("stop", _stop, "stop the worker for good")
    stop.add_argument("worker")
    stop.add_argument("--reason")
    delete = add("delete", _delete, "delete a stopped worker")
    delete.add_argument("worker")
    transcript = add("transcript", _transcript, "print a worker's transcript")
    transcript.add_argument("worker")
    transcript.add_argument("--start", type=int, default=0, help="first sequence (0)")
    events = add("events", _events, "print the event log")
    events.add_argument("--worker", help="only this worker's events")
    events.add_argument("--cursor", type=int, help="first event id (default: 1, or now)")
    events.add_argument("--follow", action="store_true", help="wait for new events")
    add("diagnostics", _diagnostics, "print the diagnostics")


def run_client(
    args: argparse.Namespace, environ: Mapping[str, str], out: TextIO | None = None
) -> int:
    """Run the client sub-command ``args`` names; the exit status."""
    out = out or sys.stdout
    try:
        url = args.url or environ.get(URL_VAR) or DEFAULT_URL
        token = _token(args, environ)
        with RemoteRuntime(url, token=token, timeout=30.0) as rt:
            runner: Runner = args.client_runner
            return runner(rt, args, out)
    except (RuntimeUnreachable, OperationTimeout, ConfigError) as exc:
        print(f"worker-runtime: {exc.message}", file=sys.stderr)
        return 2
    except WorkerRuntimeError as exc:
        print(f"worker-runtime: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head -1``): stop without a traceback, with the
        # status of a writer a SIGPIPE ended, as other tools in a pipeline.
        _silence(out)
        return EXIT_BROKEN_PIPE


def _silence(out: TextIO) -> None:
    """Point ``out``'s descriptor at /dev/null, so the interpreter's flush of what
    is still buffered at exit does not fail again on the closed pipe."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's StringIO): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _token(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    if args.token:
        return str(args.token)
    if args.token_file:
        return read_token_file(args.token_file, "--token-file").value
    token = token_from_env(environ)
    if token is None:
        raise ConfigError(
            "no token: pass --token or --token-file, or set WORKER_RUNTIME_TOKEN "
            "or WORKER_RUNTIME_TOKEN_FILE"
        )
    return token.value


def _every(fetch: Callable[[K], tuple[Iterable[T], K | None]], first: K) -> Iterator[T]:
    """Every item of a paged list: ``fetch(after)`` gives a page's items and the
    next ``after``, or None on the last page."""
    after: K | None = first
    while after is not None:
        items, after = fetch(after)
        yield from items


# -- output ------------------------------------------------------------------------


def _print_json(out: TextIO, data: Any) -> None:
    out.write(json.dumps(data, ensure_ascii=False) + "\n")


def _table(out: TextIO, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text = [[str(h) for h in header], *[["-" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    for row in text:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _fields(out: TextIO, pairs: Iterable[tuple[str, object]]) -> None:
    _table(out, ("FIELD", "VALUE"), pairs)


def _event_line(event: Event) -> str:
    worker = event.worker_ref.worker_id if event.worker_ref else "-"
    data = " ".join(f"{k}={v}" for k, v in event.data.items() if v is not None)
    return f"{event.event_id}\t{event.type}\t{worker}\t{event.run_id or '-'}\t{data}".rstrip()


# -- the commands ------------------------------------------------------------------


def _status(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    info = rt.dispatch(c.GetRuntime())
    if args.json:
        _print_json(out, {"runtime": to_json(info)})
        return 0
    w = info.workers
    _fields(
        out,
        [
            ("runtime_id", info.runtime_id),
            ("display_name", info.display_name),
            ("status", info.status),
            ("version", info.version),
            ("store", info.store),
            ("started_at", info.started_at),
            ("workers", f"{w.total} ({w.idle} idle, {w.running} running, {w.stopped} stopped)"),
            ("active_runs", info.active_runs),
            ("last_event_id", info.last_event_id),
            ("diagnostics", info.diagnostic_count),
            ("profiles", ", ".join(p.name for p in info.profiles)),
            ("engines", ", ".join(info.engines)),
        ],
    )
    return 0


def _workers(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    status = WorkerStatus(args.status) if args.status else None

    def fetch(after: str) -> tuple[Iterable[WorkerSummary], str | None]:
        page = rt.dispatch(c.ListWorkers(status=status, after=after or None))
        return page.workers, page.next_after

    workers = list(_every(fetch, ""))
    if args.json:
        _print_json(out, {"workers": to_json(workers), "next_after": None})
        return 0
    _table(
        out,
        ("WORKER", "STATUS", "NAME", "PROFILE", "TRANSCRIPT", "CREATED"),
        (
            (
                w.worker_id,
                w.status.value,
                w.display_name,
                w.profile.value or w.profile.kind,
                w.transcript_len,
                w.created_at,
            )
            for w in workers
        ),
    )
    return 0


def _create(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    command = c.CreateWorker(worker_id=args.worker_id, display_name=args.display_name)
    if args.profile:
        command = dataclasses.replace(
            command, profile=ProfileSelector(kind="named", value=args.profile)
        )
    worker = rt.dispatch(command)
    if args.json:
        _print_json(out, {"worker": to_json(worker)})
    else:
        out.write(f"{worker.worker_id}\n")
    return 0


def _send(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    on_busy = BusyPolicy.ENQUEUE if args.enqueue else BusyPolicy.REJECT
    ack = rt.dispatch(c.SendInput(worker_id=args.worker, content=args.text, on_busy=on_busy))
    if args.json:
        _print_json(out, {"ack": to_json(ack)})
    elif args.enqueue and not args.follow:
        # Whether it waits in the queue or started at once is the caller's news.
        out.write(f"{ack.run_id} {ack.run_status}\n")
    elif not args.follow:
        out.write(f"{ack.run_id}\n")
    if not args.follow:
        return 0
    # The reply's entries come after the input's (a queued input has no sequence yet).
    seq = ack.transcript_sequence
    start = 0 if seq is None else seq + 1
    end = _follow_reply(rt, args, ack.run_id, ack.event_id, start, out)
    if end.type != "run_completed":
        error = end.data.get("error")
        print(f"worker-runtime: {end.type}" + (f": {error}" if error else ""), file=sys.stderr)
        return 1
    return 0


def _follow_reply(
    rt: RemoteRuntime, args: argparse.Namespace, run_id: str, cursor: int, start: int, out: TextIO
) -> Event:
    """Print ``run_id``'s reply as it streams; its terminal event.

    The reply arrives as ``run_output`` events carrying the text, or (older
    runtimes) as ``output_appended`` events naming transcript entries."""
    streamed = False
    for event in rt.follow(worker_id=args.worker, cursor=cursor):
        if event.run_id != run_id:
            continue
        if args.json:
            _print_json(out, to_json(event))
        elif event.type == "run_output":
            streamed = True
            out.write(str(event.data.get("text") or ""))
            out.flush()
        elif event.type == "output_appended" and not streamed:
            start = _print_entries(rt, args.worker, run_id, start, out)
        if event.type in RUN_END_EVENTS:
            if not args.json and not streamed:
                _print_entries(rt, args.worker, run_id, start, out)
            if not args.json:
                out.write("\n")
            return event
    raise AssertionError("follow never ends by itself")


def _print_entries(rt: RemoteRuntime, worker_id: str, run_id: str, start: int, out: TextIO) -> int:
    """Print the run's assistant entries from ``start`` on; the next start."""
    next_start: int | None = start
    while next_start is not None:
        page = rt.dispatch(c.GetTranscript(worker_id=worker_id, start=next_start))
        for entry in page.items:
            if entry.run_id == run_id and entry.role.value == "assistant":
                out.write(entry.content)
            start = entry.sequence + 1
        next_start = page.next_start
    out.flush()
    return start


def _runs(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    def fetch(after: str) -> tuple[Iterable[RunInfo], str | None]:
        page = rt.dispatch(c.ListRuns(worker_id=args.worker, after=after or None))
        return page.runs, page.next_after

    runs = list(_every(fetch, ""))
    if args.json:
        _print_json(out, {"runs": to_json(runs), "next_after": None})
        return 0
    _table(
        out,
        ("RUN", "STATUS", "INPUT", "REPLY", "QUEUED", "STARTED", "FINISHED", "ERROR"),
        (
            (
                r.run_id,
                r.status.value,
                r.input_sequence,
                r.reply_sequence,
                r.queued_at,
                r.started_at,
                r.finished_at,
                r.error,
            )
            for r in runs
        ),
    )
    return 0


def _cancel(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    ack = rt.dispatch(c.CancelRun(worker_id=args.worker, run_id=args.run_id, reason=args.reason))
    if args.json:
        _print_json(out, {"ack": to_json(ack)})
    elif ack.cancelled_run_id is None and ack.run_id is None:
        out.write("nothing to cancel\n")
    else:
        out.write(f"{ack.run_id or ack.cancelled_run_id} {ack.run_status}\n")
    return 0


def _stop(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    ack = rt.dispatch(c.StopWorker(worker_id=args.worker, reason=args.reason))
    if args.json:
        _print_json(out, {"ack": to_json(ack)})
    else:
        note = " (already stopped)" if ack.already_stopped else ""
        out.write(f"{ack.worker_ref.worker_id} {ack.status.value}{note}\n")
    return 0


def _delete(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    ack = rt.dispatch(c.DeleteWorker(worker_id=args.worker))
    if args.json:
        _print_json(out, {"ack": to_json(ack)})
    else:
        out.write(f"{ack.worker_ref.worker_id} deleted\n")
    return 0


def _transcript(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    items: list[Any] = []
    next_start: int | None = args.start
    worker_ref = None
    while next_start is not None:
        page = rt.dispatch(c.GetTranscript(worker_id=args.worker, start=next_start))
        worker_ref = page.worker_ref
        items.extend(page.items)
        next_start = page.next_start
    if args.json:
        _print_json(out, {"worker_ref": to_json(worker_ref), "items": to_json(items)})
        return 0
    for entry in items:
        out.write(f"[{entry.sequence}] {entry.role.value}: {entry.content}\n")
    return 0


def _events(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:
    def show(event: Event) -> None:
        if args.json:
            _print_json(out, to_json(event))
        else:
            out.write(_event_line(event) + "\n")
        out.flush()

    if args.follow:
        for event in rt.follow(worker_id=args.worker, cursor=args.cursor):
            show(event)
        return 0
    cursor = 1 if args.cursor is None else args.cursor
    while True:
        # The runtime filters by worker: other workers' events never cross the wire.
        page = rt.dispatch(c.ReadEvents(cursor=cursor, worker_id=args.worker))
        for event in page.events:
            show(event)
        cursor = page.cursor.next_event_id
        if not page.has_more:
            return 0


def _diagnostics(rt: RemoteRuntime, args: argparse.Namespace, out: TextIO) -> int:

    def fetch(after: int) -> tuple[Iterable[Diagnostic], int | None]:
        page = rt.dispatch(c.GetDiagnostics(after=after))
        return page.diagnostics, page.next_after

    found = list(_every(fetch, 0))
    if args.json:
        _print_json(out, {"diagnostics": to_json(found), "next_after": None})
        return 0
    _table(
        out,
        ("ID", "SEVERITY", "CODE", "WORKER", "MESSAGE"),
        (
            (
                d.id,
                d.severity.value,
                d.code,
                d.worker_ref.worker_id if d.worker_ref else None,
                d.message,
            )
            for d in found
        ),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The client commands alone (``python -m adapters.remote_cli status``)."""
    parser = argparse.ArgumentParser(prog="worker-runtime")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return run_client(parser.parse_args(argv), os.environ)


if __name__ == "__main__":
    sys.exit(main())
