"""Flushing many files at once.

A checkpoint must make every data file written since the previous one durable. One
fsync per file costs a journal commit each (seconds for thousands of streams);
Linux's syncfs(2) flushes the whole file system in one pass and, since Linux 5.8,
reports write-back errors. Used when there are more than a few files to flush.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

SYNCFS_THRESHOLD = 16

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _syncfs = _libc.syncfs
    _syncfs.argtypes = [ctypes.c_int]
    _syncfs.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux/glibc: per-file fsync only
    _syncfs = None


def syncfs_available() -> bool:
    return _syncfs is not None


def syncfs(path: str) -> None:
    """Flush the file system holding `path` (raises OSError like os.fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
