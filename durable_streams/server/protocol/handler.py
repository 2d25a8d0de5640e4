"""The `durable_streams` HTTP handler: parse and validate a request, call the engine,
format its answer (plain bytes, a JSON array, or Server-Sent Events).

The stream key is the full request path. Every response carries the security and CORS
headers; errors are plain text with `Cache-Control: no-store`; no request produces a
traceback.

Choices the protocol asks implementations to document:
- Stream-Seq is scoped per stream (not per writer identity).
- Stream-TTL together with Stream-Expires-At is refused (400); there is no precedence.
- Offsets are `%016d_%016d` (reserved part, byte position).
- A catch-up read (no `live`) answers everything from the offset to the tail at the time
  of the request, with `Stream-Up-To-Date`: the official clients make one GET when not
  live and return its body. Large ranges are streamed from the store page by page with
  back-pressure (`Content-Length` known up front), so memory stays bounded. The extension
  option `catch_up_page_size` pages them instead (without `Stream-Up-To-Date` on a
  partial page). Long-poll and SSE deliver `max_read_bytes` at a time, cut at message
  boundaries for JSON and at characters for text/*.
- Stream-Fork-Sub-Offset on binary and text streams counts bytes of the append at the
  fork offset and may reach its end, no further (400). On JSON streams it counts
  messages and may reach the source's tail, as the reference server does.
- Idempotent-producer state lives as long as the stream with a durable store; the
  memory store forgets producers idle for 7 days.

Limits that keep one client from hurting others (extensions, not in the protocol):
- At most `max_live_readers` long-polls and SSE connections per handler; one more is
  answered 503 with Retry-After, so clients back off instead of piling up.
- An SSE reader that stops accepting bytes is disconnected: each frame must leave the
  connection's buffer within `slow_reader_timeout` seconds, plus one second per
  SLOW_READER_MIN_RATE bytes of the frame (see `_send`)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from typing import Awaitable, Callable
from urllib.parse import unquote

from multidict import CIMultiDict

from ..config.model import DurableStreams
from ..http import ParseError, Request, Response, StreamResponse
from ..engine.errors import InvalidRequest, StreamError
from ..engine.expiry import Lifetime
from ..engine.forks import ForkRequest
from ..engine.framing import Framing, json_array, json_array_length, json_array_piece
from ..engine.offsets import NOW, START, format_offset, parse_position, parse_read_offset
from ..engine.retention import RetentionRule
from ..engine.stream import StreamView
from ..engine.streams import AppendRequest, Chunk, CreateRequest, StreamEngine
from ..ops.metrics import NULL_METRICS, NullMetrics
from ..store import open_store
from ..store.base import StoreError
from . import headers as parse
from ..subscriptions.manager import SubscriptionManager
from .control import ControlRoutes, control_root
from .cursor import next_cursor
from .live_fanout import PollFanout, PollWaiter, SseFanout, SseReader
from .errors import EARLIEST_OFFSET, HttpError, from_engine, from_store
from .responses import ALLOWED_METHODS, COMMON_HEADERS, PREFLIGHT_HEADERS, common_fields, plain
from .sse import data_event, needs_base64

log = logging.getLogger(__name__)

MAX_PATH_BYTES = 1024
SWEEP_INTERVAL = 30.0  # seconds between background reclaims of expired streams
CACHEABLE = "public, max-age=60, stale-while-revalidate=300"
_LIVE_MODES = ("long-poll", "sse")
LIVE_RETRY_AFTER = 5  # seconds a refused live reader is asked to wait
# Above this many bytes queued in user space an SSE connection counts as backed up (the
# kernel's socket buffer is full by then). asyncio's own default, made explicit.
SSE_HIGH_WATER = 64 << 10
# A reader may take longer for big frames (a catch-up page): this rate, 8 KiB/s, is
# below any usable link, so only a reader that stopped (or nearly stopped) is cut.
SLOW_READER_MIN_RATE = 8 << 10
# On stop, how long woken live readers get to send their last event before their
# connections are cut; healthy ones need milliseconds, stalled ones would hold shutdown.
STOP_DRAIN_TIMEOUT = 2.0
STOP_CUT_TIMEOUT = 0.5


class DurableStreamsHandler:
    def __init__(self, settings: DurableStreams, *, metrics: NullMetrics | None = None) -> None:
        """`settings`: the `durable_streams` block as the config model holds it (the one
        home of its defaults). `metrics`: the server's metrics (ops/metrics.py); off when None."""
        self.settings = settings
        self.metrics = metrics if metrics is not None else NULL_METRICS
        postgres = settings.postgres
        store = open_store(settings.data_dir, settings.max_file_handles,
                           postgres_dsn=postgres.dsn if postgres else None,
                           postgres_pool_size=postgres.pool_size if postgres else 10)
        rules = tuple(RetentionRule(r.pattern, r.max_age, r.max_size) for r in settings.retention)
        self.engine = StreamEngine(store, events=self.metrics, retention=rules)
        self.subscriptions: SubscriptionManager | None = None
        if settings.subscriptions:
            self.subscriptions = SubscriptionManager(self.engine, callback_base=settings.webhook_callback_url,
                                                     events=self.metrics)
        self._control = ControlRoutes(self.subscriptions)
        self._untrack: list[Callable[[], None]] = []
        # Requests waiting on streams (long-poll, SSE), by task, so stop() can wait for them.
        self._live: dict[asyncio.Task, Request] = {}
        # Streams with live readers at the tail, and what serves them (live_fanout.py).
        self._sse_fanouts: dict[StreamView, SseFanout] = {}
        self._poll_fanouts: dict[StreamView, PollFanout] = {}
        self._background: list[asyncio.Task] = []  # expiry sweeper, retention
        self._methods = {
            "GET": self._get, "HEAD": self._head, "PUT": self._put,
            "POST": self._post, "DELETE": self._delete,
        }

    async def start(self) -> None:
        started = time.monotonic()
        await self.engine.open()
        self.metrics.observe_recovery(time.monotonic() - started)
        self._untrack.append(self.metrics.track_streams(lambda: self.engine.stream_count))
        if hasattr(self.engine.store, "open_handles"):
            self._untrack.append(self.metrics.track_store(self.engine.store))
        if hasattr(self.engine.store, "conflicts"):
            self._untrack.append(self.metrics.track_shared_store(self.engine.store))
        self._untrack.append(self.metrics.track_retained(lambda: self.engine.retained_bytes))
        self._background.append(asyncio.create_task(self.engine.run_sweeper(SWEEP_INTERVAL)))
        if self.engine.retention:
            self._background.append(asyncio.create_task(self.engine.run_retention()))
        if self.subscriptions is not None:
            await self.subscriptions.start()
            self._untrack.append(self.metrics.track_subscriptions(self.subscriptions))

    async def stop(self) -> None:
        """Wake live readers and give them STOP_DRAIN_TIMEOUT to send their last event,
        cut the connections still stuck in a write, then close the store. If the caller's
        deadline cancels the wait, the cut and the close still happen (in `finally`)."""
        self.engine.release_readers()
        for task in self._background:
            task.cancel()
        if self.subscriptions is not None:
            await self.subscriptions.stop()
        try:
            if self._live:
                await asyncio.wait(list(self._live), timeout=STOP_DRAIN_TIMEOUT)
        finally:
            for request in list(self._live.values()):
                request.abort()
            if self._live:  # an abort wakes a blocked write at once: this is short
                await asyncio.wait(list(self._live), timeout=STOP_CUT_TIMEOUT)
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
                self._background.clear()
            await self.engine.close()
            for untrack in self._untrack:
                untrack()
            self._untrack.clear()

    @property
    def available(self) -> bool:
        """False while the store cannot serve (its database is unreachable)."""
        return self.engine.store.available

    @property
    def live_readers(self) -> int:
        """Long-polls and SSE connections in progress."""
        return len(self._live)

    # ---------------------------------------------------------------- dispatch

    async def handle(self, request: Request, *, max_body_size: int | None = None) -> Response | StreamResponse:
        with_body = request.method != "HEAD"
        try:
            path = _stream_path(request)
            if request.method == "OPTIONS":
                return plain(204, PREFLIGHT_HEADERS)
            method = self._methods.get(request.method)
            if method is None:
                raise HttpError(405, f"method {request.method} is not allowed", {"Allow": ALLOWED_METHODS})
            limit = self.settings.max_body_size if max_body_size is None else max_body_size
            if "__ds" in path:
                root = control_root(request.raw_path)
                if root is not None:
                    return await self._control.handle(request, root, _read_body)
            return await method(request, path, limit)
        except HttpError as error:
            return error.response(with_body=with_body)
        except StreamError as error:
            return from_engine(error).response(with_body=with_body)
        except StoreError as error:
            log.error("storage error handling %s %s: %s", request.method, request.path, error)
            return from_store(error).response(with_body=with_body)
        except (asyncio.CancelledError, ConnectionResetError, ParseError):
            raise  # ParseError: a malformed body, answered by the connection
        except Exception:
            log.exception("unexpected error handling %s %s", request.method, request.path)
            return HttpError(500, "internal server error").response(with_body=with_body)

    # ---------------------------------------------------------------- writes

    async def _put(self, request: Request, path: str, limit: int) -> Response | StreamResponse:
        h = request.headers
        ttl, expires = h.get("Stream-TTL"), h.get("Stream-Expires-At")
        if ttl is not None and expires is not None:
            raise InvalidRequest("Stream-TTL and Stream-Expires-At cannot both be set")
        lifetime = Lifetime(
            ttl=parse.decimal(ttl, "Stream-TTL") if ttl is not None else None,
            expires_at=parse.expires_at(expires) if expires is not None else None,
            expires_at_text=expires,
        )
        fork = _fork_request(h)
        body = await _read_body(request, limit)
        result = await self.engine.create(path, CreateRequest(
            content_type=parse.content_type(h.get("Content-Type")),
            lifetime=lifetime,
            closed=parse.is_true(h.get("Stream-Closed")),
            body=body,
            fork=fork,
        ))
        headers = {"Content-Type": result.content_type, "Stream-Next-Offset": format_offset(result.tail)}
        if result.closed:
            headers["Stream-Closed"] = "true"
        if result.created:
            headers["Location"] = _location(request)
        return plain(201 if result.created else 200, headers)

    async def _post(self, request: Request, path: str, limit: int) -> Response | StreamResponse:
        h = request.headers
        claim = parse.producer_claim(h.get("Producer-Id"), h.get("Producer-Epoch"), h.get("Producer-Seq"))
        body = _arrived_body(request, limit)
        if body is None:
            body = await _read_body(request, limit)
        result = await self.engine.append(path, AppendRequest(
            content_type=parse.content_type(h.get("Content-Type")),
            body=body,
            close=parse.is_true(h.get("Stream-Closed")),
            stream_seq=h.get("Stream-Seq"),
            producer=claim,
        ))
        headers = {"Stream-Next-Offset": format_offset(result.tail)}
        if result.closed:
            headers["Stream-Closed"] = "true"
        if result.producer is not None:
            headers["Producer-Epoch"] = str(result.producer.epoch)
            headers["Producer-Seq"] = str(result.producer.seq)
        # 200 tells a producer its new data landed; everything else is 204.
        new_producer_data = claim is not None and result.wrote and bool(body)
        return plain(200 if new_producer_data else 204, headers)

    async def _delete(self, request: Request, path: str, limit: int) -> Response | StreamResponse:
        await self.engine.delete(path)
        return plain(204)

    # ---------------------------------------------------------------- reads

    async def _head(self, request: Request, path: str, limit: int) -> Response | StreamResponse:
        stream = await self.engine.require(path)  # HEAD never refreshes a TTL
        state, lifetime = stream.state, stream.lifetime
        headers = {
            "Content-Type": stream.config.content_type,
            "Stream-Next-Offset": format_offset(state.tail),
            "Cache-Control": "no-store",
        }
        if lifetime.ttl is not None:
            headers["Stream-TTL"] = str(lifetime.ttl)
        if lifetime.expires_at_text is not None:
            headers["Stream-Expires-At"] = lifetime.expires_at_text
        if state.closed:
            headers["Stream-Closed"] = "true"
        floor = stream.read_floor
        if floor > 0:
            headers[EARLIEST_OFFSET] = format_offset(floor)
        return plain(200, headers)

    async def _get(self, request: Request, path: str, limit: int) -> Response | StreamResponse:
        query = request.query
        live = query.get("live")
        offsets = query.getall("offset", [])
        # A live read from an offset over a shared store starts from the cached stream when
        # every change to it is being notified: a long-poll's next request costs no lookup.
        # Not from `now`: an append acknowledged elsewhere but not notified yet is before it.
        cached = (live in _LIVE_MODES and len(offsets) == 1 and offsets[0] != NOW
                  and self.engine.live_cache(path))
        stream = await self.engine.require(path, fresh=not cached)  # existence before parameter errors
        if len(offsets) > 1:
            raise InvalidRequest("offset must be given at most once")
        if live is not None and live not in _LIVE_MODES:
            raise InvalidRequest(f"unknown live mode {live!r}")
        if live is not None and not offsets:
            raise InvalidRequest(f"live={live} requires an offset")
        if not offsets or offsets[0] == START:
            start = self.engine.read_start(stream, None)  # the earliest retained byte
        else:
            start = parse_read_offset(offsets[0])
            if cached and start is not None and start > stream.state.tail:
                # the offset came from a node that heard of an append this one has not yet
                stream = await self.engine.require(path)
            if start is not None:
                start = self.engine.read_start(stream, start)  # 410 below the floor, before any body
        if start is not None and start > stream.state.tail:
            raise InvalidRequest("offset is beyond the tail of the stream")
        self.engine.touch(stream)
        if live == "sse":
            return await self._live_request(request, self._sse, stream, start)
        if live == "long-poll":
            return await self._live_request(request, self._long_poll, stream, start)
        if start is None:
            return self._at_tail(stream, status=200)
        page = self.settings.catch_up_page_size
        tail, closed = stream.state.tail, stream.state.closed
        if page is None and tail - start > self.settings.max_read_bytes:
            return await self._stream_to_tail(request, stream, start, (tail, closed))
        chunk = await self.engine.read(stream, start, page or self.settings.max_read_bytes, (tail, closed))
        return self._chunk_response(request, stream, chunk)

    async def _live_request(self, request: Request,
                            serve: Callable[[Request, StreamView, int | None], Awaitable[Response | StreamResponse]],
                            stream: StreamView, start: int | None) -> Response | StreamResponse:
        """Run a long-poll or SSE request within the live-reader cap, known to stop()
        so it can be waited for."""
        if len(self._live) >= self.settings.max_live_readers:
            self.metrics.live_reader_refused()
            raise HttpError(503, "too many live readers, retry later",
                            {"Retry-After": str(LIVE_RETRY_AFTER)})
        task = asyncio.current_task()
        self._live[task] = request
        try:
            return await serve(request, stream, start)
        finally:
            del self._live[task]

    def _chunk_response(self, request: Request, stream: StreamView, chunk: Chunk,
                        extra: dict[str, str] | None = None) -> Response | StreamResponse:
        headers = _range_headers(stream, chunk.start, chunk.next, chunk.up_to_date, chunk.closed)
        headers.update(extra or {})
        if _matches(request.headers.get("If-None-Match"), headers["ETag"]):
            return plain(304, headers)
        body = json_array(chunk.data) if stream.framing is Framing.JSON else chunk.data
        self.metrics.served(len(chunk.data))
        return plain(200, headers, body)

    async def _stream_to_tail(self, request: Request, stream: StreamView, start: int,
                              snapshot: tuple[int, bool]) -> Response | StreamResponse:
        """A catch-up read of a large range: one response from one snapshot (tail, closed),
        its body read from the store one piece at a time and sent as the reader takes it.
        A reader that stops reading is cut like a slow SSE reader (`_send`). If the stream
        goes away mid-body, the connection is cut, so the client sees a short body and
        never mistakes it for the whole stream."""
        tail, closed = snapshot
        headers = _range_headers(stream, start, tail, True, closed)
        if _matches(request.headers.get("If-None-Match"), headers["ETag"]):
            return plain(304, headers)
        as_json = stream.framing is Framing.JSON
        response = StreamResponse(status=200)
        response.headers.update(COMMON_HEADERS)
        response.headers.update(headers)
        response.headers["Content-Length"] = str(json_array_length(tail - start) if as_json else tail - start)
        await response.prepare(request)
        position = start
        try:
            async for piece in self.engine.read_pages(stream, start, tail, self.settings.max_read_bytes):
                size = len(piece)
                body = json_array_piece(piece, first=position == start, last=position + size == tail) \
                    if as_json else piece
                response.write_nowait(body)
                sent = len(body)
                # The connection holds what it has not sent yet: no second reference to the
                # piece while waiting, nor while the next one is read.
                del piece, body
                await self._drain(request, response, sent)
                self.metrics.served(size)
                position += size
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left (or was too slow and was cut)
        except (StreamError, StoreError) as error:
            log.warning("catch-up read of %s cut at %d of %d: %s", stream.path, position, tail, error)
            response.force_close()
            request.abort()
        return response

    def _at_tail(self, stream: StreamView, *, status: int, cursor: str | None = None) -> Response | StreamResponse:
        """Nothing to return: the canonical up-to-date (and, if closed, EOF) answer."""
        state = stream.state
        headers = _position_headers(stream, state.tail, True, state.closed)
        headers["Cache-Control"] = "no-store"
        if cursor is not None and not state.closed:
            headers["Stream-Cursor"] = cursor
        body = b"[]" if status == 200 and stream.framing is Framing.JSON else b""
        return plain(status, headers, body)

    async def _long_poll(self, request: Request, stream: StreamView, start: int | None) -> Response | StreamResponse:
        loop = asyncio.get_running_loop()
        position = stream.state.tail if start is None else start
        deadline = loop.time() + self.settings.long_poll_timeout
        with stream.sse_cache.subscribed():  # answers shared by the readers woken together
            state = stream.state
            if state.tail <= position and not state.closed and "If-None-Match" not in request.headers:
                # At the tail: the stream's fan-out answers when data comes (live_fanout.py)
                # and hands the request back for anything else.
                sent = await self._poll_fanout(stream).park(PollWaiter(request, position, deadline))
                if sent is not None:
                    return sent
            await self.engine.wait(stream, position, deadline)
            self.engine.touch(stream)
            cursor = next_cursor(request.query.get("cursor"), self.engine.clock())
            tail, closed = stream.state.tail, stream.state.closed
            if tail <= position:
                return self._at_tail(stream, status=204, cursor=cursor)
            if "If-None-Match" in request.headers:  # conditional: answered on its own
                chunk = await self.engine.read(stream, position, self.settings.max_read_bytes, (tail, closed))
                extra = {} if chunk.closed else {"Stream-Cursor": cursor}
                return self._chunk_response(request, stream, chunk, extra)
            key = ("long-poll", position, tail, closed)  # as the fan-out shares it
            answer = stream.sse_cache.ready(key)
            if answer is None:
                answer = await self._poll_answer(stream, position, (tail, closed))
                stream.sse_cache.keep(key, answer)
            fields, body, size, chunk_closed = answer
            response = Response(status=200, body=body, headers=fields)
            if not chunk_closed:
                response.headers["Stream-Cursor"] = cursor
            self.metrics.served(size)
            return response

    async def _poll_answer(self, stream: StreamView, position: int,
                           snapshot: tuple[int, bool]) -> tuple[CIMultiDict, bytes, int, bool]:
        """A long-poll answer from `position` without its cursor, as `_chunk_response`
        renders it: (header fields, body, bytes of stream data, whether it closes)."""
        chunk = await self.engine.read(stream, position, self.settings.max_read_bytes, snapshot)
        fields = common_fields(_range_headers(stream, chunk.start, chunk.next, chunk.up_to_date, chunk.closed))
        body = json_array(chunk.data) if stream.framing is Framing.JSON else chunk.data
        return fields, body, len(chunk.data), chunk.closed

    async def _sse(self, request: Request, stream: StreamView, start: int | None) -> Response | StreamResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.sse_reconnect_interval
        position = stream.state.tail if start is None else start
        response = StreamResponse(status=200)
        response.headers.update(COMMON_HEADERS)
        response.headers.update({
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not buffer events
        })
        if needs_base64(stream.framing):
            response.headers["Stream-SSE-Data-Encoding"] = "base64"
        await response.prepare(request)
        response.set_high_water(SSE_HIGH_WATER)
        reader = SseReader(response, position, request.query.get("cursor"), deadline)
        try:
            with stream.sse_cache.subscribed():  # shared encodings live while watched
                while not (self.engine.stopping or stream.removed or stream.state.soft_deleted):
                    tail, closed = stream.state.tail, stream.state.closed
                    position = reader.position
                    if position < tail:
                        event, chunk = await stream.sse_cache.get(
                            (position, tail, closed), lambda: self._sse_batch(stream, position, (tail, closed))
                        )
                        control = reader.control(chunk.next, chunk.up_to_date, chunk.closed, self.engine.clock())
                        await self._send(request, response, event + control)
                        self.metrics.served(len(chunk.data))
                        reader.position = chunk.next
                        reader.announced = chunk.up_to_date
                        if chunk.closed:
                            break
                        continue
                    if closed:
                        await self._send(request, response, reader.control(position, True, True, 0.0))
                        break
                    if not reader.announced:
                        control = reader.control(position, True, False, self.engine.clock())
                        await self._send(request, response, control)
                        reader.announced = True
                    if loop.time() >= deadline:
                        break  # periodic reconnect lets CDNs collapse readers
                    # At the tail: the stream's fan-out sends what comes next (live_fanout.py)
                    # and hands the reader back when this loop has something else to do.
                    drain = await self._sse_fanout(stream).park(reader)
                    if reader.ended:
                        break
                    if drain:
                        await self._drain(request, response, drain)
            await response.write_eof()
        except (ConnectionResetError, StreamError):
            pass  # the client left, or the stream went away: the connection just ends
        except Exception:  # headers are sent: the only thing left to do is end the stream
            log.exception("SSE stream %s ended by an unexpected error", stream.path)
            response.force_close()
        return response

    def _sse_fanout(self, stream: StreamView) -> SseFanout:
        fanout = self._sse_fanouts.get(stream)
        if fanout is None:
            fanout = self._sse_fanouts[stream] = SseFanout(
                self.engine, stream, lambda position, snapshot: self._sse_batch(stream, position, snapshot),
                self.metrics.served, functools.partial(_forget, self._sse_fanouts, stream))
        return fanout

    def _poll_fanout(self, stream: StreamView) -> PollFanout:
        fanout = self._poll_fanouts.get(stream)
        if fanout is None:
            fanout = self._poll_fanouts[stream] = PollFanout(
                self.engine, stream, lambda position, snapshot: self._poll_answer(stream, position, snapshot),
                self.metrics.served, functools.partial(_forget, self._poll_fanouts, stream))
        return fanout

    async def _send(self, request: Request, response: StreamResponse, frame: bytes) -> None:
        """Write one SSE frame. The write only waits while the connection's buffer is
        above SSE_HIGH_WATER, so the time it takes is the time the reader is not keeping
        up; past the bound the connection is cut. Memory per reader stays bounded (the
        buffer plus one frame) and no other subscriber ever waits on this one."""
        response.write_nowait(frame)
        await self._drain(request, response, len(frame))

    async def _drain(self, request: Request, response: StreamResponse, sent: int) -> None:
        """Wait while the connection's buffer is full after `sent` bytes were queued; cut
        the reader when that takes longer than its budget (see `_send`)."""
        if not response.must_drain:
            return  # the usual case: no wait, so no timer either
        budget = self.settings.slow_reader_timeout + sent / SLOW_READER_MIN_RATE
        try:
            async with asyncio.timeout(budget):
                await response.drain()
        except TimeoutError:
            log.info("reader of %s disconnected: not reading for %.0f s", request.path, budget)
            self.metrics.slow_reader_disconnected()
            request.abort()
            raise ConnectionResetError("slow reader") from None

    async def _sse_batch(self, stream: StreamView, position: int, snapshot: tuple[int, bool]) -> tuple[bytes, Chunk]:
        """Read and encode one data event; shared by every subscriber at this position."""
        chunk = await self.engine.read(stream, position, self.settings.max_read_bytes, snapshot)
        return data_event(stream.framing, chunk.data), chunk


