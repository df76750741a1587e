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
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import falcon

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.errors import ConfigError, WorkerRuntimeError
from worker_runtime.routes import ROUTES

from . import resources as r
from .errors import register_error_handlers
from .middleware import Guard, RequestLog
from .openapi import build_openapi
from .settings import (
    HttpSettings,
    Token,
    generate_token,
    token_from_env,
)

__all__ = [
    "TOKEN_FILE_NAME",
    "WsgiApp",
    "app_from_env",
    "app_or_exit",
    "create_app",
    "settle_token",
]

TOKEN_FILE_NAME = "http-token"

WsgiApp = falcon.App[falcon.Request, falcon.Response]


def create_app(runtime: Runtime, *, token: str, settings: HttpSettings | None = None) -> WsgiApp:
    """The WSGI app serving ``runtime`` to callers presenting ``token``."""
    settings = settings or HttpSettings()
    app: WsgiApp = falcon.App(
        middleware=[RequestLog(), Guard(token, settings.max_body_bytes)], cors_enable=False
    )
    register_error_handlers(app)
    # The route table is what is mounted and what the document describes.
    limit = settings.max_body_bytes
    for path, resource in r.route_resources(runtime, ROUTES, max_body_bytes=limit).items():
        app.add_route(path, resource)
    document = build_openapi(runtime.config, ROUTES)
    app.add_route("/v1/openapi.json", r.OpenApiResource(document, max_body_bytes=limit))
    app.add_route("/healthz", r.HealthResource(max_body_bytes=limit))
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
    # Written straight to stderr, not through logging: it must never reach a log pipeline.
    print(
        f"worker-runtime: no token configured; generated API token{where}: {token.value}",
        file=stream or sys.stderr,
        flush=True,
    )
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
    # A clean interpreter exit (Ctrl-C under waitress-serve) closes the runtime.
    atexit.register(runtime.close)
    return app


def app_or_exit(environ: Mapping[str, str]) -> WsgiApp:
    """``app_from_env`` for ``waitress-serve``: a start-up error exits with one line
    naming the fault instead of a traceback; access lines are logged at INFO
    (as waitress does for its own logger) unless logging says otherwise."""
    access = logging.getLogger("adapters")
    if access.level == logging.NOTSET:
        access.setLevel(logging.INFO)
    try:
        return app_from_env(environ)
    except WorkerRuntimeError as exc:
        raise SystemExit(f"worker-runtime: {exc.message}") from None
