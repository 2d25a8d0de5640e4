"""Request and response objects of the HTTP/1.1 server.

A Request is what a handler reads: method, target, headers, peer, and a body stream.
A handler answers with a Response (status, headers, a complete body) or a
StreamResponse whose body it writes piece by piece (SSE). Names follow aiohttp's where
they mean the same thing.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any, AsyncIterator, Protocol
from urllib.parse import parse_qsl

from multidict import CIMultiDict, MultiDict, MultiDictProxy
from yarl import URL

from .framer import HttpVersion

class Link(Protocol):
    """What a request and its response need from their connection (connection.py has
    it; on HTTP/2 each stream has its own, h2connection.H2Stream). Nothing outside http/
    sees a transport: layers above use Request.abort(), Request.local_port and
    StreamResponse's writer methods."""

    remote: str
    local_host: str
    secure: bool
    closed: bool

    @property
    def local_port(self) -> int | None: ...

    @property
    def writing_paused(self) -> bool: ...

    def pause_reading(self, reason: object) -> None: ...

    def resume_reading(self, reason: object) -> None: ...

    def send_continue(self) -> None: ...

    def start_stream(self, request: "Request", response: "StreamResponse") -> tuple[bool, bool]: ...

    def stream_finished(self, response: "StreamResponse") -> None: ...

    def answer_now(self, request: "Request", response: "Response") -> bool: ...

    def set_write_high_water(self, nbytes: int) -> None: ...

    def write(self, data: bytes) -> None: ...

    def write_parts(self, *parts: bytes) -> None: ...

    async def drain(self) -> None: ...

    def abort(self) -> None: ...


class Request:
    __slots__ = ("method", "target", "version", "headers", "raw_path", "query_string", "content",
                 "keep_alive", "_conn", "_state", "_path", "_query")

    def __init__(self, conn: Link, method: str, target: str, version: HttpVersion, headers: Any,
                 content: "BodyReader", keep_alive: bool, state: dict | None = None) -> None:
        self._conn = conn
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.content = content
        self.keep_alive = keep_alive
        self._state = {} if state is None else state
        self._path: str | None = None
        self._query: MultiDictProxy[str] | None = None
        raw, _, query = (target if target[:1] == "/" else _origin_form(target)).partition("?")
        self.raw_path = raw
        self.query_string = query

    # --- the target ---

    @property
    def path(self) -> str:
        """The path, percent-decoded (as yarl decodes it)."""
        if self._path is None:
            raw = self.raw_path
            self._path = URL.build(path=raw, encoded=True).path if "%" in raw else raw
        return self._path

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(_parse_query(self.query_string)))
        return self._query

    @property
    def path_qs(self) -> str:
        """The path and query as sent (origin-form)."""
        return self.raw_path + ("?" + self.query_string if self.query_string else "")

    @property
    def host(self) -> str:
        return self.headers.get("Host") or self._conn.local_host

    @property
    def scheme(self) -> str:
        return "https" if self._conn.secure else "http"

    @property
    def secure(self) -> bool:
        return self._conn.secure

    @property
    def url(self) -> str:
        """The absolute URL of the request (scheme, Host, path and query)."""
        return f"{self.scheme}://{self.host}{self.path_qs}"

    # --- the peer ---

    @property
    def remote(self) -> str:
        return self._conn.remote

    @property
    def local_port(self) -> int | None:
        """The port the request arrived on (None on a unix socket)."""
        return self._conn.local_port

    def abort(self) -> None:
        """Drop the connection at once, with whatever it still had queued."""
        self._conn.abort()

    def answer_now(self, response: "Response") -> bool:
        """Send `response` now, before the handler returns it (it must then return this
        very object). Lets one task answer many waiting requests back to back; False when
        the connection cannot take it now (the handler then just returns a response)."""
        return self._conn.answer_now(self, response)

    # --- the body ---

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";", 1)[0].strip().lower()

    @property
    def body_exists(self) -> bool:
        return self.content.expected

    async def read(self) -> bytes:
        return await self.content.read()

    async def json(self) -> Any:
        return json.loads(await self.read())

    # --- per-request state shared by handlers (and by clones) ---

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    def clone(self, *, raw_path: str) -> "Request":
        """The same request with another path (query, headers, body and state shared)."""
        target = raw_path + ("?" + self.query_string if self.query_string else "")
        return Request(self._conn, self.method, target, self.version, self.headers, self.content,
                       self.keep_alive, self._state)


