"""One writer per workdir stage: an exclusive ``fcntl.flock`` on a lock file beside what is written.

::

    with hold_lock(Path("data/equipleth.zarr.lock"), "store data/equipleth.zarr"):
        ...  # only this process writes the store

The stages lock (see ``pipeline.paths`` for the names): a local store (``<store>.lock`` beside it,
taken by :func:`pipeline.recipes.base.run_recipe`; remote fsspec stores are not locked), ``runs/<name>``
(``runs/<name>.lock``, taken by ``rpm train``), ``manifests/`` for ``rpm split``
(``manifests/split.lock``) and a ``rpm synth`` target (``<out>.lock``).

A second process asking for a lock that is held stops at once with :class:`LockedError`, a one-line
message naming the lock file and the PID of its holder. Only with ``wait=True`` (the teacher cache's
``runs/_teachers/<key>.lock``, taken by ``rpm train`` while it trains a teacher nobody has cached yet) does it
print one line on stderr naming the holder and block until the lock is free. The kernel drops a flock when
its holder exits however it exits (SIGKILL included), so a lock never goes stale: the file a killed run
leaves behind is simply taken over by the next run. The holder deletes the file as it releases the lock,
so a finished or refused command leaves nothing behind. flock is advisory and per machine: processes on
other hosts sharing a network file system may not see each other's locks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import RpmError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None


class LockedError(RpmError, RuntimeError):
    """Another process holds the lock of the stage this one was about to write."""


def _holder(fd: int) -> str:
    """The holder's PID as written in the lock file (it may not have written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


@contextmanager
def hold_lock(path: str | Path, what: str, wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock ``path`` for the ``with`` block, or raise :class:`LockedError` at once if
    another process (or another ``hold_lock`` of this process) holds it. ``what`` names the locked thing
    in the message, e.g. ``"store data/x.zarr"``. With ``wait=True`` a held lock is waited for instead:
    one line ``<what>: waiting for another rpm process (PID n, lock <path>)`` on stderr, then the call
    blocks until the holder lets go (a holder in this same process would block it forever). The lock
    file, and any of its parent folders made for it that are still empty, are removed on release."""
    path = Path(path)
    told = False
    if fcntl is None:  # pragma: no cover
        yield path
        return
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a releasing holder removed the folder it made between mkdir's two checks
            continue
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # another holder removed the folder it had created: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if wait:
                if not told:
                    print(f"{what}: waiting for another rpm process ({holder}, lock {path})", file=sys.stderr)
                    told = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
            else:
                os.close(fd)
                raise LockedError(
                    f"{what} is in use by another rpm process ({holder}, lock {path}); "
                    "wait for it to finish, then rerun"
                ) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder deletes the file as it lets go: if it did so between our open and our
        # flock, we hold a lock on a file nobody else will open; start again on the path's new file.
        try:
            on_disk = os.stat(path)
            mine = os.fstat(fd)
            if (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            path.unlink()  # while still holding it: the next process opens a fresh file
        except OSError:
            pass
        os.close(fd)
        for folder in created:  # folders made for the lock alone go too (rmdir fails on a non-empty one)
            try:
                folder.rmdir()
            except OSError:
                break
