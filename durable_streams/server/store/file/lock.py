"""One process per data_dir: an exclusive flock on `<data_dir>/LOCK` holding our pid."""

from __future__ import annotations

import fcntl
import os

from ..base import StoreError


class DataDirInUse(StoreError):
    """Another process (or another FileStore in this one) holds the data_dir."""


class DataDirLock:
    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "LOCK")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data_dir {self.data_dir} is in use by another process (pid {holder})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only informative (for the error above); the flock is the lock, and
        # the kernel drops it when the process dies, so a stale LOCK file never blocks.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
