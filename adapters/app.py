"""Building the Falcon app: ``create_app`` wires, ``app_from_env`` configures.

``create_app(runtime, token=...)`` only wires routes, middleware and error
handlers around a runtime the caller owns. ``app_from_env(environ)`` reads the
``WORKER_RUNTIME_*`` variables, opens the runtime and settles the token.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import falcon
from falcon.routing import CompiledRouter

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.errors import ConfigError, WorkerRuntimeError
from worker_runtime.routes import ROUTES

from . import resources as r
from .errors import register_error_handlers
from .exposure import WAITRESS_LIMIT_FLAGS, check_hosts, waitress_command
from .logs import start_logging
from .metrics import Metrics, MetricsResource
from .middleware import FrontDoor
from .openapi import build_openapi
from .probes import ReadyResource
from .settings import (
    HttpSettings,
    LogSettings,
    Token,
    generate_token,
    token_from_env,
    unknown_variables,
)
from .signals import GracefulStop

__all__ = [
    "TOKEN_FILE_NAME",
    "WsgiApp",
    "app_from_env",
    "app_or_exit",
    "create_app",
    "settle_token",
]

TOKEN_FILE_NAME = "http-token"

log = logging.getLogger("adapters.app")

WsgiApp = falcon.App[falcon.Request, falcon.Response]


def create_app(runtime: Runtime, *, token: str, settings: HttpSettings | None = None) -> WsgiApp:
    """The WSGI app serving ``runtime`` to callers presenting ``token``."""
    settings = settings or HttpSettings()
    # The router is ours so the access log and metrics can name the route
    # of a request refused before routing.
    router, metrics = CompiledRouter(), Metrics(runtime)
    app: WsgiApp = falcon.App(
        middleware=[FrontDoor(token, settings.max_body_bytes, metrics.observe_request, router)],
        router=router,
        cors_enable=False,
    )
    register_error_handlers(app)
    # The route table is what is mounted and what the document describes.
    limit = settings.max_body_bytes
    for path, resource in r.route_resources(runtime, ROUTES, max_body_bytes=limit).items():
        app.add_route(path, resource)
    document = build_openapi(runtime.config, ROUTES)
    app.add_route("/v1/openapi.json", r.OpenApiResource(document, max_body_bytes=limit))
    app.add_route("/healthz", r.HealthResource(max_body_bytes=limit))
    # Readiness and metrics (adapters/probes.py, adapters/metrics.py).
    app.add_route("/readyz", ReadyResource(runtime))
    app.add_route("/metrics", MetricsResource(metrics))
    return app


def settle_token(runtime: Runtime, token: Token | None, stream: TextIO | None = None) -> Token:
    """``token`` if configured; else a generated one, shown once on ``stream``
    (stderr) and, with the fs store, written to a 0600 file beside the runtime."""
    if token is not None:
        return token
    token = generate_token()
    where = ""
    if runtime.store.kind == "fs" and runtime.config.data_dir:
        path = Path(runtime.config.data_dir, "runtimes", runtime.runtime_id, TOKEN_FILE_NAME)
        _write_private(path, token.value)
        where = f" (also in {path})"
    # Written straight to stderr, not through logging: it must never reach a log
    # pipeline. One write of the whole line: the log listener thread writes to the
    # same stream, and print's separate newline write could let a log line in.
    out = stream or sys.stderr
    out.write(f"worker-runtime: no token configured; generated API token{where}: {token.value}\n")
    out.flush()
    return token


def _write_private(path: Path, value: str) -> None:
    # Temp file created 0600, then renamed: the token is never readable by others,
    # and a crash never leaves a half-written file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (value + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the generated token to {path}: {exc}") from None


def app_from_env(environ: Mapping[str, str]) -> WsgiApp:
    """Open the runtime the environment describes and build its app.

    Raises ``ConfigError`` naming the variable for bad values (checked before
    the runtime is opened), or the runtime's own start-up errors.
    """
    return _open_from_env(environ)[1]


def _open_from_env(environ: Mapping[str, str]) -> tuple[Runtime, WsgiApp]:
    config = RuntimeConfig.from_env(environ)
    settings = HttpSettings.from_env(environ)
    token = token_from_env(environ)
    runtime = Runtime.open(config)
    try:
        token = settle_token(runtime, token)
        app = create_app(runtime, token=token.value, settings=settings)
    except BaseException:
        runtime.close()
        raise
    # A clean interpreter exit closes the runtime (registered after the log
    # pipeline, so it runs first and its last lines are still written).
    atexit.register(runtime.close)
    return runtime, app


def app_or_exit(environ: Mapping[str, str], argv: Sequence[str] | None = None) -> WsgiApp:
    """``app_from_env`` for ``waitress-serve`` (the module-level ``app``).

    A start-up error exits with one line naming the fault instead of a
    traceback. Logging is set up from the environment unless the host process
    already configured it; unknown ``WORKER_RUNTIME_*`` variables are warned
    about. When ``argv`` (default ``sys.argv``) is waitress-serve's, its listen
    addresses get the same loopback rule as ``worker-runtime serve``, and SIGTERM
    and SIGINT close the runtime before waitress stops (``adapters.signals``).
    """
    try:
        if not logging.getLogger().handlers:
            start_logging(LogSettings.from_env(environ))
        for warning in unknown_variables(environ):
            log.warning(warning)
        waitress = waitress_command(sys.argv if argv is None else argv)
        if waitress is not None:
            hosts, flags = waitress
            check_hosts(hosts, token_from_env(environ), "waitress-serve --listen")
            missing = [f for f in WAITRESS_LIMIT_FLAGS if f not in flags]
            if missing:
                log.warning(
                    "waitress-serve without %s: waitress's defaults let idle connections "
                    "fill every slot and accept 1 GB bodies (see the README)",
                    ", ".join("--" + f.replace("_", "-") for f in missing),
                )
        runtime, app = _open_from_env(environ)
    except WorkerRuntimeError as exc:
        raise SystemExit(f"worker-runtime: {exc.message}") from None
    if waitress is not None:
        GracefulStop(runtime).install()
    return app
