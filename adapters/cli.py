"""``worker-runtime serve``: run the HTTP adapter on waitress, configured by flags.

Flags override the ``WORKER_RUNTIME_*`` environment. A start-up fault (bad
variable, bad flag, locked data directory) exits with status 2 and one line
naming it. SIGTERM and SIGINT close the runtime (``adapters.signals``), then
stop serving. ``worker-runtime --version`` prints the version.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import waitress

from worker_runtime import Runtime, RuntimeConfig, __version__
from worker_runtime.config import env_variable
from worker_runtime.errors import ConfigError, WorkerRuntimeError

from .app import create_app, settle_token
from .exposure import check_hosts, is_loopback
from .logs import start_logging
from .remote_cli import add_client_commands, run_client
from .settings import (
    DEFAULT_CHANNEL_TIMEOUT_S,
    DEFAULT_CONNECTION_LIMIT,
    LOG_FORMATS,
    HttpSettings,
    LogSettings,
    ServeSettings,
    Token,
    read_token_file,
    token_from_env,
    unknown_variables,
)
from .signals import GracefulStop

__all__ = ["build_parser", "check_exposure", "is_loopback", "main", "parse_listen", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8780"
# waitress's default of 4 threads is soon held by long-polls (``wait``).
DEFAULT_THREADS = 16
CHANNEL_REQUEST_LOOKAHEAD = 5

log = logging.getLogger("adapters.cli")

DESCRIPTION = (
    "The worker-runtime command line: 'serve' runs a runtime behind its HTTP API; "
    "the other commands are clients of a running one (docs/cli.md)."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``worker-runtime`` argument parser: ``serve``, and the client commands."""
    parser = argparse.ArgumentParser(prog="worker-runtime", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"worker-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API on waitress")
    serve.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default %(default)s)")
    serve.add_argument("--runtime-id", help="runtime id (WORKER_RUNTIME_ID)")
    serve.add_argument("--store", choices=("memory", "fs"), help="store (WORKER_RUNTIME_STORE)")
    serve.add_argument("--data-dir", help="fs store directory (WORKER_RUNTIME_DATA_DIR)")
    serve.add_argument("--profiles", help="profiles file (WORKER_RUNTIME_PROFILES)")
    serve.add_argument(
        "--token-file", help="file holding the API token (WORKER_RUNTIME_TOKEN_FILE)"
    )
    serve.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        help="server threads (%(default)s)",
    )
    serve.add_argument(
        "--log-level", type=str.upper, help="DEBUG, INFO, ... (WORKER_RUNTIME_LOG_LEVEL; INFO)"
    )
    serve.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text or json (WORKER_RUNTIME_LOG_FORMAT; text)"
    )
    serve.add_argument(
        "--connection-limit",
        type=_positive_int,
        help=f"open connections at most (WORKER_RUNTIME_CONNECTION_LIMIT; "
        f"{DEFAULT_CONNECTION_LIMIT})",
    )
    serve.add_argument(
        "--channel-timeout",
        type=_positive_int,
        help=f"seconds before an idle connection is closed (WORKER_RUNTIME_CHANNEL_TIMEOUT_S; "
        f"{DEFAULT_CHANNEL_TIMEOUT_S})",
    )
    add_client_commands(commands)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen={listen!r}: expected HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def check_exposure(listen: str, token: Token | None) -> None:
    """Refuse a non-loopback address unless the operator configured a token."""
    host, _port = parse_listen(listen)
    check_hosts([host], token, f"--listen={listen!r}")


def _open(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Runtime, HttpSettings, ServeSettings, Token | None]:
    overrides: dict[str, object] = {
        "runtime_id": args.runtime_id,
        "store": args.store,
        "data_dir": args.data_dir,
        "profiles_path": args.profiles,
    }
    if not environ.get(env_variable("max_waiters"), "").strip():
        # Half the threads may hold waits; the rest serve everything else.
        overrides["max_waiters"] = max(1, args.threads // 2)
    config = RuntimeConfig.from_env(environ).replace(
        **{k: v for k, v in overrides.items() if v is not None}
    )
    settings = HttpSettings.from_env(environ)
    limits = {
        "connection_limit": getattr(args, "connection_limit", None),
        "channel_timeout_s": getattr(args, "channel_timeout", None),
    }
    serving = dataclasses.replace(
        ServeSettings.from_env(environ), **{k: v for k, v in limits.items() if v is not None}
    )
    token: Token | None = (
        read_token_file(args.token_file, "--token-file")
        if args.token_file
        else token_from_env(environ)
    )
    check_exposure(args.listen, token)
    return Runtime.open(config), settings, serving, token


def serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the server until SIGTERM/SIGINT; 2 on a start-up fault."""
    try:
        runtime, settings, serving, token = _open(args, environ)
    except WorkerRuntimeError as exc:
        print(f"worker-runtime: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:  # the store should raise typed errors; stay one line anyway
        print(f"worker-runtime: cannot open the runtime: {exc}", file=sys.stderr)
        return 2
    try:
        token = settle_token(runtime, token)
        app = create_app(runtime, token=token.value, settings=settings)
        GracefulStop(runtime).install()
        limits = serving.waitress_kwargs(settings)
        waitress.serve(
            app,
            listen=args.listen,
            threads=args.threads,
            ident="worker-runtime",
            connection_limit=limits["connection_limit"],
            channel_timeout=limits["channel_timeout"],
            max_request_body_size=limits["max_request_body_size"],
            # Reading ahead lets waitress tell a hung-up client
            # (``waitress.client_disconnected``), so its wait ends early.
            channel_request_lookahead=CHANNEL_REQUEST_LOOKAHEAD,
        )
    except WorkerRuntimeError as exc:
        print(f"worker-runtime: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:  # the address is taken, or not ours to bind
        print(f"worker-runtime: cannot listen on {args.listen!r}: {exc}", file=sys.stderr)
        return 2
    finally:
        runtime.close()
    log.info("stopped; runtime %s closed", runtime.runtime_id)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``worker-runtime`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "client_runner", None) is not None:
        return run_client(args, os.environ)
    try:
        logs = dataclasses.replace(
            LogSettings.from_env(os.environ),
            **{k: v for k, v in (("level", args.log_level), ("format", args.log_format)) if v},
        )
    except ConfigError as exc:
        print(f"worker-runtime: {exc.message}", file=sys.stderr)
        return 2
    pipeline = start_logging(logs)
    try:
        for warning in unknown_variables(os.environ):
            log.warning(warning)
        return serve(args, os.environ)
    finally:
        pipeline.stop()  # every queued line written before the process exits


if __name__ == "__main__":
    sys.exit(main())
