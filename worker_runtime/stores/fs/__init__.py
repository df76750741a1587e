"""The filesystem store, one module per part.

- ``store.py``: :class:`FsStore`, staging writes and serving reads;
- ``layout.py``: where files live and how records are encoded;
- ``fileops.py``: every system call that touches a file (faults injectable);
- ``jsonl.py`` and ``recovery.py``: an append-only log with its offset index,
  and opening one as a crash left it;
- ``commit.py`` and ``flush.py``: group commit and the leader's flush and checkpoints;
- ``scan.py`` and ``load.py``: what a crash left, and the committed state it is cut back to;
- ``quarantine.py``: damaged workers moved aside, their ids kept reserved;
- ``lock.py``: one owning process per runtime directory.
"""

from __future__ import annotations

from .store import FsStore

__all__ = ["FsStore"]
