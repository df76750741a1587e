"""Ownership of a data directory: an OS lock per runtime, a stable default runtime id."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable

from ...domain import is_valid_id
from ...errors import ConfigError
from .fileops import FileOps, SymlinkFound

__all__ = ["DEFAULT_RUNTIME_FILE", "DirLock", "default_runtime_id"]

DEFAULT_RUNTIME_FILE = "default-runtime"


class DirLock:
    """An exclusive, non-blocking ``flock`` on ``<runtime dir>/lock``.

    The kernel drops the lock when its process dies (even by ``kill -9``), so a
    crash never leaves a stale lock behind; a live second owner is refused.
    """

    def __init__(self, fd: int, path: str) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, path: str) -> DirLock:
        """Lock ``path`` or raise ``ConfigError`` naming the directory and its owner
        (:class:`SymlinkFound` if ``path`` is a link: it is never followed)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SymlinkFound(path) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {owner})" if owner.isdigit() else ""
            raise ConfigError(
                f"the runtime directory {os.path.dirname(path)} is already in use by another "
                f"process{who}; only one process may own a runtime directory",
                details={"reason": "locked"},
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only a hint for the message above; the flock is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Unlock (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def default_runtime_id(data_dir: str, new_id: Callable[[str], str], ops: FileOps) -> str:
    """The runtime id of ``data_dir`` when none is configured: created once, then reused.

    A new id is written to a temp file and hard-linked into place, which fails
    if another process won the race; both then use the winner's id.
    """
    path = os.path.join(data_dir, DEFAULT_RUNTIME_FILE)
    existing = _read_id(path, ops)
    if existing is not None:
        return existing
    temp = f"{path}.{os.getpid()}.tmp"
    ops.write_synced(temp, (new_id("rt") + "\n").encode("ascii"))
    try:
        with contextlib.suppress(FileExistsError):  # another process created it first
            os.link(temp, path)
    finally:
        os.unlink(temp)
    ops.fsync_dir(data_dir)
    created = _read_id(path, ops)
    assert created is not None
    return created


def _read_id(path: str, ops: FileOps) -> str | None:
    data = ops.read_file(path)
    if data is None:
        return None
    value = data.decode("utf-8", "replace").strip()
    if not is_valid_id(value):
        raise ConfigError(f"{path} does not hold a valid runtime id", details={"file": path})
    return value
