"""Who may reach the server: a generated token only on loopback, under any command.

``worker-runtime serve`` knows its ``--listen``; under ``waitress-serve`` the
app reads waitress's own command line with waitress's own parser
(``waitress.adjustments.Adjustments``), so both commands refuse a non-loopback
listener unless the operator configured the token.
"""

from __future__ import annotations

import getopt
import ipaddress
import os
from collections.abc import Sequence
from typing import Any

from waitress.adjustments import Adjustments

from worker_runtime.errors import ConfigError

from .settings import Token

__all__ = ["WAITRESS_LIMIT_FLAGS", "check_hosts", "is_loopback", "waitress_command"]

WAITRESS_LIMIT_FLAGS = ("connection_limit", "channel_timeout", "max_request_body_size")
"""waitress settings the README's ``waitress-serve`` line sets (SPEC section 10)."""


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_hosts(hosts: Sequence[str], token: Token | None, where: str) -> None:
    """Refuse any non-loopback host unless the operator configured a token."""
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed and (token is None or not token.explicit):
        raise ConfigError(
            f"{where}: {exposed[0]!r} is not a loopback address: configure a token "
            "(WORKER_RUNTIME_TOKEN, WORKER_RUNTIME_TOKEN_FILE or --token-file) to serve it"
        )


def _is_waitress(argv: Sequence[str]) -> bool:
    if not argv:
        return False
    program = os.path.normpath(argv[0])
    return os.path.basename(program) == "waitress-serve" or program.endswith(
        os.path.join("waitress", "__main__.py")
    )


def waitress_command(argv: Sequence[str]) -> tuple[list[str], set[str]] | None:
    """For a ``waitress-serve`` command line: the hosts it will listen on
    (``[]`` for a unix socket) and the names of the settings it sets. None when
    ``argv`` is not waitress-serve's, or waitress will refuse it anyway."""
    if not _is_waitress(argv):
        return None
    try:
        # (typeshed's stub says ``str``; waitress's runner passes the argv list)
        kw, _apps = Adjustments.parse_args(list(argv[1:]))  # type: ignore[arg-type]
    except getopt.GetoptError:
        return None  # waitress prints its usage and exits
    for runner_only in ("help", "call"):
        kw.pop(runner_only, None)
    if "unix_socket" in kw:
        return [], set(kw)
    try:
        adjustments = Adjustments(**kw)
    except ValueError:
        return None
    listen: list[tuple[Any, Any, Any, tuple[Any, ...]]] = adjustments.listen  # type: ignore[assignment]
    hosts = [str(sockaddr[0]) for _family, _type, _proto, sockaddr in listen]
    return hosts, set(kw)
