"""``GET /readyz``: whether the runtime accepts commands now (no token needed).

Liveness (``/healthz``) says the process serves; readiness says a load balancer
may send it commands: 200 ``{"status": "ready"}`` while the runtime runs, else
503 ``{"status": "stopping"|"unavailable", "runtime_id": ...}`` with
``Retry-After`` (``unavailable`` after a store write failed).
"""

from __future__ import annotations

import falcon

from worker_runtime import Runtime

__all__ = ["RETRY_AFTER_S", "ReadyResource"]

RETRY_AFTER_S = 1


class ReadyResource:
    """Readiness from the runtime's ``status`` (a plain read: no lock, never blocks)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        status = self._runtime.status
        if status == "running":
            resp.media = {"status": "ready"}
            return
        resp.status = falcon.HTTP_503
        resp.set_header("Retry-After", str(RETRY_AFTER_S))
        resp.media = {"status": status, "runtime_id": self._runtime.runtime_id}
