"""One HTTP/1.1 connection: frames requests as bytes arrive, answers them in order.

`data_received` hands bytes to a RequestFramer (llhttp, with our stricter rules), which
calls back with heads, body pieces and body ends; one task per connection runs the
handler for each request in turn and writes its response, so pipelined requests are
answered in order. A client that goes away cancels the handler of its request. Reading
pauses while a body waits unread beyond BodyReader.HIGH_WATER, and writing a streamed
response waits while the socket's buffer is full.

Deadlines while a request arrives (never while a response is sent, so long-polls and
SSE are not cut): a head must be complete within `head_timeout` of its first byte (408),
and a body must keep up `min_body_rate` on average once `body_rate_grace` has passed
(408). Both answer after the requests before them, then close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Protocol

from .messages import BodyReader, Request, Response, StreamResponse
from .framer import HTTP_10, Head, Limits, ParseError, RequestFramer

from .settings import ServerSettings

Handler = Callable[[Request], Awaitable["Response | StreamResponse"]]
PrepareHook = Callable[[Request, "Response | StreamResponse"], None]
AccessLog = Callable[[Request, "Response | StreamResponse", float], None]


class Owner(Protocol):
    """What a connection needs from the server that accepted it (server.py has it)."""

    handler: Handler
    settings: ServerSettings
    prepare_hook: PrepareHook | None
    access_log: AccessLog | None
    connections: set["Connection"]
    shutting_down: bool

    partial_head_bytes: int
    accepted_connections: int

    def connection_closed(self, conn: "Connection") -> None: ...

    def connection_refused(self) -> None: ...

    def serve_h2(self, transport: asyncio.BaseTransport) -> None: ...  # ALPN chose h2

log = logging.getLogger("durable_streams.server.http")

MAX_PIPELINED = 16  # requests parsed ahead of the one being answered before reading pauses
JOIN_LIMIT = 16 << 10  # pieces of a response up to this size are joined into one write
BODY_RATE_CHECK = 5.0  # seconds between checks of a body's average rate, after the grace
_NO_BODY_STATUSES = frozenset([204, 304])
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_date_cache: list[Any] = [0, ""]  # (second, its Date field line)


def _date_line() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, f"Date: {formatdate(now, usegmt=True)}\r\n"
    return _date_cache[1]



_STATUS_LINES = {status: f"HTTP/1.1 {status} {phrase}\r\n" for status, phrase in _REASONS.items()}


def _status_line(status: int) -> str:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"


class Connection(asyncio.Protocol):
    def __init__(self, server: Owner) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.local_host = ""
        self.secure = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        settings = server.settings
        self._framer = RequestFramer(self, Limits(settings.max_line_size, settings.max_field_size,
                                                  settings.max_head_size, settings.max_header_fields))
        self._head_bytes = 0  # this connection's share of the server's partial-head bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_received = 0
        self._requests: deque[Request | ParseError] = deque()
        self._wakeup: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._busy = False  # a handler is running or a response is being written
        self._stopped_parsing = False
        self._body: BodyReader | None = None  # the body being received
        self._reading_paused = False
        self._pause_reasons: set[object] = set()  # "pipeline", or a BodyReader over its mark
        self._writing_paused = False
        self._streaming: StreamResponse | None = None  # prepared, not finished, this request
        self._answering: Request | None = None  # the request whose handler runs
        self._early: tuple[Response, bool] | None = None  # sent by answer_now, and its keep-alive
        self._drain_waiters: list[asyncio.Future] = []
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._continue_sent = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.server.connections) >= self.server.settings.max_connections:
            # Refused as cheaply as possible: no task, no timer, no parser work.
            self.closed = self._stopped_parsing = True
            self.server.connection_refused()
            transport.abort()
            return
        self.server.accepted_connections += 1
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.closed = self._stopped_parsing = True  # this object is out of the picture
            self.server.serve_h2(transport)
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, (list, tuple)) else ""
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, (list, tuple)):
            host = str(sock[0])
            self.local_host = f"[{host}]:{sock[1]}" if ":" in host else f"{host}:{sock[1]}"
        self.secure = ssl_object is not None
        self.server.connections.add(self)
        self._idle_since = self._loop.time()
        self._arm_idle_timer(self._idle_since + self.server.settings.keepalive_timeout)
        self._task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._stopped_parsing:
            return
        framer = self._framer
        was_in_head = framer.in_head
        try:
            framer.feed(data)
            if framer.in_head or self._head_bytes:
                self._account_head()
        except ParseError as error:
            self._refuse(error)
            return
        if framer.stopped:
            self._stopped_parsing = True  # an upgrade request: nothing after it is read
            return
        # Deadlines only for what is still arriving: the usual request comes whole in one
        # read and needs no timer at all.
        if framer.in_head and not was_in_head and self._head_timer is None:
            self._head_timer = self._loop.call_later(
                self.server.settings.head_timeout, self._head_too_slow)
        if self._body is not None and self._body_timer is None:
            self._body_timer = self._loop.call_later(self.server.settings.body_rate_grace, self._check_body_rate)

    def _account_head(self) -> None:
        """Keep the server's total of bytes held in incomplete heads; beyond its budget
        the connection adding to it is refused, so many slow heads cannot pile up."""
        held = self._framer.head_bytes if self._framer.in_head else 0
        if held != self._head_bytes:
            self.server.partial_head_bytes += held - self._head_bytes
            self._head_bytes = held
            if held and self.server.partial_head_bytes > self.server.settings.max_partial_heads:
                raise ParseError(431, "request head too large for the server's current load")

    # ------------------------------------------------------------ RequestSink (the framer's callbacks)

    def on_head(self, head: Head) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        body = BodyReader(self, head.body_length != 0, head.expect_continue)
        request = Request(self, head.method, head.target, head.version, head.headers, body, head.keep_alive)
        self._enqueue(request)
        if head.body_length != 0:
            self._body = body
            self._continue_sent = False
            self._body_started, self._body_received = self._loop.time(), 0

    def on_body(self, data: bytes) -> None:
        if self._body is not None:
            self._body_received += len(data)
            self._body.feed(data)

    def on_body_end(self) -> None:
        body = self._body
        if body is None:
            return
        body.feed_eof()
        self._body = None
        if self._body_timer is not None:
            self._stop_body_timer()
        if self._pause_reasons:
            self.resume_reading(body)  # nothing more to receive for it: buffered or not

    # ------------------------------------------------------------ arrival deadlines

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._framer.in_head and not self._stopped_parsing:
            self._refuse(ParseError(408, "request head not received in time"))

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if self._body is None or self.closed:
            return
        now = self._loop.time()
        if self._reading_paused:  # the handler is not reading: not the client's fault
            self._body_started, self._body_received = now, 0
        elif self._body_received < self.server.settings.min_body_rate * (now - self._body_started):
            self._refuse(ParseError(408, "request body arriving too slowly"))
            return
        self._body_timer = self._loop.call_later(BODY_RATE_CHECK, self._check_body_rate)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _enqueue(self, item: Request | ParseError) -> None:
        self._requests.append(item)
        if len(self._requests) > MAX_PIPELINED:
            self.pause_reading("pipeline")
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _refuse(self, error: ParseError) -> None:
        """A request that cannot be framed: answered with `error` after those before it,
        then the connection closes. A malformed body fails its reader with the error; the
        request's handler lets it through (answered like a malformed head) or answers
        anyway, and the connection closes after that answer."""
        self._stopped_parsing = True
        self._release_head()
        self._stop_body_timer()
        if self._body is not None:
            self._body.fail(error)
            self._body = None
        else:
            self._enqueue(error)

    def _release_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.server.partial_head_bytes -= self._head_bytes
        self._head_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused in connection_made: never counted
        self.closed = True
        self._release_head()
        self._stop_body_timer()
        self.server.connection_closed(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._body is not None:
            self._body.fail(ConnectionResetError("connection lost while reading the body"))
            self._body = None
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the handler of a client that left stops at once

    def eof_received(self) -> bool | None:
        return None  # None closes the transport: a half-closed client ends the connection

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------ flow control

    def pause_reading(self, reason: object) -> None:
        """Stop reading the socket until every reason given here is withdrawn."""
        self._pause_reasons.add(reason)
        if not self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self, reason: object) -> None:
        reasons = self._pause_reasons
        if reason not in reasons:
            return  # the usual case: reading was never paused for it
        reasons.discard(reason)
        if self._reading_paused and not reasons and not self.closed and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("connection lost")
        if self._writing_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def write_parts(self, *parts: bytes) -> None:
        """Write pieces in order; a large one is not copied to join them."""
        if self.closed or self.transport is None:
            return
        if sum(map(len, parts)) <= JOIN_LIMIT:
            self.transport.write(b"".join(parts))
        else:
            self.transport.writelines(parts)

    @property
    def writing_paused(self) -> bool:
        return self._writing_paused

    def send_continue(self) -> None:
        if self._body is not None and not self._continue_sent:
            self._continue_sent = True
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def local_port(self) -> int | None:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return sockname[1] if isinstance(sockname, tuple) else None

    def set_write_high_water(self, nbytes: int) -> None:
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=nbytes)

    def stream_finished(self, response: StreamResponse) -> None:
        if self._streaming is response:
            self._streaming = None

    @property
    def idle(self) -> bool:
        return not self._busy and not self._requests

    def begin_shutdown(self) -> None:
        """The server is shutting down: an idle connection closes now, a busy one after
        its response (which says `Connection: close`)."""
        if self.idle:
            self.close()

    # ------------------------------------------------------------ idle timeout

    def _arm_idle_timer(self, when: float) -> None:
        self._idle_timer = self._loop.call_at(when, self._check_idle)

    def _check_idle(self) -> None:
        """keepalive_timeout: the time a connection may wait for a complete request head,
        from its start or from the end of the previous response."""
        self._idle_timer = None
        if self.closed:
            return
        timeout = self.server.settings.keepalive_timeout
        now = self._loop.time()
        if self.idle:
            deadline = self._idle_since + timeout
            if now >= deadline:
                self.close()
                return
            self._arm_idle_timer(deadline)
        else:
            self._arm_idle_timer(now + timeout)

    # ------------------------------------------------------------ answering

    async def _serve(self) -> None:
        try:
            while not self.closed:
                if not self._requests:
                    if self.server.shutting_down:
                        break
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    continue
                item = self._requests.popleft()
                if self._pause_reasons and len(self._requests) <= MAX_PIPELINED:
                    self.resume_reading("pipeline")
                if isinstance(item, ParseError):
                    self._write_error(item)
                    break
                self._busy = True
                try:
                    keep_alive = await self._answer(item)
                except (asyncio.CancelledError, ConnectionError):
                    raise
                except Exception:  # a broken response object: nothing sane can follow on this connection
                    log.exception("error answering %s %s; closing the connection", item.method, item.raw_path)
                    break
                finally:
                    self._busy = False
                    self._idle_since = self._loop.time()
                if not keep_alive:
                    break
        except asyncio.CancelledError:
            if not self.closed:
                raise
            return
        except ConnectionError:
            pass
        self.close()

    async def _answer(self, request: Request) -> bool:
        server = self.server
        started = time.perf_counter() if server.access_log is not None else 0.0
        self._streaming = None
        self._answering, self._early = request, None
        try:
            response = await server.handler(request)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except ParseError as error:  # the request's body turned out malformed
            if self._streaming is None and self._early is None:
                self._write_error(error)
            return False
        except Exception:
            log.exception("unhandled error answering %s %s", request.method, request.raw_path)
            if self._streaming is not None or self._early is not None:
                # Part of a response is out: end the connection without the final chunk,
                # so the client sees the body is incomplete.
                if self.transport is not None:
                    self.transport.abort()
                return False
            response = Response(status=500, text="500 Internal Server Error\n")
            response.force_close()
        finally:
            self._answering = None
        early, self._early = self._early, None
        if early is not None:
            sent, keep_alive = early
            if response is not sent:  # a second answer to one request: the framing is lost
                log.error("%s %s answered twice; closing the connection", request.method, request.raw_path)
                if self.transport is not None:
                    self.transport.abort()
                return False
        elif response.streaming:
            if not response.prepared:  # returned unprepared: send it empty
                await response.prepare(request)
            await response.write_eof()
            keep_alive = self._keep_alive(request, response)
        else:
            # Decided when its head was written; nothing has run since that could change
            # it, but the connection may have gone, or the hook closed the response.
            keep_alive = self._write_response(request, response) and response.keep_alive
        self._streaming = None
        if server.access_log is not None:
            server.access_log(request, response, time.perf_counter() - started)
        return keep_alive and not self.closed

    def _keep_alive(self, request: Request, response: Response | StreamResponse) -> bool:
        """Whether the connection goes on after this response (said in its head)."""
        return (
            response.keep_alive
            and request.keep_alive
            and not self.server.shutting_down
            and not request.content.failed  # its body was malformed: the framing is lost
            and request.content is not self._body  # an unread body still on the wire: close
            and not self.closed
        )

    def _head(self, request: Request, response: Response | StreamResponse, framing: str | None,
              keep_alive: bool) -> bytes:
        hook = self.server.prepare_hook
        if hook is not None:
            hook(request, response)
        headers = response.headers
        try:
            fields = "\r\n".join(map(": ".join, headers.items()))  # no Python code per field
        except TypeError:  # a value that is not a str
            fields = "\r\n".join([f"{name}: {value}" for name, value in headers.items()])
        # One line per field and nothing else: a CR or LF inside a name or value would
        # start a header (or a body) of the client's choosing.
        breaks = len(headers) - 1 if headers else 0
        if fields.count("\n") != breaks or fields.count("\r") != breaks:
            raise ValueError("line break in a response header")
        lines = [_status_line(response.status)]
        if headers:
            lines += (fields, "\r\n")
        if framing is not None:
            lines.append(framing)
        if "Date" not in headers:
            lines.append(_date_line())
        if not keep_alive:
            if headers.get("Connection", "").lower() != "close":
                lines.append("Connection: close\r\n")
        elif request.version == HTTP_10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def _write_response(self, request: Request, response: Response) -> bool:
        """Write the whole response; returns whether its head kept the connection alive."""
        status = response.status
        headers = response.headers
        body = response.body
        if status in _NO_BODY_STATUSES or status < 200:
            headers.popall("Content-Length", None)
            headers.popall("Transfer-Encoding", None)
            framing, body = None, b""
        elif "Content-Length" in headers:
            framing = None
        else:
            framing = f"Content-Length: {len(body)}\r\n"
        if request.method == "HEAD":
            body = b""
        if headers.get("Connection", "").lower() == "close":
            response.force_close()
        keep_alive = self._keep_alive(request, response)
        try:
            head = self._head(request, response, framing, keep_alive)
        except ValueError:
            log.error("response to %s %s has a line break in a header; answering 500",
                      request.method, request.raw_path)
            response.status, response.body = 500, b""
            response.headers.clear()
            response.force_close()
            head = self._head(request, response, "Content-Length: 0\r\n", False)
            body = b""
            keep_alive = False
        response.body_length = len(body)
        if body:
            self.write_parts(head, body)
        else:
            self.write(head)
        return keep_alive

    def answer_now(self, request: Request, response: Response) -> bool:
        """Write the answer to the request being handled before its handler returns it
        (Request.answer_now); _answer then only checks that it is the same object."""
        if self.closed or request is not self._answering or self._early is not None or self._streaming is not None:
            return False
        self._early = (response, self._write_response(request, response) and response.keep_alive)
        return True

    def start_stream(self, request: Request, response: StreamResponse) -> tuple[bool, bool]:
        """Send a StreamResponse's head; returns (chunked, head only). A HEAD request, 1xx,
        204 and 304 get the head alone (the response then drops what is written)."""
        head_only = request.method == "HEAD" or response.status in _NO_BODY_STATUSES or response.status < 200
        sized = "Content-Length" in response.headers
        chunked = not head_only and not sized and request.version != HTTP_10
        if not head_only and not sized and request.version == HTTP_10:
            response.force_close()  # the body ends when the connection does
        if response.headers.get("Connection", "").lower() == "close":
            response.force_close()
        framing = "Transfer-Encoding: chunked\r\n" if chunked else None
        self.write(self._head(request, response, framing, self._keep_alive(request, response)))
        self._streaming = None if head_only else response
        return chunked, head_only

    def _write_error(self, error: ParseError) -> None:
        log.warning("malformed request from %s: %s (%d)", self.remote or "unix socket", error.reason, error.status)
        body = f"{error.status} {_REASONS.get(error.status, 'Bad Request')}: {error.reason}\n".encode()
        self.write(
            _status_line(error.status).encode()
            + b"Content-Type: text/plain; charset=utf-8\r\n"
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )
