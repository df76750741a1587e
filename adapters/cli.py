"""``worker-runtime serve``: run the HTTP adapter on waitress, configured by flags.

Flags override the ``WORKER_RUNTIME_*`` environment. A start-up fault (bad
variable, bad flag, locked data directory) exits with status 2 and one line
naming it. SIGTERM and SIGINT stop serving and close the runtime.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

import waitress

from worker_runtime import Runtime, RuntimeConfig
from worker_runtime.errors import ConfigError, WorkerRuntimeError

from .app import create_app, settle_token
from .remote_cli import add_client_commands, run_client
from .settings import (
    HttpSettings,
    Token,
    read_token_file,
    token_from_env,
)

__all__ = ["build_parser", "check_exposure", "is_loopback", "main", "parse_listen", "serve"]

DEFAULT_LISTEN = "127.0.0.1:8780"
# waitress's default of 4 threads is soon held by long-polls (``wait``).
DEFAULT_THREADS = 16
# waitress's own body limit is only a backstop: the app answers 413 as JSON
# for anything its Content-Length shows to be too large.
_WAITRESS_BODY_HEADROOM = 1024 * 1024

log = logging.getLogger("adapters.cli")


def build_parser() -> argparse.ArgumentParser:
    """The ``worker-runtime`` argument parser: ``serve``, and the client commands."""
    parser = argparse.ArgumentParser(prog="worker-runtime", description=__doc__.split("\n")[0])
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


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(listen: str, token: Token | None) -> None:
    """Refuse a non-loopback address unless the operator configured a token."""
    host, _port = parse_listen(listen)
    if not is_loopback(host) and (token is None or not token.explicit):
        raise ConfigError(
            f"--listen={listen!r} is not a loopback address: configure a token "
            "(WORKER_RUNTIME_TOKEN, WORKER_RUNTIME_TOKEN_FILE or --token-file) to serve it"
        )


def _open(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Runtime, HttpSettings, Token | None]:
    overrides = {
        "runtime_id": args.runtime_id,
        "store": args.store,
        "data_dir": args.data_dir,
        "profiles_path": args.profiles,
    }
    config = RuntimeConfig.from_env(environ).replace(
        **{k: v for k, v in overrides.items() if v is not None}
    )
    settings = HttpSettings.from_env(environ)
    token: Token | None = (
        read_token_file(args.token_file, "--token-file")
        if args.token_file
        else token_from_env(environ)
    )
    check_exposure(args.listen, token)
    return Runtime.open(config), settings, token


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # waitress's loop catches SystemExit, stops its threads and returns to ``serve``.
    raise SystemExit(0)


def serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the server until SIGTERM/SIGINT; 2 on a start-up fault."""
    try:
        runtime, settings, token = _open(args, environ)
    except WorkerRuntimeError as exc:
        print(f"worker-runtime: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:  # the store should raise typed errors; stay one line anyway
        print(f"worker-runtime: cannot open the runtime: {exc}", file=sys.stderr)
        return 2
    try:
        token = settle_token(runtime, token)
        app = create_app(runtime, token=token.value, settings=settings)
        signal.signal(signal.SIGTERM, _stop_on_signal)
        signal.signal(signal.SIGINT, _stop_on_signal)
        waitress.serve(
            app,
            listen=args.listen,
            threads=args.threads,
            max_request_body_size=settings.max_body_bytes + _WAITRESS_BODY_HEADROOM,
            ident="worker-runtime",
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
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    return serve(args, os.environ)


if __name__ == "__main__":
    sys.exit(main())
