"""Acknowledged bytes on their way to the data files.

An append is durable once its log record is fsynced; its bytes still have to reach the
stream's data file, which is only page cache until the next checkpoint fsyncs it. Writing
them one `pwrite` per append (each a GIL round trip for the writer thread) cost more CPU
than the log itself. So the writer stages them here after the fsync and writes them out
later in bulk: one `pwrite` per stream for everything staged. Readers take the staged
part of a range from memory. Staging never holds the only copy: the log does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Tail:
    start: int  # file position of the first staged byte
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class StagedTails:
    """Per incarnation, the staged bytes: contiguous, right after what its file holds.
    Written by the writer thread; read by reader threads (under the lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tails: dict[str, _Tail] = {}
        self.bytes = 0
        self.since = 0.0  # monotonic time of the oldest staged byte

    def stage(self, incarnation: str, position: int, data: bytes) -> bool:
        """Stage `data` at `position`; False (nothing staged) when it does not follow the
        incarnation's staged bytes: the caller writes those out first and tries again."""
        with self._lock:
            tail = self._tails.get(incarnation)
            if tail is None:
                tail = self._tails[incarnation] = _Tail(position)
            elif tail.start + tail.size != position:
                return False
            tail.chunks.append(data)
            tail.size += len(data)
            if not self.bytes:
                self.since = time.monotonic()
            self.bytes += len(data)
            return True

    def pending(self) -> list[tuple[str, int, list[bytes]]]:
        """What to write out: (incarnation, file position, chunks) per staged stream."""
        with self._lock:
            return [(inc, tail.start, list(tail.chunks)) for inc, tail in self._tails.items()]

    def written(self, incarnation: str, count: int, nbytes: int) -> None:
        """The first `count` chunks (`nbytes`) of an incarnation are in its file now."""
        with self._lock:
            tail = self._tails.get(incarnation)
            if tail is None:
                return
            del tail.chunks[:count]
            tail.start += nbytes
            tail.size -= nbytes
            self.bytes -= nbytes
            if not tail.chunks:
                del self._tails[incarnation]
            if self.bytes:
                self.since = time.monotonic()  # conservative: restarts the age of what is left

    def discard(self, incarnation: str) -> None:
        with self._lock:
            tail = self._tails.pop(incarnation, None)
            if tail is not None:
                self.bytes -= tail.size

    def split(self, incarnation: str, position: int, length: int) -> tuple[int, bytes]:
        """For a read of [position, position + length): where the file part ends, and the
        staged bytes that cover the rest (from that point)."""
        end = position + length
        with self._lock:
            tail = self._tails.get(incarnation)
            if tail is None or end <= tail.start:
                return end, b""
            start, chunks = tail.start, list(tail.chunks)
        staged = b"".join(chunks)
        boundary = max(position, start)
        return boundary, staged[boundary - start:end - start]
