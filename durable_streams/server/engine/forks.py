"""Forks: a fork shares its source's offset space. Bytes below the fork's
`base_offset` are read from the source chain (recursively, through soft-deleted
sources); bytes from `base_offset` on are the fork's own. A sub-offset prefix is
materialised as the fork's first own bytes, so it composes along chains."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..store.base import FloorMoved, StaleStream, StreamStore
from .errors import BelowFloor, Conflict, InvalidRequest, StreamGone, StreamNotFound
from .framing import Framing, count_units_prefix, media_type
from .offsets import parse_position
from .stream import Stream

T = TypeVar("T")


async def read_range(store: StreamStore, stream: Stream, start: int, end: int) -> bytes:
    """Bytes [start, end) of `stream` as a reader sees them, stitched across its sources."""
    pieces: list[tuple[Stream, int, int]] = []
    current: Stream | None = stream
    high = end
    while current is not None and start < high:
        base = current.config.base_offset
        low = max(start, base)
        if low < high:
            pieces.append((current, low, high))
        high = min(high, base)
        if current._source is None and start < high:
            # Only after a damaged recovery: the fork's source is gone.
            raise StreamGone(f"data before {base} of {current.path} is no longer retained")
        current = current._source
    parts = [await _read_own(store, s, low, high) for s, low, high in reversed(pieces)]
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _read_own(store: StreamStore, stream: Stream, start: int, end: int) -> bytes:
    """A stream's own bytes."""
    return await _unless_removed(stream, lambda: store.read(stream.path, start, end))


async def _own_boundary(store: StreamStore, stream: Stream, position: int) -> int:
    """The store's next boundary of a stream's own bytes."""
    return await _unless_removed(stream, lambda: store.next_boundary(stream.path, position))


async def _unless_removed(stream: Stream, lookup: Callable[[], Awaitable[T]]) -> T:
    """A store lookup about `stream`, discarded when it races with the stream's removal:
    once removed, its path may already belong to a new incarnation."""
    if stream.removed:
        raise StreamNotFound(f"stream {stream.path} was deleted")
    try:
        found = await lookup()
    except FloorMoved as moved:  # a shared store: another node's retention got there first
        raise BelowFloor(moved.floor) from None
    except StaleStream:  # a shared store: another node deleted it meanwhile
        raise StreamNotFound(f"stream {stream.path} was deleted") from None
    except Exception:
        if stream.removed:
            raise StreamNotFound(f"stream {stream.path} was deleted") from None
        raise
    if stream.removed:
        raise StreamNotFound(f"stream {stream.path} was deleted")
    return found


async def next_boundary(store: StreamStore, stream: Stream, position: int) -> int:
    """The end of the append at `position` (`position` < tail) as a reader of `stream`
    sees it. Below a fork's base the source chain answers, capped at the base (the
    fork's own bytes begin there); a fork's sub-offset prefix ends an append of its own."""
    cap: int | None = None
    current: Stream | None = stream
    while current is not None:
        base = current.config.base_offset
        if position >= base:
            found = await _own_boundary(store, current, position)
            prefix_end = base + current.config.settings.get("fork_sub_offset", 0)
            if position < prefix_end:  # bytes and text only: JSON never asks
                found = min(found, prefix_end)
            return found if cap is None else min(found, cap)
        cap = base if cap is None else min(cap, base)
        current = current._source
    raise StreamGone(f"data before {stream.config.base_offset} of {stream.path} is no longer retained")


@dataclass(frozen=True, slots=True)
class ForkRequest:
    source_path: str
    offset: str | None  # as sent; None -> the source's tail
    sub_offset: int  # 0 when absent


def fork_anchor(source: Stream | None, request: ForkRequest, content_type: str | None) -> int:
    """Validate a fork against its (already resolved) source and return the anchor, the
    position where the fork's own bytes begin. Synchronous: the caller pins the source
    before anything can await."""
    if source is None:
        raise StreamNotFound(f"fork source {request.source_path} not found")
    if source.state.soft_deleted:
        raise Conflict(f"fork source {request.source_path} has been deleted")
    if content_type is not None and media_type(content_type) != media_type(source.config.content_type):
        raise Conflict("Content-Type differs from the fork source's")
    tail = source.state.tail
    anchor = tail if request.offset is None else parse_position(request.offset)
    if anchor > tail:
        raise InvalidRequest("Stream-Fork-Offset is beyond the source's tail")
    if request.sub_offset and anchor == tail:
        raise InvalidRequest("Stream-Fork-Sub-Offset names data past the source's tail")
    floor = source.read_floor
    if anchor < floor:
        raise BelowFloor(floor)  # the bytes the fork would share are no longer retained
    return anchor


async def sub_offset_prefix(store: StreamStore, source: Stream, anchor: int, sub_offset: int) -> bytes:
    """The first `sub_offset` units past the anchor, which the fork keeps as its own
    first bytes. Bytes and text: bytes of the append at the anchor, up to its end (the
    next data boundary). JSON: messages, up to the source's tail (as the reference
    server counts them). A JSON anchor must sit between messages, or every read of the
    fork would be broken JSON."""
    # (at the source's floor, an append boundary, the bytes before it are gone)
    if source.framing is Framing.JSON and anchor > source.read_floor:
        if await read_range(store, source, anchor - 1, anchor) != b"\n":
            raise InvalidRequest("Stream-Fork-Offset is not at a message boundary")
    if not sub_offset:
        return b""
    tail = source.state.tail
    if source.framing is Framing.JSON:
        end = tail
    else:
        boundary = min(tail, await next_boundary(store, source, anchor))
        if anchor + sub_offset > boundary:
            raise InvalidRequest("Stream-Fork-Sub-Offset is past the next data boundary")
        end = anchor + sub_offset
    found = count_units_prefix(source.framing, await read_range(store, source, anchor, end), sub_offset)
    if found is None:
        raise InvalidRequest("Stream-Fork-Sub-Offset is past the next data boundary")
    return found