def _parse_query(query: str) -> list[tuple[str, str]]:
    """parse_qsl(query, keep_blank_values=True). Without escapes (`%`, `+`) decoding
    changes nothing, so the usual query is only split."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (piece.partition("=") for piece in query.split("&") if piece)]


def _origin_form(target: str) -> str:
    if target.startswith("/"):
        return target
    if target == "*":
        return target
    if "://" in target:  # absolute-form: scheme, authority and userinfo are not part of the path
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        question = rest.find("?")
        if slash < 0 or (0 <= question < slash):
            return "/" + (rest[question:] if question >= 0 else "")
        return rest[slash:]
    return target  # authority-form (CONNECT): no path


class BodyReader:
    """The request body as it arrives; reading applies back-pressure to the socket."""

    HIGH_WATER = 256 << 10

    __slots__ = ("expected", "_chunks", "_size", "_eof", "_waiter", "_error", "_conn", "_continue")

    def __init__(self, conn: Link | None, expected: bool, expect_continue: bool = False) -> None:
        self.expected = expected
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = not expected
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._conn = conn
        self._continue = expect_continue

    # --- the connection's side ---

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > self.HIGH_WATER and self._conn is not None and not self._eof:
                self._conn.pause_reading(self)
            if self._waiter is not None:
                self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        if self._waiter is not None:
            self._wake()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the handler's side ---

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by the handler."""
        return self._size

    @property
    def failed(self) -> bool:
        return self._error is not None

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        if self._continue:  # the client waits for our go before sending the body
            self._continue = False
            if self._conn is not None:
                self._conn.send_continue()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _take(self) -> bytes:
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._size <= self.HIGH_WATER // 2 and self._conn is not None:
            self._conn.resume_reading(self)
        return data

    def take_all(self) -> bytes | None:
        """The whole body when all of it has arrived (and none was read), else None."""
        if not self._eof or self._error is not None:
            return None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._conn is not None:
            self._conn.resume_reading(self)
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            while not self._chunks:
                if self._eof:
                    return
                await self._wait()
            yield self._take()

    async def read(self) -> bytes:
        parts = []
        async for piece in self.iter_any():
            parts.append(piece)
        return b"".join(parts)


class Response:
    """A complete response. `body` is bytes; `text` is encoded as UTF-8."""

    streaming = False

    def __init__(self, *, status: int = 200, body: bytes | None = None, text: str | None = None,
                 headers: Any = None, content_type: str | None = None) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers) if headers is not None else CIMultiDict()
        if text is not None:
            body = text.encode()
            if content_type is None and "Content-Type" not in self.headers:
                content_type = "text/plain; charset=utf-8"
        if content_type is not None:
            self.headers["Content-Type"] = content_type
        self.body = body or b""
        self.keep_alive = True
        self.body_length = 0  # bytes of body sent, once sent

    def force_close(self) -> None:
        self.keep_alive = False


def json_response(data: Any, *, status: int = 200, headers: Any = None) -> Response:
    return Response(status=status, body=json.dumps(data).encode(), headers=headers, content_type="application/json")


def as_chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk (what `StreamResponse.write_nowait` sends)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class StreamResponse:
    """A response whose body is written piece by piece after `prepare` sent the head:
    chunked on HTTP/1.1, delimited by closing the connection on HTTP/1.0."""

    streaming = True

    def __init__(self, *, status: int = 200, headers: Any = None) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers) if headers is not None else CIMultiDict()
        self.keep_alive = True
        self.body_length = 0
        self.prepared = False
        self._conn: Link | None = None
        self._chunked = False
        self._head_only = False
        self._finished = False

    def force_close(self) -> None:
        self.keep_alive = False

    async def prepare(self, request: Request) -> None:
        if self.prepared:
            return
        self._conn = request._conn
        self._chunked, self._head_only = self._conn.start_stream(request, self)
        self.prepared = True

    async def write(self, data: bytes) -> None:
        """Send `data`; waits while the connection's buffer is full."""
        self.write_nowait(data)
        await self.drain()

    def write_nowait(self, data: bytes) -> None:
        """Queue `data` on the connection without waiting (see `drain`)."""
        self.write_shared(data, None)

    def write_shared(self, data: bytes, chunk: bytes | None) -> None:
        """`write_nowait(data)`, given `chunk` = `as_chunk(data)` (None: frame it here): one
        piece sent to many responses is framed once, not once per response."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("write() before prepare()")
        if conn.closed:
            raise ConnectionResetError("connection lost")
        if not data or self._head_only:
            return
        self.body_length += len(data)
        if not self._chunked:
            conn.write(data)
        elif chunk is not None:
            conn.write(chunk)
        else:
            conn.write_parts(b"%x\r\n" % len(data), data, b"\r\n")

    def set_high_water(self, nbytes: int) -> None:
        """Above this many bytes queued, `must_drain` turns true (a prepared response)."""
        if self._conn is not None:
            self._conn.set_write_high_water(nbytes)

    @property
    def must_drain(self) -> bool:
        """The connection's buffer is full: `drain` would wait."""
        return self._conn is not None and self._conn.writing_paused

    async def drain(self) -> None:
        if self._conn is not None:
            await self._conn.drain()

    async def write_eof(self) -> None:
        if self._finished or self._conn is None:
            return
        self._finished = True
        self._conn.stream_finished(self)
        if self._chunked and not self._conn.closed:
            self._conn.write(b"0\r\n\r\n")
        await self._conn.drain()
