"""The remote half of the API: :class:`RemoteRuntime` speaks the HTTP API and
offers what :class:`worker_runtime.Runtime` offers (``dispatch``, ``follow``,
``close``), so Backend code does not care which one it holds.

Standard library only (``http.client``)::

    from worker_runtime import commands
    from worker_runtime.client import RemoteRuntime

    with RemoteRuntime("http://127.0.0.1:8780", token=token) as rt:
        worker = rt.dispatch(commands.CreateWorker(display_name="scout"))
"""

from __future__ import annotations

from .codec import ClientClosed, InvalidResponse, RuntimeUnreachable
from .remote import RemoteRuntime

__all__ = ["ClientClosed", "InvalidResponse", "RemoteRuntime", "RuntimeUnreachable"]
