"""The newest committed bytes of each stream, kept by a node so that its live readers
are served without a round trip to the database.

A flush's notification carries the bytes it appended when they are small (flusher.py),
and a node's own flushes hand theirs over when COMMIT returns: both are durable by then.
Each stream keeps one contiguous window ending at the newest tail heard of, so a reader
woken at its position reads [position, tail) from memory; a reader further behind, or a
window broken by a notification that carried no bytes, reads from the database as before.
Offsets never change and bytes at an offset never change within an incarnation (the row
id a window is keyed by), so a window can only be incomplete, never wrong. Memory is
bounded per stream and in total (least recently written windows go first)."""

from __future__ import annotations

from collections import OrderedDict, deque

WINDOW_BYTES = 64 << 10  # per stream: well over what a live reader lags by between wake-ups
TOTAL_BYTES = 16 << 20  # per node


class _Window:
    __slots__ = ("start", "end", "pieces", "size")

    def __init__(self, start: int) -> None:
        self.start = start  # offset of the first byte of pieces[0]
        self.end = start
        self.pieces: deque[bytes] = deque()
        self.size = 0


class RecentBytes:
    def __init__(self, window_bytes: int = WINDOW_BYTES, total_bytes: int = TOTAL_BYTES) -> None:
        self._window_bytes = window_bytes
        self._total_bytes = total_bytes
        self._windows: OrderedDict[int, _Window] = OrderedDict()  # stream id -> its window
        self._size = 0
        self.hits = 0

    def add(self, stream_id: int, start: int, data: bytes) -> None:
        """Bytes [start, start + len(data)) of the stream are committed."""
        if not data or len(data) > self._window_bytes:
            return
        end = start + len(data)
        window = self._windows.get(stream_id)
        if window is not None and end <= window.end:
            return  # heard already (a node hears its own flushes twice)
        if window is None or start > window.end or start < window.start:
            # new, or a gap (bytes notified without data): restart the window here
            if window is not None:
                self._size -= window.size
            window = self._windows[stream_id] = _Window(start)
        elif start < window.end:
            data = data[window.end - start:]  # the part beyond what the window holds
        window.pieces.append(data)
        window.end += len(data)
        window.size += len(data)
        self._size += len(data)
        self._windows.move_to_end(stream_id)
        while window.size > self._window_bytes:
            self._drop_first(window)
        while self._size > self._total_bytes:
            _, oldest = next(iter(self._windows.items()))
            if oldest is window:
                break  # only this window is left and it fits in its own bound
            self._windows.popitem(last=False)
            self._size -= oldest.size

    def _drop_first(self, window: _Window) -> None:
        piece = window.pieces.popleft()
        window.start += len(piece)
        window.size -= len(piece)
        self._size -= len(piece)

    def moved(self, stream_id: int, tail: int) -> None:
        """The stream's tail is now `tail` (notified without its bytes): a window ending
        before it no longer ends at the tail, and keeping it could only hold stale memory."""
        window = self._windows.get(stream_id)
        if window is not None and window.end < tail:
            self.forget(stream_id)

    def get(self, stream_id: int, start: int, end: int) -> bytes | None:
        """Bytes [start, end) if the stream's window holds all of them."""
        window = self._windows.get(stream_id)
        if window is None or start < window.start or end > window.end or start >= end:
            return None
        self.hits += 1
        position = window.start
        pieces = []
        for piece in window.pieces:
            piece_end = position + len(piece)
            if piece_end > start:
                pieces.append(piece[max(0, start - position): end - position])
                if piece_end >= end:
                    break
            position = piece_end
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def forget(self, stream_id: int) -> None:
        window = self._windows.pop(stream_id, None)
        if window is not None:
            self._size -= window.size

    @property
    def size(self) -> int:
        return self._size