def _forget(registry: dict, stream: StreamView, fanout) -> None:
    """A fan-out's last reader left: drop it (unless a newer one took its place)."""
    if registry.get(stream) is fanout:
        del registry[stream]


# -------------------------------------------------------------------- request parsing


def _stream_path(request: Request) -> str:
    """The stream key (the full path), refusing traversal and oversized paths."""
    raw = request.raw_path
    size = len(raw) if raw.isascii() else len(raw.encode("utf-8", "surrogateescape"))
    if size > MAX_PATH_BYTES:
        raise HttpError(400, f"path longer than {MAX_PATH_BYTES} bytes")
    path = request.path
    # unquote only touches escapes; the usual path has none and then equals the raw path,
    # so one check covers both spellings.
    unquoted = unquote(raw) if "%" in raw else raw
    for candidate in (path,) if unquoted == path else (path, unquoted):
        if "\x00" in candidate:
            raise HttpError(400, "path contains a NUL byte")
        if "." in candidate and any(segment in (".", "..") for segment in candidate.split("/")):
            raise HttpError(400, "path contains a dot segment")
    return path


_HOST = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{0,5}))?")


def _location(request: Request) -> str:
    """The new stream's absolute URL, or just its path when the Host header is unusable."""
    host = request.headers.get("Host", "")
    valid = _HOST.fullmatch(host)
    if valid is None or (valid.group(1) and int(valid.group(1)) > 65535):
        return request.raw_path
    return f"{request.scheme}://{host.lower()}{request.raw_path}"


