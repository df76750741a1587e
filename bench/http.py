"""Benchmark: GET /v1/workers/{id} throughput against a bare Falcon route.

Both apps run on waitress with the same settings, each in its own process,
and are measured in the same run, alternately: first the real app (token
check, request id, access log, dispatcher, schema validation, JSON), then a
bare Falcon route returning a body of exactly the same bytes. The figure is
the ratio of their throughputs (goal: >= 0.85), for each setting of waitress
threads x client connections (default both of ``4x16`` and ``16x8``). The
load comes from ``wrk`` when it is installed (``apt-get install wrk``), else
from a Python keep-alive client.

    python bench/http.py [--seconds 5] [--rounds 3] [--settings 4x16,16x8]

Not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/http.py``, this file's directory comes first on sys.path
# and this module would shadow the standard library's ``http``: drop it, and make
# the repository importable instead (for ``bench.servers``).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
sys.path.insert(0, _REPO)

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.servers import ServerProcess, python_load  # noqa: E402

_WRK_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")


# -- the two servers (run in child processes) ----------------------------------------


def bare_app(body: bytes) -> Any:
    """A Falcon app with one route answering ``body`` as JSON: the baseline."""
    import falcon

    class Fixed:
        def on_get(self, req: falcon.Request, resp: falcon.Response, worker_id: str) -> None:
            resp.data = body
            resp.content_type = falcon.MEDIA_JSON

    app = falcon.App()
    app.add_route("/v1/workers/{worker_id}", Fixed())
    return app


def serve_child(kind: str, threads: int, body_file: str | None) -> None:
    """Run one app on waitress (same settings for both) until killed."""
    import logging

    import waitress

    # As waitress-serve does: its "Serving on" line is how the parent finds the port.
    logging.getLogger("waitress").setLevel(logging.INFO)
    if kind == "runtime":
        from adapters.app import app_or_exit

        app = app_or_exit(os.environ)  # exactly what adapters.falcon_app:app builds
    else:
        assert body_file is not None
        app = bare_app(Path(body_file).read_bytes())
    waitress.serve(app, listen="127.0.0.1:0", threads=threads)


# -- the parent: start, load, compare --------------------------------------------------


def request(port: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_wrk(port: int, path: str, token: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-H",
            f"Authorization: Bearer {token}",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    match = _WRK_RATE.search(out)
    if not match:
        raise RuntimeError("cannot read wrk's output:\n" + out)
    if "Non-2xx" in out:
        raise RuntimeError("the benchmark saw errors:\n" + out)
    return float(match.group(1))


def run_python(port: int, path: str, token: str, seconds: float, connections: int) -> float:
    return python_load(port, ("GET", path, None, 200), token, seconds, connections)


GOAL = 0.85


def measure(args: argparse.Namespace) -> list[tuple[str, float]]:
    """Each setting's ratio, measured in this run."""
    ratios = []
    for setting in args.settings.split(","):
        threads, connections = (int(n) for n in setting.lower().split("x"))
        args.threads, args.connections = threads, connections
        ratios.append((f"{threads} threads x {connections} connections", measure_one(args)))
    print("ratios runtime/bare (medians), this run:")
    for name, ratio in ratios:
        print(f"  {name:32s} {ratio:.2f}  (goal >= {GOAL})")
    return ratios


def measure_one(args: argparse.Namespace) -> float:
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_RUNTIME_")}
    env.update({"WORKER_RUNTIME_TOKEN": token, "PYTHONPATH": str(Path(__file__).parents[1])})
    this = [sys.executable, __file__, "--threads", str(args.threads)]
    load = run_wrk if shutil.which("wrk") and not args.python_client else run_python
    with tempfile.TemporaryDirectory() as tmp:
        real = ServerProcess([*this, "--serve", "runtime"], env, Path(tmp, "runtime.log"))
        try:
            status, created = request(
                real.port, "POST", "/v1/workers", token, {"display_name": "b"}
            )
            assert status == 201, created
            path = f"/v1/workers/{json.loads(created)['worker']['worker_id']}"
            status, body = request(real.port, "GET", path, token)
            assert status == 200, body
            Path(tmp, "body.json").write_bytes(body)
            bare = ServerProcess(
                [*this, "--serve", "bare", "--body-file", str(Path(tmp, "body.json"))],
                env,
                Path(tmp, "bare.log"),
            )
            try:
                return report(args, load, real.port, bare.port, path, token, len(body))
            finally:
                bare.stop()
        finally:
            real.stop()


def report(
    args: argparse.Namespace, load: Any, real: int, bare: int, path: str, token: str, size: int
) -> float:
    client = "wrk" if load is run_wrk else "python keep-alive client"
    print(f"GET {path}: {size}-byte body, waitress threads={args.threads}, {client}")
    print(
        f"{args.connections} connections, {args.rounds} rounds of {args.seconds}s each, alternating"
    )
    load(real, path, token, 1, args.connections)  # warm both up
    load(bare, path, token, 1, args.connections)
    runtime_rates, bare_rates = [], []
    for n in range(args.rounds):
        runtime_rates.append(load(real, path, token, args.seconds, args.connections))
        bare_rates.append(load(bare, path, token, args.seconds, args.connections))
        rates = f"runtime {runtime_rates[-1]:8.0f} req/s   bare {bare_rates[-1]:8.0f} req/s"
        print(f"  round {n + 1}: {rates}")
    ratio = statistics.median(runtime_rates) / statistics.median(bare_rates)
    print(f"ratio runtime/bare (medians): {ratio:.2f}  (goal >= {GOAL})")
    return ratio


def breakdown(samples: int = 3000) -> None:
    """Where a request's time goes, in-process (no HTTP): the whole app, the
    dispatcher call inside it, and the bare route."""
    import logging
    import timeit
    from io import StringIO
    from wsgiref.util import setup_testing_defaults

    from adapters.app import create_app
    from worker_runtime import Runtime

    # Access lines go to a handler, as under waitress-serve, but into memory.
    logging.getLogger("adapters").setLevel(logging.INFO)
    logging.getLogger("adapters").addHandler(logging.StreamHandler(StringIO()))
    logging.getLogger("adapters").propagate = False
    token = "x" * 43
    runtime = Runtime.open()
    try:
        app = create_app(runtime, token=token)
        wire = {"command": "CreateWorker", "args": {}}
        worker_id = runtime.dispatch_json(wire)["worker_id"]
        get = {"command": "GetWorker", "args": {"worker_id": worker_id}}
        body = json.dumps(runtime.dispatch_json(get)).encode()
        bare = bare_app(body)

        def call(wsgi: Any) -> None:
            environ: dict[str, Any] = {}
            setup_testing_defaults(environ)
            environ["PATH_INFO"] = f"/v1/workers/{worker_id}"
            environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
            b"".join(wsgi(environ, lambda status, headers, exc=None: None))

        def per_call(fn: Any) -> float:
            fn()
            return timeit.timeit(fn, number=samples) / samples * 1e6

        print("in-process cost per GET (no HTTP, no waitress):")
        print(f"  whole app          {per_call(lambda: call(app)):6.1f} us")
        print(f"  of which dispatch  {per_call(lambda: runtime.dispatch_json(get)):6.1f} us")
        print(f"  bare falcon route  {per_call(lambda: call(bare)):6.1f} us")
    finally:
        runtime.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--settings",
        default="4x16,16x8",
        help="comma-separated waitress THREADSxCONNECTIONS settings, each measured",
    )
    parser.add_argument("--threads", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--serve", choices=("runtime", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--body-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_child(args.serve, args.threads, args.body_file)
    else:
        measure(args)
        breakdown()


if __name__ == "__main__":
    main()
