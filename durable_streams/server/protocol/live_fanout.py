"""Live fan-out: the readers of a stream that are waiting at its tail (SSE connections
and long-polls) are served by one task per stream and kind, which reads and renders each
new batch once and writes it to every waiting connection back to back.

Without it, an append woke every reader's task, and each one read the (shared) batch,
rendered its answer and, for SSE, armed a new wait, one reader after the other: at 100
long-polls or 1,000 SSE readers that was most of the cost and of the latency of a
delivery. A reader's task still runs everything else: catch-up, SSE's first up-to-date
control and the final control of a closed stream, back-pressure, deadlines, errors. It
hands itself to the fan-out only in the steady state (at the tail, nothing else due),
and the fan-out hands it back whenever anything but "send this batch" is due: a batch
that is not up to date, a closed stream, a full connection buffer, a passed deadline, a
stream that went away, or a server that stops. What a reader receives is exactly what
its own task would have sent."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from multidict import CIMultiDict

from ..engine.errors import StreamError
from ..engine.offsets import format_offset
from ..engine.stream import StreamView
from ..engine.streams import Chunk, StreamEngine
from ..http import Request, Response, StreamResponse, as_chunk
from .cursor import advance, current_interval, echoed_cursor
from .sse import control_event

log = logging.getLogger(__name__)

Batch = Callable[[int, tuple[int, bool]], Awaitable[tuple[bytes, Chunk]]]
# A long-poll answer without its cursor: (header fields, body, bytes of stream data, closes)
Answer = Callable[[int, tuple[int, bool]], Awaitable[tuple[CIMultiDict, bytes, int, bool]]]


class SseReader:
    """One SSE connection's position and cursor, shared by its task and the fan-out."""

    __slots__ = ("response", "position", "announced", "ended", "deadline", "_echoed",
                 "_last_cursor", "_handback")

    def __init__(self, response: StreamResponse, position: int, client_cursor: str | None,
                 deadline: float) -> None:
        self.response = response
        self.position = position
        self.announced = False  # the up-to-date control for `position` was sent
        self.ended = False  # the closing control was sent
        self.deadline = deadline  # loop time of the periodic reconnect
        self._echoed = echoed_cursor(client_cursor)
        self._last_cursor = 0
        self._handback: asyncio.Future | None = None

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


class _Fanout:
    """The waiting readers of one stream and the task that serves them. A reader is
    anything with `position`, `deadline` (loop time) and a `_handback` slot."""

    def __init__(self, engine: StreamEngine, stream: StreamView, served: Callable[[int], None],
                 idle: Callable[[_Fanout], None]) -> None:
        self._engine = engine
        self._stream = stream
        self._served = served  # metrics: bytes of stream data delivered
        self._idle = idle  # called when the last reader leaves
        self._parked: dict = {}  # readers, in the order they parked (= wake order)
        self._pump: asyncio.Task | None = None

    async def park(self, reader):
        """Wait at the tail, the fan-out serving the reader meanwhile; returns, with
        `reader` updated, what `_hand_back` was given when its task has to act."""
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

    def _hand_back(self, reader, result: object = None) -> None:
        self._parked.pop(reader, None)
        handback = reader._handback
        if handback is not None and not handback.done():
            handback.set_result(result)

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
            log.warning("live fan-out of %s handed its readers back", stream.path, exc_info=True)
        finally:
            if self._pump is asyncio.current_task():
                self._pump = None
            self._hand_back_all()

    async def _deliver(self, behind: list, tail: int) -> None:
        raise NotImplementedError


class SseFanout(_Fanout):
    """SSE readers at the tail. `park` returns the bytes of the last frame when the
    connection's buffer must drain before the reader goes on, else None."""

    def __init__(self, engine: StreamEngine, stream: StreamView, batch: Batch,
                 served: Callable[[int], None], idle: Callable[[_Fanout], None]) -> None:
        super().__init__(engine, stream, served, idle)
        self._batch = batch  # reads and encodes the data event of [position, snapshot)

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


class PollWaiter:
    """One long-poll waiting at the tail."""

    __slots__ = ("request", "position", "deadline", "echoed", "_handback")

    def __init__(self, request: Request, position: int, deadline: float) -> None:
        self.request = request
        self.position = position
        self.deadline = deadline  # loop time the long-poll times out
        self.echoed = echoed_cursor(request.query.get("cursor"))
        self._handback: asyncio.Future | None = None


class PollFanout(_Fanout):
    """Long-polls at the tail. `park` returns the response it already sent, which the
    handler returns as is, or None: the handler answers itself."""

    def __init__(self, engine: StreamEngine, stream: StreamView, answer: Answer,
                 served: Callable[[int], None], idle: Callable[[_Fanout], None]) -> None:
        super().__init__(engine, stream, served, idle)
        self._answer = answer  # renders the answer from [position, snapshot), cursor aside

    async def _deliver(self, behind: list[PollWaiter], tail: int) -> None:
        stream = self._stream
        closed = stream.state.closed
        by_position: dict[int, list[PollWaiter]] = {}
        for waiter in behind:
            by_position.setdefault(waiter.position, []).append(waiter)
        for position, waiters in by_position.items():
            # The same key and value as a handler answering on its own (its _long_poll).
            key = ("long-poll", position, tail, closed)
            answer = stream.sse_cache.ready(key)
            if answer is None:
                answer = await self._answer(position, (tail, closed))
                stream.sse_cache.keep(key, answer)
            fields, body, size, closes = answer
            interval = current_interval(self._engine.clock())
            sent = 0
            for waiter in waiters:
                if waiter._handback is None or waiter not in self._parked:
                    continue  # left while the answer was read
                response = Response(status=200, body=body, headers=fields)
                if not closes:  # next_cursor, with the client's cursor parsed once
                    response.headers["Stream-Cursor"] = str(advance(waiter.echoed, interval))
                if waiter.request.answer_now(response):
                    sent += 1
                    self._hand_back(waiter, response)
                else:
                    self._hand_back(waiter)
            self._served(size * sent)
