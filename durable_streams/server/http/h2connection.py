"""One HTTP/2 connection (RFC 9113) on the h2 library (python-hyper): h2 holds the
protocol state (frames, HPACK, stream states, flow-control windows); this class turns
its events into Requests and writes Responses back, one task per stream.

A TLS connection that negotiated `h2` by ALPN arrives here from connection.py: the HTTP/1.1
Connection hands its transport over (HTTPServer.serve_h2) right after the handshake, so
the HTTP/1.1 path pays nothing but the ALPN check.

Flow control, both ways:
- Request bodies: a stream's receive window is BodyReader.HIGH_WATER, the connection's
  CONNECTION_WINDOW. Bytes are acknowledged (WINDOW_UPDATE) as the handler takes them
  from the BodyReader, so a handler that does not read stops its client, not the others.
- Responses: what a handler writes is queued on its stream and sent as the peer's windows
  allow (and while the socket's buffer has room); StreamResponse.drain waits while the
  stream's queue is above its high-water mark, so a slow reader slows its writer only.

Graceful shutdown sends GOAWAY with the last stream id seen and lets those streams
finish; later streams get RST_STREAM(REFUSED_STREAM), which clients retry elsewhere.
A response with `Connection: close` does the same (as Go's server does); no
connection-specific field is sent (RFC 9113 §8.2.2).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame
from multidict import CIMultiDict, CIMultiDictProxy

from .framer import HttpVersion, ParseError
from .messages import BodyReader, Request, Response, StreamResponse

if TYPE_CHECKING:
    from .connection import Owner

log = logging.getLogger("durable_streams.server.http")

HTTP_2 = HttpVersion(2, 0)
MAX_CONCURRENT_STREAMS = 250  # Go's (and so Caddy's) default
CONNECTION_WINDOW = 1 << 20  # bytes of request bodies in flight on one connection
STREAM_HIGH_WATER = 64 << 10  # queued response bytes above which drain() waits (asyncio's default)
BODY_RATE_CHECK = 5.0  # as connection.py
# Bytes waiting in the socket's buffer past which a client that sends but does not read
# (a PING or SETTINGS flood: h2 answers every one) is cut. Responses never come near it:
# they wait while the buffer is above the transport's mark, and stop within a frame or so.
MAX_UNREAD = 1 << 20
_NO_BODY_STATUSES = frozenset([204, 304])
# RFC 9113 §8.2.2: never sent in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"])
_STATUS = {status: str(status).encode() for status in range(100, 600)}
_date_cache: list = [0, b""]


def _date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        from email.utils import formatdate

        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True).encode()
    return _date_cache[1]


class _ServerConnection(h2.connection.H2Connection):
    def _receive_goaway_frame(self, frame):  # type: ignore[no-untyped-def]
        # h2 closes its state machine on the peer's GOAWAY and then refuses to send
        # anything, but the streams the peer opened before it may finish (RFC 9113 §6.8;
        # Node's session.close() waits for them): keep the state open.
        state = self.state_machine.state
        events = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return events


class H2Stream:
    """One request and its response: the Link (messages.py) they talk to."""

    __slots__ = ("conn", "id", "request", "body", "task", "closed", "headers_sent", "ended", "end_pending",
                 "remote_ended", "handled", "received", "acked", "out", "out_size", "high_water",
                 "drain_waiters", "body_timer", "body_started", "body_received")

    def __init__(self, conn: "H2Connection", stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.request: Request | None = None
        self.body: BodyReader | None = None
        self.task: asyncio.Task | None = None
        self.closed = False  # reset (either side) or the connection is gone
        self.headers_sent = False
        self.ended = False  # END_STREAM sent
        self.end_pending = False  # the response is complete; END_STREAM follows the queue
        self.remote_ended = False  # the request (and its body) is complete
        self.handled = False  # the handler's task is over
        self.received = 0  # flow-controlled bytes of body received
        self.acked = 0  # ... and handed back to the peer
        self.out: deque[bytes | memoryview] = deque()
        self.out_size = 0
        self.high_water = STREAM_HIGH_WATER
        self.drain_waiters: list[asyncio.Future] = []
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_started = 0.0
        self.body_received = 0

    # --- what Request and BodyReader need ---

    @property
    def remote(self) -> str:
        return self.conn.remote

    @property
    def local_host(self) -> str:
        return self.conn.local_host

    secure = True

    @property
    def local_port(self) -> int | None:
        return self.conn.local_port

    def pause_reading(self, reason: object) -> None:
        pass  # the stream's window is the back-pressure: unread bytes are not acknowledged

    def resume_reading(self, reason: object) -> None:
        """The handler took bytes from the body: hand that much window back."""
        body = self.body
        if body is None or self.closed:
            return
        consumed = self.received - body.buffered - self.acked
        if consumed > 0:
            self.acked += consumed
            self.conn.acknowledge(self.id, consumed)

    def send_continue(self) -> None:
        if not self.headers_sent and not self.closed and not self.remote_ended:
            self.conn.send_informational(self, 100)

    def abort(self) -> None:
        """Reset this stream only: the connection's other streams go on."""
        self.conn.reset(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

    # --- what StreamResponse needs ---

    def answer_now(self, request: Request, response: Response) -> bool:
        """Early answers (Request.answer_now) let HTTP/1.1 long-polls woken together go out
        back to back before their handlers return; an h2 stream has its own task and
        frames, so it declines and its handler's return answers it."""
        return False

    def start_stream(self, request: Request, response: StreamResponse) -> tuple[bool, bool]:
        head_only = request.method == "HEAD" or response.status in _NO_BODY_STATUSES or response.status < 200
        self.conn.send_head(self, request, response, None, end_stream=head_only)
        return False, head_only  # never chunked: DATA frames delimit the body

    def stream_finished(self, response: StreamResponse) -> None:
        self.finish()

    def set_write_high_water(self, nbytes: int) -> None:
        self.high_water = nbytes

    @property
    def writing_paused(self) -> bool:
        return self.out_size > self.high_water or self.closed

    def write(self, data: bytes) -> None:
        if data and not self.closed and not self.end_pending:
            self.out.append(data)
            self.out_size += len(data)
            self.conn.pump(self)

    def write_parts(self, *parts: bytes) -> None:
        if self.closed or self.end_pending:
            return
        for part in parts:
            if part:
                self.out.append(part)
                self.out_size += len(part)
        self.conn.pump(self)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("stream reset")
        if self.out_size > self.high_water:
            waiter = self.conn.loop.create_future()
            self.drain_waiters.append(waiter)
            await waiter

    # --- the connection's side ---

    def finish(self) -> None:
        if not self.end_pending and not self.closed:
            self.end_pending = True
            self.conn.pump(self)

    def wake_drainers(self, error: BaseException | None = None) -> None:
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


class H2Connection(asyncio.Protocol):
    def __init__(self, server: "Owner") -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.local_host = ""
        self.secure = True
        self.closed = False
        self.streams: dict[int, H2Stream] = {}
        self._writing_paused = False
        self._flush_pending = False
        self._goaway_sent_at: int | None = None  # last stream id of our GOAWAY
        self._peer_goaway = False
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        settings = server.settings
        self._max_fields = settings.max_header_fields
        self._max_field = settings.max_field_size
        self._max_path = settings.max_line_size
        self.h2 = _ServerConnection(h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,  # bytes: decoded here, the way connection.py decodes
            validate_inbound_headers=True,  # rejects connection-specific and malformed fields
            normalize_inbound_headers=True,  # joins split cookie fields
            validate_outbound_headers=False,  # our own heads are built valid (send_head)
            normalize_outbound_headers=False,
        ))

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, (list, tuple)) else ""
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, (list, tuple)):
            host = str(sock[0])
            self.local_host = f"[{host}]:{sock[1]}" if ":" in host else f"{host}:{sock[1]}"
        self.server.connections.add(self)  # type: ignore[arg-type]
        settings = self.server.settings
        conn = self.h2
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: BodyReader.HIGH_WATER,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_head_size,
        })
        conn.decoder.max_header_list_size = settings.max_head_size  # h2 applies it only on an ACK
        conn.initiate_connection()
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._flush()
        self._idle_since = self.loop.time()
        self._arm_idle_timer(self._idle_since + settings.keepalive_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            log.warning("HTTP/2 protocol error from %s: %s", self.remote, error)
            code = getattr(error, "error_code", None) or h2.errors.ErrorCodes.PROTOCOL_ERROR
            try:
                self.h2.close_connection(error_code=code)
            except h2.exceptions.ProtocolError:
                pass
            self._flush()
            self.close_transport()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._on_request(event)  # type: ignore[arg-type]
            elif kind is h2.events.DataReceived:
                self._on_data(event)  # type: ignore[arg-type]
            elif kind is h2.events.StreamEnded:
                self._on_stream_ended(event.stream_id)  # type: ignore[attr-defined]
            elif kind is h2.events.StreamReset:
                stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                if stream is not None:
                    self._stream_gone(stream)
            elif kind is h2.events.WindowUpdated:
                if event.stream_id:  # type: ignore[attr-defined]
                    stream = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
                    if stream is not None:
                        self.pump(stream)
                else:
                    self._pump_all()
            elif kind is h2.events.RemoteSettingsChanged:
                self._pump_all()  # the initial window may have grown
            elif kind is h2.events.ConnectionTerminated:
                # The peer's GOAWAY: it opens no more streams; those open finish, unless it
                # reports an error.
                if event.error_code or not self.streams:  # type: ignore[attr-defined]
                    self.close_transport()
                    return
                self._peer_goaway = True
        self.flush_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # (already, if we closed it)
        self.server.connection_closed(self)  # type: ignore[arg-type]
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        for stream in list(self.streams.values()):
            self._stream_gone(stream, ConnectionResetError("connection lost"))
        self.streams.clear()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._pump_all()

    # ------------------------------------------------------------ what HTTPServer needs

    @property
    def idle(self) -> bool:
        return not self.streams

    def begin_shutdown(self) -> None:
        """GOAWAY: no new streams; those already seen finish, then the connection closes."""
        if self.closed:
            return
        self._send_goaway()
        if not self.streams:
            self.close_transport()

    def close(self) -> None:
        self.begin_shutdown()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_transport(self) -> None:
        """Close after what is queued is written. Streams still open (after a protocol
        error, or the peer's GOAWAY with an error) end now: nothing more is sent for them."""
        if self.transport is not None and not self.closed:
            self._flush()
            self.closed = True
            for stream in list(self.streams.values()):
                self._stream_gone(stream, ConnectionResetError("connection closed"))
            self.transport.close()

    @property
    def local_port(self) -> int | None:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return sockname[1] if isinstance(sockname, tuple) else None

    # ------------------------------------------------------------ inbound

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self._goaway_sent_at is not None and stream_id > self._goaway_sent_at:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        method = path = authority = ""
        fields: list[tuple[str, str]] = []
        refusal: ParseError | None = None
        max_field = self._max_field
        for name, value in event.headers or ():
            if len(name) + len(value) > max_field:
                refusal = ParseError(431, f"header field longer than {max_field} bytes")
            if name[:1] == b":":
                if name == b":method":
                    method = value.decode("ascii", "replace")
                elif name == b":path":
                    path = value.decode("utf-8", "surrogateescape")
                elif name == b":authority":
                    authority = value.decode("utf-8", "surrogateescape")
            elif name != b"host":
                fields.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))
        if authority:
            fields.append(("Host", authority))
        if len(fields) > self._max_fields:
            refusal = ParseError(431, f"more than {self._max_fields} header fields")
        if len(path) > self._max_path:
            refusal = ParseError(414, f"request target longer than {self._max_path} bytes")
        if method == "CONNECT":
            refusal = ParseError(405, "CONNECT is not supported")
        headers = CIMultiDictProxy(CIMultiDict(fields))
        stream.remote_ended = event.stream_ended is not None
        # `content-length: 0` is an empty body, as on HTTP/1.1, even before END_STREAM comes
        # (undici ends such a stream only after the response); h2 refuses DATA beyond it.
        has_body = not stream.remote_ended and headers.get("Content-Length") != "0"
        expect_continue = has_body and headers.get("Expect", "").lower() == "100-continue"
        body = BodyReader(stream, has_body, expect_continue)
        stream.body = body
        stream.request = Request(stream, method, path or "/", HTTP_2, headers, body, True)
        if refusal is not None:
            self._send_error(stream, refusal)
            stream.handled = True
            self._forget_if_done(stream)
            return
        if has_body:
            stream.body_started = self.loop.time()
            stream.body_timer = self.loop.call_later(self.server.settings.body_rate_grace,
                                                     self._check_body_rate, stream)
        stream.task = self.loop.create_task(self._serve(stream))

    def _on_data(self, event: h2.events.DataReceived) -> None:
        size = event.flow_controlled_length or 0
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.closed or stream.body is None or stream.handled:
            if size:  # nobody will read it: the connection's window must not shrink for good
                self.h2.acknowledge_received_data(size, event.stream_id)
            return
        data = event.data or b""
        padding = size - len(data)
        stream.received += len(data)
        stream.body_received += len(data)
        if padding:
            self.h2.acknowledge_received_data(padding, stream.id)
        stream.body.feed(data)

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.remote_ended = True
        self._stop_body_timer(stream)
        if stream.body is not None:
            stream.body.feed_eof()
        self._forget_if_done(stream)

    def acknowledge(self, stream_id: int, size: int) -> None:
        if self.closed:
            return
        self.h2.acknowledge_received_data(size, stream_id)
        self.flush_soon()

    def _check_body_rate(self, stream: H2Stream) -> None:
        """min_body_rate, as on HTTP/1.1: a body that trickles in is answered 408."""
        stream.body_timer = None
        if stream.remote_ended or stream.closed or stream.body is None:
            return
        now = self.loop.time()
        if stream.body.buffered >= BodyReader.HIGH_WATER // 2:  # the handler is not reading: not the client's fault
            stream.body_started, stream.body_received = now, 0
        elif stream.body_received < self.server.settings.min_body_rate * (now - stream.body_started):
            stream.body.fail(ParseError(408, "request body arriving too slowly"))
            return
        stream.body_timer = self.loop.call_later(BODY_RATE_CHECK, self._check_body_rate, stream)

    @staticmethod
    def _stop_body_timer(stream: H2Stream) -> None:
        if stream.body_timer is not None:
            stream.body_timer.cancel()
            stream.body_timer = None

    # ------------------------------------------------------------ answering

    async def _serve(self, stream: H2Stream) -> None:
        server = self.server
        request = stream.request
        assert request is not None
        started = time.perf_counter() if server.access_log is not None else 0.0
        try:
            try:
                response = await server.handler(request)
            except (asyncio.CancelledError, ConnectionError):
                raise
            except ParseError as error:  # the body was malformed or too slow
                if not stream.headers_sent:
                    self._send_error(stream, error)
                else:
                    stream.abort()
                return
            except Exception:
                log.exception("unhandled error answering %s %s", request.method, request.raw_path)
                if stream.headers_sent:
                    stream.abort()  # the client must see the body is incomplete
                    return
                response = Response(status=500, text="500 Internal Server Error\n")
            if response.streaming:
                if not response.prepared:
                    await response.prepare(request)
                await response.write_eof()
            else:
                self._send_response(stream, request, response)
            if server.access_log is not None:
                server.access_log(request, response, time.perf_counter() - started)
        except (asyncio.CancelledError, ConnectionError):
            pass  # the stream was reset or the connection lost: nobody to answer
        except Exception:
            log.exception("error answering %s %s; resetting the stream", request.method, request.raw_path)
            stream.abort()
        finally:
            stream.handled = True
            self._stop_body_timer(stream)
            self._forget_if_done(stream)
            self.flush_soon()

    def _head(self, stream: H2Stream, request: Request, response: Response | StreamResponse,
              content_length: int | None) -> list[tuple[bytes, bytes]]:
        hook = self.server.prepare_hook
        if hook is not None:
            hook(request, response)
        fields = [(b":status", _STATUS.get(response.status) or str(response.status).encode())]
        append = fields.append
        has_date = False
        for name, value in response.headers.items():
            lower = name.lower()
            if lower in _CONNECTION_SPECIFIC:
                if lower == "connection" and "close" in str(value).lower():
                    self._send_goaway()  # as Go's server: finish what is open, then close
                continue
            if not isinstance(value, str):
                value = str(value)
            if "\r" in value or "\n" in value or "\0" in value or "\r" in name or "\n" in name:
                raise ValueError("line break in a response header")
            if lower == "date":
                has_date = True
            append((lower.encode("latin-1"), value.encode("utf-8", "surrogateescape")))
        if content_length is not None:
            append((b"content-length", str(content_length).encode()))
        if not has_date:
            append((b"date", _date()))
        return fields

    def send_head(self, stream: H2Stream, request: Request, response: Response | StreamResponse,
                  content_length: int | None, *, end_stream: bool) -> None:
        if stream.closed:
            raise ConnectionResetError("stream reset")
        fields = self._head(stream, request, response, content_length)
        self.h2.send_headers(stream.id, fields, end_stream=end_stream)
        stream.headers_sent = True
        if end_stream:
            stream.ended = stream.end_pending = True
        self.flush_soon()

    def send_informational(self, stream: H2Stream, status: int) -> None:
        self.h2.send_headers(stream.id, [(b":status", _STATUS[status])])
        self.flush_soon()

    def _send_response(self, stream: H2Stream, request: Request, response: Response) -> None:
        status = response.status
        headers = response.headers
        body = response.body
        content_length: int | None = None
        if status in _NO_BODY_STATUSES or status < 200:
            headers.popall("Content-Length", None)
            body = b""
        elif "Content-Length" not in headers:
            content_length = len(body)
        if request.method == "HEAD":
            body = b""
        try:
            fields = self._head(stream, request, response, content_length)
        except ValueError:
            log.error("response to %s %s has a line break in a header; answering 500",
                      request.method, request.raw_path)
            response.status, response.body = 500, b""
            response.headers.clear()
            fields = [(b":status", b"500"), (b"content-length", b"0"), (b"date", _date())]
            body = b""
        response.body_length = len(body)
        if stream.closed:
            return
        self.h2.send_headers(stream.id, fields, end_stream=not body)
        stream.headers_sent = True
        if body:
            stream.out.append(body)
            stream.out_size += len(body)
            stream.finish()
        else:
            stream.ended = stream.end_pending = True

    def _send_error(self, stream: H2Stream, error: ParseError) -> None:
        log.warning("malformed request from %s: %s (%d)", self.remote, error.reason, error.status)
        response = Response(status=error.status, text=f"{error.status} {error.reason}\n")
        assert stream.request is not None
        request = stream.request
        self._send_response(stream, request, response)

    # ------------------------------------------------------------ outbound flow control

    def pump(self, stream: H2Stream) -> None:
        """Send what the stream has queued, as far as the windows and the socket allow."""
        if self.closed or stream.closed:
            return
        conn = self.h2
        out = stream.out
        if out and not self._writing_paused:
            max_frame = conn.max_outbound_frame_size
            unflushed = 0
            while out:
                window = conn.local_flow_control_window(stream.id)
                if window <= 0:
                    break
                piece = out[0]
                size = len(piece)
                if size <= window and size <= max_frame:
                    out.popleft()
                else:
                    size = min(window, max_frame)
                    view = piece if isinstance(piece, memoryview) else memoryview(piece)
                    piece, out[0] = view[:size], view[size:]
                stream.out_size -= size
                last = not out and stream.end_pending
                conn.send_data(stream.id, piece, end_stream=last)
                if last:
                    stream.ended = True
                unflushed += size
                if unflushed >= STREAM_HIGH_WATER:  # hand it to the socket, and stop if that is full
                    self._flush()
                    unflushed = 0
                    if self._writing_paused:
                        break
        if not out and stream.end_pending and not stream.ended:
            conn.end_stream(stream.id)
            stream.ended = True
        if stream.drain_waiters and stream.out_size <= stream.high_water:
            stream.wake_drainers()
        self.flush_soon()
        if stream.ended:
            self._forget_if_done(stream)

    def _pump_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.out or (stream.end_pending and not stream.ended):
                self.pump(stream)
                if self._writing_paused:
                    return

    def flush_soon(self) -> None:
        """Write what h2 has queued once this turn of the event loop is over: the frames
        of several streams (and of several writes to one) go out in one TLS write."""
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)
            if self._writing_paused and self.transport.get_write_buffer_size() > MAX_UNREAD:
                log.warning("HTTP/2 client %s sends but does not read; closing the connection", self.remote)
                self.transport.abort()

    # ------------------------------------------------------------ stream ends

    def reset(self, stream: H2Stream, code: h2.errors.ErrorCodes) -> None:
        if stream.closed or self.closed:
            return
        try:
            self.h2.reset_stream(stream.id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self.flush_soon()
        self._stream_gone(stream)

    def _stream_gone(self, stream: H2Stream, error: BaseException | None = None) -> None:
        """The stream was reset (by either side) or the connection lost: stop its handler."""
        stream.closed = True
        stream.out.clear()
        stream.out_size = 0
        self._stop_body_timer(stream)
        error = error or ConnectionResetError("stream reset")
        if stream.body is not None and not stream.remote_ended:
            stream.body.fail(error)
        stream.wake_drainers(error)
        if stream.task is not None and not stream.task.done() and stream.task is not asyncio.current_task():
            stream.task.cancel()
        self._release(stream)

    def _forget_if_done(self, stream: H2Stream) -> None:
        """Drop a stream whose handler is over and whose response is all sent. A request
        body still arriving is refused with RST_STREAM(NO_ERROR) (RFC 9113 §8.1)."""
        if stream.closed:
            return
        if not (stream.handled and stream.ended and not stream.out):
            return
        if not stream.remote_ended:
            try:
                self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
            stream.closed = True
        self._release(stream)

    def _release(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        unacked = stream.received - stream.acked
        if unacked > 0 and not self.closed:  # hand the connection's window back
            stream.acked = stream.received
            self.h2.acknowledge_received_data(unacked, stream.id)
        if not self.streams:
            self._idle_since = self.loop.time()
            if self._goaway_sent_at is not None or self._peer_goaway:
                self.close_transport()
            elif self._idle_timer is None and not self.closed:
                self._arm_idle_timer(self._idle_since + self.server.settings.keepalive_timeout)

    # ------------------------------------------------------------ GOAWAY and idle

    def _send_goaway(self) -> None:
        """Written by hand: h2's close_connection() would refuse to send anything after
        it, and the streams already open must finish."""
        if self._goaway_sent_at is not None or self.closed:
            return
        self._goaway_sent_at = last = self.h2.highest_inbound_stream_id
        self._flush()
        if self.transport is not None:
            self.transport.write(GoAwayFrame(stream_id=0, last_stream_id=last, error_code=0).serialize())

    def _arm_idle_timer(self, when: float) -> None:
        self._idle_timer = self.loop.call_at(when, self._check_idle)

    def _check_idle(self) -> None:
        """keepalive_timeout: the time a connection may stay without a stream. One timer
        per connection, moved on when it fires, not per stream."""
        self._idle_timer = None
        if self.closed:
            return
        timeout = self.server.settings.keepalive_timeout
        now = self.loop.time()
        if self.streams:
            self._arm_idle_timer(now + timeout)
        elif now >= self._idle_since + timeout:
            self.begin_shutdown()
        else:
            self._arm_idle_timer(self._idle_since + timeout)
