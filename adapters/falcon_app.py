"""The REST command server: worker-runtime over HTTP (Falcon, served by waitress).

    waitress-serve --listen=127.0.0.1:8780 --threads=16 --connection-limit=500 \
        --channel-timeout=30 --max-request-body-size=2097152 adapters.falcon_app:app

serves the runtime the ``WORKER_RUNTIME_*`` environment describes (by default
the embedded one: memory store, echo engine), with the limits
``worker-runtime serve`` sets by default. Under waitress-serve the app reads
waitress's command line: a generated token is refused off loopback, and
SIGTERM/SIGINT close the runtime before waitress stops (SPEC section 9).
``create_app(runtime, token=...)``
builds the same app around a runtime you own.

This API is for a trusted Backend. **Browsers must go through the Backend**:
a request carrying an ``Origin`` header is refused (403
``browser_origin_forbidden``) and no CORS header is ever sent. The bearer
token is a placeholder for a trusted Backend, not a user-facing auth model.
"""

from __future__ import annotations

import os

from .app import app_from_env, app_or_exit, create_app

__all__ = ["app", "app_from_env", "create_app"]

app = app_or_exit(os.environ)
