"""Append boundaries of a stream incarnation: where each append (and its create's
initial data) ended, as logical offsets in ascending order.

Since the last checkpoint they live in memory only (`Entry.boundaries`): the log's
records carry each append's start and tail, so replay rebuilds them. A checkpoint moves
them to the incarnation's index file, `<id>.idx` beside `<id>.data`: u64 little-endian
end offsets, appended in bulk (one `pwrite` per stream written since the last
checkpoint) and fsynced with the data files before the checkpoint names their count.
Only the first `count` entries of an index file are trusted: more may be there from a
checkpoint that never got installed, and recovery cuts them.
"""

from __future__ import annotations

import os
import sys
from array import array

ENTRY_BYTES = 8


def to_disk(values: array) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _value(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def next_in_index(fd: int, count: int, position: int) -> int | None:
    """The smallest of the first `count` entries greater than `position`, or None:
    a binary search with one 8-byte `pread` per step, so a fork never reads a whole
    index. A file shorter than `count` entries (damaged) is searched as far as it goes."""
    count = min(count, os.fstat(fd).st_size // ENTRY_BYTES)
    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        if _value(os.pread(fd, ENTRY_BYTES, middle * ENTRY_BYTES)) <= position:
            low = middle + 1
        else:
            high = middle
    return _value(os.pread(fd, ENTRY_BYTES, low * ENTRY_BYTES)) if low < count else None