def _fork_request(h) -> ForkRequest | None:
    source = h.get("Stream-Forked-From")
    offset, sub = h.get("Stream-Fork-Offset"), h.get("Stream-Fork-Sub-Offset")
    if source is None:
        if offset is not None or sub is not None:
            raise InvalidRequest("Stream-Fork-Offset and Stream-Fork-Sub-Offset require Stream-Forked-From")
        return None
    if offset is not None:
        parse_position(offset)  # malformed -> 400 before anything else
    sub_offset = parse.decimal(sub, "Stream-Fork-Sub-Offset") if sub is not None else 0
    return ForkRequest(source, offset, sub_offset)


def _arrived_body(request: Request, limit: int) -> bytes | None:
    """The whole body if it has arrived (the usual small body comes with its head), else
    None; refuses one announced or found larger than `limit`."""
    length = request.content_length
    if length is not None and length > limit:
        raise HttpError(413, f"request body larger than {limit} bytes", close=True)
    arrived = request.content.take_all()
    if arrived is not None and len(arrived) > limit:
        raise HttpError(413, f"request body larger than {limit} bytes", close=True)
    return arrived


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body incrementally, giving up as soon as it exceeds `limit`."""
    arrived = _arrived_body(request, limit)
    if arrived is not None:
        return arrived
    body = bytearray()
    async for piece in request.content.iter_any():
        body += piece
        if len(body) > limit:
            raise HttpError(413, f"request body larger than {limit} bytes", close=True)
    return bytes(body)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of (possibly weak) tags, or `*`."""
    if if_none_match is None:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _range_headers(stream: StreamView, start: int, next_offset: int, up_to_date: bool, closed: bool) -> dict[str, str]:
    """Headers of a read that returns [start, next_offset): its position, an ETag that
    names the range (and closure), and whether caches may keep it."""
    headers = _position_headers(stream, next_offset, up_to_date, closed)
    tag = f'"{stream.config.created_at!r}:{format_offset(start)}:{format_offset(next_offset)}'
    headers["ETag"] = tag + (':c"' if closed else '"')
    # Ranges with data never change and may be cached; an empty one at the tail must
    # not be, or readers polling it would miss new data.
    headers["Cache-Control"] = CACHEABLE if next_offset > start else "no-store"
    return headers


def _position_headers(stream: StreamView, next_offset: int, up_to_date: bool, closed: bool) -> dict[str, str]:
    headers = {"Content-Type": stream.config.content_type, "Stream-Next-Offset": format_offset(next_offset)}
    if up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if closed:
        headers["Stream-Closed"] = "true"
    return headers
