"""Forks: a fork shares its source's offset space. Bytes below the fork's
`base_offset` are read from the source chain (recursively, through soft-deleted
sources); bytes from `base_offset` on are the fork's own. A sub-offset prefix is
materialised as the fork's first own bytes, so it composes along chains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.base import StreamStore
from .errors import Conflict, InvalidRequest, StreamGone, StreamNotFound
from .messages import Framing, count_units_prefix, media_type
from .offsets import parse_position

if TYPE_CHECKING:
    from .streams import Stream


async def read_range(store: StreamStore, stream: "Stream", start: int, end: int) -> bytes:
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
        if current.source is None and start < high:
            # Only after a damaged recovery: the fork's source is gone.
            raise StreamGone(f"data before {base} of {current.path} is no longer retained")
        current = current.source
    parts = [await _read_own(store, s, low, high) for s, low, high in reversed(pieces)]
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _read_own(store: StreamStore, stream: "Stream", start: int, end: int) -> bytes:
    """A stream's own bytes. A read racing with the stream's removal is discarded: once
    removed, its path may already belong to a new incarnation."""
    if stream.removed:
        raise StreamNotFound(f"stream {stream.path} was deleted")
    try:
        data = await store.read(stream.path, start, end)
    except Exception:
        if stream.removed:
            raise StreamNotFound(f"stream {stream.path} was deleted") from None
        raise
    if stream.removed:
        raise StreamNotFound(f"stream {stream.path} was deleted")
    return data


@dataclass(frozen=True, slots=True)
class ForkRequest:
    source_path: str
    offset: str | None  # as sent; None -> the source's tail
    sub_offset: int  # 0 when absent


def fork_anchor(source: "Stream | None", request: ForkRequest, content_type: str | None) -> int:
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
    return anchor


async def sub_offset_prefix(store: StreamStore, source: "Stream", anchor: int, sub_offset: int) -> bytes:
    """The first `sub_offset` units (bytes, or JSON messages) past the anchor, which the
    fork keeps as its own first bytes. The next data boundary past the anchor is taken
    as the source's tail: a store keeps bytes, not append boundaries. A JSON anchor must
    sit between messages, or every read of the fork would be broken JSON."""
    if source.framing is Framing.JSON and anchor > 0:
        if await read_range(store, source, anchor - 1, anchor) != b"\n":
            raise InvalidRequest("Stream-Fork-Offset is not at a message boundary")
    if not sub_offset:
        return b""
    tail = source.state.tail
    end = tail if source.framing is Framing.JSON else min(tail, anchor + sub_offset)
    found = count_units_prefix(source.framing, await read_range(store, source, anchor, end), sub_offset)
    if found is None:
        raise InvalidRequest("Stream-Fork-Sub-Offset is past the next data boundary")
    return found
