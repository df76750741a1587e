"""Low-level file operations of the fs store: explicit fsyncs, no swallowed ``OSError``.

Nothing here follows a symbolic link: a file is opened, created, renamed or
removed relative to its directory, itself opened ``O_DIRECTORY|O_NOFOLLOW``,
with ``O_NOFOLLOW`` on the file too; an existing directory is checked with
``lstat`` on its own name (never a name ending in ``/``, which resolves a
link). A link found (as the file or as its directory, even one planted while
the store runs) raises :class:`SymlinkFound` (an ``OSError``), so nothing is
read, cut or written through it. Paths are the store's own, below a data
directory whose own path was resolved once at open (``FsStore.open``).
Directories are created 0700 and files 0600: transcripts are nobody else's
business.

Every system call that changes a file goes through one :class:`FileOps`
object, so a test can inject a failing ``write`` or ``fsync`` with a small
subclass (a fake, not a mock). Nothing here retries: after a failed fsync
the kernel may already have dropped the dirty pages, so the caller must
treat the store as failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["DIR_MODE", "FILE_MODE", "FileOps", "Parallel", "SymlinkFound", "check_dir"]

DIR_MODE = 0o700
FILE_MODE = 0o600


class SymlinkFound(OSError):
    """A symbolic link (or a non-directory) where the store expects its own file or
    directory; it is never followed."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ELOOP, "a symbolic link, never followed", path)


class FileOps:
    """The file system calls the fs store makes (override to inject faults)."""

    def open(self, path: str, flags: int, mode: int = FILE_MODE) -> int:
        directory, name = os.path.split(path)  # (``_in_dir`` inline: reads call this a lot)
        dir_fd = _open_dir(directory)
        try:
            return os.open(name, flags | os.O_CLOEXEC | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SymlinkFound(path) from None
            raise
        finally:
            os.close(dir_fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        """Write all of ``data`` (``os.write`` may write less than asked)."""
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (fewer only at end of file)."""
        parts: list[bytes] = []
        while size > 0:
            chunk = os.pread(fd, size, offset)
            if not chunk:
                break
            parts.append(chunk)
            size, offset = size - len(chunk), offset + len(chunk)
        return b"".join(parts)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (a link is moved as a link, never followed)."""
        with _in_dir(src) as (src_dir, src_name), _in_dir(dst) as (dst_dir, dst_name):
            os.replace(src_name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)

    def unlink(self, path: str) -> None:
        with _in_dir(path) as (directory, name):
            os.unlink(name, dir_fd=directory)

    def rmdir(self, path: str) -> None:
        with _in_dir(path) as (directory, name):
            os.rmdir(name, dir_fd=directory)

    def mkdir(self, path: str) -> bool:
        """Create ``path``; True if it was created, False if it existed (as a real
        directory: anything else there raises :class:`SymlinkFound`)."""
        with _in_dir(path) as (directory, name):
            try:
                os.mkdir(name, DIR_MODE, dir_fd=directory)
            except FileExistsError:
                if not stat.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode):
                    raise SymlinkFound(os.path.normpath(path)) from None
                return False
        return True

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creates, renames) durable."""
        fd = _open_dir(path)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    # -- compound operations --------------------------------------------------

    def write_synced(self, path: str, data: bytes, mode: int = FILE_MODE) -> None:
        """Write ``path`` from scratch and fsync it (the first half of an atomic replace)."""
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            self.write(fd, data)
            self.fsync(fd)
        finally:
            self.close(fd)

    def atomic_write(self, path: str, data: bytes, mode: int = FILE_MODE) -> None:
        """Replace ``path`` atomically: temp file in the same directory, fsync,
        ``os.replace``, fsync the directory. Readers see the old or the new file."""
        temp = path + ".tmp"
        self.write_synced(temp, data, mode)
        self.replace(temp, path)
        self.fsync_dir(os.path.dirname(path))

    def makedirs(self, path: str) -> None:
        """Create the data directory ``path`` and missing parents, fsyncing each new
        entry's parent. The operator's own path may pass through links; the
        store's directories below it are made with :meth:`mkdir`, which checks."""
        parent = os.path.dirname(path)
        if parent and parent != path and not os.path.isdir(parent):
            self.makedirs(parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path) from None
            return
        self.fsync_dir(parent or ".")

    def read_file(self, path: str) -> bytes | None:
        """The whole file, or None if it does not exist."""
        try:
            fd = self.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return self.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            self.close(fd)

    def keep_aside(self, path: str, data: bytes) -> str:
        """Save bytes cut from ``path`` next to it (``<path>.torn-<ns>``); returns the name."""
        aside = f"{path}.torn-{time.time_ns()}"
        try:
            self.write_synced(aside, data)
        except OSError:
            with contextlib.suppress(OSError):  # what failed is the write, raised below
                self.unlink(aside)
            raise
        self.fsync_dir(os.path.dirname(path))
        return aside


def check_dir(path: str) -> None:
    """Raise :class:`SymlinkFound` unless ``path`` is a real directory (``lstat``)."""
    path = os.path.normpath(path)  # "dir/" would make lstat look through a link
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise SymlinkFound(path)


def _open_dir(path: str) -> int:
    """A descriptor of the directory ``path``, never through a link in its last name."""
    path = os.path.normpath(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SymlinkFound(path) from None
        raise


@contextlib.contextmanager
def _in_dir(path: str) -> Iterator[tuple[int, str]]:
    """``path``'s directory, opened without following a link, and its own name.

    A call made relative to it cannot be sent elsewhere by a link put in place
    of the directory (a worker's, say) after the store checked it."""
    directory, name = os.path.split(os.path.normpath(path))
    fd = _open_dir(directory or ".")
    try:
        yield fd, name
    finally:
        os.close(fd)


class Parallel:
    """Runs independent fsyncs at the same time.

    On a journalling file system concurrent fsyncs share journal commits, so
    a flush that touches many files waits for about one commit, not one per
    file. The pool is created on first use and lives as long as its store.
    """

    def __init__(self, threads: int = 16) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run every task; wait for all of them, then raise the first failure."""
        if len(tasks) <= 1:
            for task in tasks:
                task()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="wr-fsync")
        futures = [self._pool.submit(task) for task in tasks[1:]]
        first: BaseException | None = None
        try:
            tasks[0]()
        except BaseException as exc:
            first = exc
        for future in futures:
            failed = future.exception()
            if failed is not None and first is None:
                first = failed
        if first is not None:
            raise first

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
