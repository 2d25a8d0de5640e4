"""Small file-system helpers shared by the file store's modules."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from ..base import StoreError, StoreFull

_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def fsync_dir(path: str) -> None:
    """Make a directory's entries (created, renamed, unlinked files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | memoryview, position: int) -> None:
    """os.pwrite may write less than asked (signals, odd file systems): loop until done."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        view = view[written:]
        position += written


IOV_MAX = 512  # well under Linux's 1024


def writev_all(fd: int, buffers: list[bytes]) -> int:
    """Write every buffer in order with as few syscalls as possible; returns the byte count."""
    total = 0
    views = [memoryview(b) for b in buffers if b]
    while views:
        written = os.writev(fd, views[:IOV_MAX])
        total += written
        while written:  # drop what was written, keep the rest of a partial buffer
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0
    return total


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def store_error(exc: BaseException, what: str) -> StoreError:
    """Map an OS error to the contract's errors: no space -> StoreFull, anything else -> StoreError."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
        return StoreFull(f"{what}: no space left on device")
    return StoreError(f"{what}: {exc}")


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): free the blocks of a range, which then reads as
    zeros; the file keeps its size, so every offset after it stays put. (Python's os
    module has posix_fallocate, which allocates, but no way to punch.)"""
    if length <= 0:
        return
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
