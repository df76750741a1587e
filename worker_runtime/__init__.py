"""worker-runtime: host long-lived, agent-like workers behind typed commands.

In-process use::

    from worker_runtime import Runtime, commands

    rt = Runtime.open()
    worker = rt.dispatch(commands.CreateWorker(display_name="scout"))
    ack = rt.dispatch(commands.SendInput(worker_id=worker.worker_id, content="hello"))
"""

from __future__ import annotations

from . import commands, errors, results
from .api import RuntimeAPI
from .config import RuntimeConfig
from .runtime import Runtime
from .version import __version__

__all__ = ["Runtime", "RuntimeAPI", "RuntimeConfig", "__version__", "commands", "errors", "results"]
