"""SSE fan-out: the readers of a stream that are waiting at its tail are served by one
task per stream, which reads and frames each new batch once and writes it straight to
every waiting connection.

Without it, an append woke every reader's task, and each one read the (shared) batch,
built its control event, framed its chunk and armed a new wait: at 1,000 readers that
was most of the cost of a delivery. A reader's task still runs everything else: catch-up,
the first up-to-date control, the final control of a closed stream, back-pressure, its
reconnect deadline. It hands itself to the fan-out only in the steady state (at the
tail, up-to-date announced), and the fan-out hands it back whenever anything but "send
this batch and wait again" is due: a batch that is not up to date, a closed stream, a
full connection buffer, a passed deadline, a stream that went away, or a server that
stops. What a reader receives is exactly what its own task would have sent."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from ..engine.errors import StreamError
from ..engine.offsets import format_offset
from ..engine.stream import StreamView
from ..engine.streams import Chunk, StreamEngine
from ..http import StreamResponse, as_chunk
from .cursor import advance, current_interval, echoed_cursor
from .sse import control_event

log = logging.getLogger(__name__)

Batch = Callable[[int, tuple[int, bool]], Awaitable[tuple[bytes, Chunk]]]


class SseReader:
    """One SSE connection's position and cursor, shared by its task and the fan-out."""

    __slots__ = ("response", "position", "announced", "ended", "deadline", "client_cursor",
                 "_echoed", "_last_cursor", "_handback")

    def __init__(self, response: StreamResponse, position: int, client_cursor: str | None,
                 deadline: float) -> None:
        self.response = response
        self.position = position
        self.announced = False  # the up-to-date control for `position` was sent
        self.ended = False  # the closing control was sent
        self.deadline = deadline  # loop time of the periodic reconnect
        self.client_cursor = client_cursor
        self._echoed = echoed_cursor(client_cursor)
        self._last_cursor = 0
        self._handback: asyncio.Future[int] | None = None

    def cursor(self, interval: int) -> int:
        """This connection's cursor for the current interval; never goes backwards."""
        value = advance(self._echoed, interval)
        if value > self._last_cursor:
            self._last_cursor = value
        return self._last_cursor

    def control(self, next_offset: int, up_to_date: bool, closed: bool, now: float) -> bytes:
        """The control event after a send that leaves this reader at `next_offset`."""
        cursor = None if closed else self.cursor(current_interval(now))
        return position_control(next_offset, up_to_date, closed, cursor)


class SseFanout:
    """The waiting SSE readers of one stream and the task that serves them."""

    def __init__(self, engine: StreamEngine, stream: StreamView, batch: Batch,
                 served: Callable[[int], None], idle: Callable[[SseFanout], None]) -> None:
        self._engine = engine
        self._stream = stream
        self._batch = batch  # reads and encodes the data event of [position, snapshot)
        self._served = served  # metrics: bytes of stream data delivered
        self._idle = idle  # called when the last reader leaves
        self._parked: dict[SseReader, None] = {}  # insertion order = wake order
        self._pump: asyncio.Task | None = None

    async def park(self, reader: SseReader) -> int:
        """Wait at the tail, the fan-out sending new batches meanwhile; returns, with
        `reader` updated, when its task has to act: the bytes of the last frame when the
        connection's buffer must drain first, else 0."""
        reader._handback = asyncio.get_running_loop().create_future()
        self._parked[reader] = None
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())
        try:
            return await reader._handback
        finally:
            reader._handback = None
            self._parked.pop(reader, None)
            if not self._parked:
                if self._pump is not None:
                    self._pump.cancel()  # nobody to serve: stop waiting on the stream
                    self._pump = None
                self._idle(self)

    def _hand_back(self, reader: SseReader, drain: int = 0) -> None:
        self._parked.pop(reader, None)
        handback = reader._handback
        if handback is not None and not handback.done():
            handback.set_result(drain)

    def _hand_back_all(self) -> None:
        for reader in list(self._parked):
            self._hand_back(reader)

    async def _run(self) -> None:
        engine, stream = self._engine, self._stream
        loop = asyncio.get_running_loop()
        try:
            while self._parked:
                state = stream.state
                if engine.stopping or stream.removed or state.soft_deleted or state.closed:
                    break  # the readers' tasks end their streams
                tail = state.tail
                behind = [reader for reader in self._parked if reader.position < tail]
                if behind:
                    await self._deliver(behind, tail)
                    continue
                now = loop.time()
                deadline = min(reader.deadline for reader in self._parked)
                if deadline <= now:
                    for reader in [r for r in self._parked if r.deadline <= now]:
                        self._hand_back(reader)
                    continue
                await engine.wait(stream, tail, deadline)
                engine.touch(stream)
        except asyncio.CancelledError:
            raise
        except StreamError:
            pass  # the stream went away: the readers' tasks see it and end
        except Exception:
            # Each reader's task retries the read on its own and answers the error there.
            log.warning("SSE fan-out of %s handed its readers back", stream.path, exc_info=True)
        finally:
            if self._pump is asyncio.current_task():
                self._pump = None
            self._hand_back_all()

    async def _deliver(self, behind: list[SseReader], tail: int) -> None:
        """Send [position, tail) to the readers behind, one read and one framing per
        position (all of them, usually) and per cursor value (one, usually)."""
        stream = self._stream
        closed = stream.state.closed
        by_position: dict[int, list[SseReader]] = {}
        for reader in behind:
            by_position.setdefault(reader.position, []).append(reader)
        loop = asyncio.get_running_loop()
        for position, readers in by_position.items():
            event, chunk = await stream.sse_cache.get(
                (position, tail, closed), lambda: self._batch(position, (tail, closed)))
            now = self._engine.clock()
            interval = current_interval(now)
            frames: dict[int | None, tuple[bytes, bytes]] = {}  # cursor -> (frame, its chunk)
            keep = chunk.up_to_date and not chunk.closed
            past = loop.time()
            delivered = 0
            for reader in readers:
                if reader._handback is None or reader not in self._parked:
                    continue  # left while the batch was read
                cursor = None if chunk.closed else reader.cursor(interval)
                shared = frames.get(cursor)
                if shared is None:
                    frame = event + position_control(chunk.next, chunk.up_to_date, chunk.closed, cursor)
                    shared = frames[cursor] = (frame, as_chunk(frame))
                response = reader.response
                try:
                    response.write_shared(*shared)
                except ConnectionResetError:
                    self._hand_back(reader)  # its task finds the connection gone
                    continue
                delivered += 1
                reader.position = chunk.next
                reader.announced = chunk.up_to_date
                reader.ended = chunk.closed
                if response.must_drain:
                    self._hand_back(reader, len(shared[0]))
                elif not keep or reader.deadline <= past:
                    self._hand_back(reader)
            self._served(len(chunk.data) * delivered)


def position_control(next_offset: int, up_to_date: bool, closed: bool, cursor: int | None) -> bytes:
    """The control event of a reader left at `next_offset`; a closed stream has no cursor."""
    fields: dict = {"streamNextOffset": format_offset(next_offset)}
    if closed:
        fields["streamClosed"] = True
        fields["upToDate"] = True
    else:
        fields["streamCursor"] = str(cursor)
        if up_to_date:
            fields["upToDate"] = True
    return control_event(fields)
