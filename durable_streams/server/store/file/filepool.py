"""A bounded LRU pool of descriptors for the per-stream data files (and their
boundary index files, keyed by `index_key`).

Shared by the writer thread (pwrite, fsync) and the reader threads (pread). A handle
in use is pinned and never closed under its user; when every handle is pinned the
pool overshoots its bound by at most the number of concurrent users (writer + read
threads) and shrinks back as they finish.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


INDEX_SUFFIX = ".idx"


def index_key(incarnation: str) -> str:
    """The pool key of an incarnation's boundary index file (boundaries.py)."""
    return incarnation + INDEX_SUFFIX


@dataclass(slots=True)
class _Handle:
    fd: int
    pins: int = 0
    retired: bool = False  # dropped from the pool while pinned: close on last unpin


class DataFilePool:
    def __init__(self, streams_dir: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("max_file_handles must be at least 1")
        self.streams_dir = streams_dir
        self.capacity = capacity
        self.evictions = 0
        self._lock = threading.Lock()
        self._handles: OrderedDict[str, _Handle] = OrderedDict()

    @property
    def open_handles(self) -> int:
        return len(self._handles)

    def path_of(self, key: str) -> str:
        """A key is an incarnation (its data file) or `index_key(incarnation)`."""
        # 256 shard directories keep directories small with 100,000s of streams.
        name = key if key.endswith(INDEX_SUFFIX) else key + ".data"
        return os.path.join(self.streams_dir, key[:2], name)

    @contextmanager
    def handle(self, incarnation: str, create: bool = False) -> Iterator[int]:
        handle = self._pin(incarnation, create)
        try:
            yield handle.fd
        finally:
            with self._lock:
                handle.pins -= 1
                if handle.retired and handle.pins == 0:
                    os.close(handle.fd)
                else:
                    self._evict_locked()

    def _pin(self, incarnation: str, create: bool) -> _Handle:
        with self._lock:
            handle = self._handles.get(incarnation)
            if handle is not None:
                self._handles.move_to_end(incarnation)
                handle.pins += 1
                return handle
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(self.path_of(incarnation), flags, 0o644)  # I/O outside the lock
        with self._lock:
            handle = self._handles.get(incarnation)
            if handle is not None:  # another thread opened it meanwhile
                os.close(fd)
                self._handles.move_to_end(incarnation)
            else:
                handle = self._handles[incarnation] = _Handle(fd)
            handle.pins += 1
            self._evict_locked()
            return handle

    def _evict_locked(self) -> None:
        excess = len(self._handles) - self.capacity
        if excess <= 0:
            return
        victims = []
        for incarnation, handle in self._handles.items():  # oldest first
            if handle.pins == 0:
                victims.append(incarnation)
                if len(victims) == excess:
                    break
        for incarnation in victims:
            os.close(self._handles.pop(incarnation).fd)
            self.evictions += 1

    def discard(self, incarnation: str) -> None:
        """Forget a deleted incarnation's descriptor (closed now, or by its last user)."""
        with self._lock:
            handle = self._handles.pop(incarnation, None)
            if handle is None:
                return
            if handle.pins:
                handle.retired = True
            else:
                os.close(handle.fd)

    def close_all(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                if handle.pins:
                    handle.retired = True
                else:
                    os.close(handle.fd)
            self._handles.clear()
