"""One img2mesh process at a time per output folder.

The lock is an OS-level advisory lock (``flock``) held on ``OUT/.img2mesh.lock`` for the life of
the run. The kernel drops it when the process dies, even by ``kill -9`` or power loss, so a lock
file left behind by a dead process is stale by construction and is simply taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Optional

from img2mesh.errors import LockedError
from img2mesh.pipeline.manifest import now_iso

LOCK_NAME = ".img2mesh.lock"


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class RunLock:
    """Context manager holding the lock of one output folder."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`LockedError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                raise LockedError(self._busy_message())
            # Another process may have unlinked the file between our open and our lock; then we
            # locked an orphan inode and must start again on the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(holder).encode())
                self._fd = fd
                return
            os.close(fd)
        raise LockedError(f"could not lock {self.path}: it keeps changing under us")

    def _busy_message(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            who = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        return f"{self.path.parent} is in use by another img2mesh run ({who}); wait for it to finish or use another -o"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.release()
