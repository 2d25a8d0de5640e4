"""HTTP/1.1 request framing: llhttp (through httptools, the parser Node.js and uvicorn
use), with stricter rules on top, and no I/O.

llhttp decides where a request ends: request line, header and trailer syntax, chunk
grammar, Content-Length. On top of it, the rules where leniency lets two parties disagree
about a request (request smuggling), or where this server has limits:
- Transfer-Encoding must be exactly `chunked` (ASCII), and never in HTTP/1.0;
  Connection values must be ASCII tokens;
- HTTP/1.1 needs a Host and no request may have two, whatever its form (RFC 9112 §3.2);
  an absolute-form target's authority then replaces it (§3.2.2);
- CONNECT is refused (a 2xx would mean "tunnel established"); a request asking for an
  upgrade is answered as plain HTTP, then the connection closes, and refused if it has a
  body (httptools has llhttp skip an upgrade request's body: it would read as empty);
- at most `max_fields` header fields, a request line of at most `max_line`, a field of at
  most `max_field`, a head of at most `max_head` bytes.
Heads are parsed incrementally as bytes arrive, so the cost is linear in their size.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

import httptools
from multidict import CIMultiDict, CIMultiDictProxy


class HttpVersion(NamedTuple):
    major: int
    minor: int


HTTP_10 = HttpVersion(1, 0)
HTTP_11 = HttpVersion(1, 1)
CHUNKED = -1  # Head.body_length of a chunked body

_VERSIONS = {"1.1": HTTP_11, "1.0": HTTP_10}
# The usual methods' names, decoded once.
_METHODS = {name.encode(): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
# A comma-separated list of ASCII tokens with optional whitespace (Connection, codings).
_TOKEN_LIST = re.compile(rb"[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*,[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*[ \t]*")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://(?:[^/?#@]*@)?([^/?#]*)")  # group 1: host[:port]


class ParseError(Exception):
    """A request that cannot be framed; answered with `status`, then the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Head(NamedTuple):
    method: str
    target: str  # the request target as sent (origin-form, absolute-form, `*`)
    version: HttpVersion
    headers: CIMultiDictProxy[str]
    body_length: int  # 0 = none, CHUNKED, or the Content-Length
    keep_alive: bool
    expect_continue: bool


class Limits(NamedTuple):
    max_line: int = 64 << 10
    max_field: int = 64 << 10
    max_head: int = 1 << 20
    max_fields: int = 100


class RequestSink(Protocol):
    """Where a framer delivers what it framed (a connection)."""

    def on_head(self, head: Head) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_body_end(self) -> None: ...


class RequestFramer:
    """Frames the requests of one connection. `feed(data)` delivers every head, body
    piece and body end that `data` completes to the sink, in order, and raises
    ParseError at the first request that cannot be framed (nothing after it is parsed).
    After an upgrade request, `stopped` is true and further bytes are ignored."""

    __slots__ = ("sink", "limits", "stopped", "head_bytes", "in_head", "_parser", "_url", "_url_bytes",
                 "_fields", "_field_bytes", "_error")

    def __init__(self, sink: RequestSink, limits: Limits = Limits()) -> None:
        self.sink = sink
        self.limits = limits
        self.stopped = False
        self.head_bytes = 0  # bytes of the head being received (0 between heads)
        self.in_head = False  # a request head has begun and is not complete yet
        self._parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._url_bytes = 0
        self._fields: list[tuple[str, str]] = []
        self._field_bytes = 0
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        was_in_head = self.in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stopped = True  # answered as plain HTTP; the connection then closes
        except httptools.HttpParserCallbackError:
            raise (self._error or ParseError(400, "malformed request")) from None
        except httptools.HttpParserError as exc:
            raise ParseError(400, _reason(exc)) from None
        if was_in_head and self.in_head:
            # The same head is still open: what it holds (here and inside the parser) is
            # bounded by max_head plus one read, however slowly or long it arrives.
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_head:
                raise ParseError(431, "request head too large")

    def _fail(self, error: ParseError) -> None:
        self._error = error
        raise error

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self._url.clear()
        self._url_bytes = 0
        self._fields = []
        self._field_bytes = 0

    def on_url(self, fragment: bytes) -> None:
        self._url.append(fragment)
        self._url_bytes += len(fragment)
        if self._url_bytes > self.limits.max_line:
            self._fail(ParseError(414, f"request line longer than {self.limits.max_line} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a trailer field: llhttp checked its syntax; its value is dropped
        limits = self.limits
        size = len(name) + len(value)
        self._field_bytes += size
        if size > limits.max_field or self._field_bytes > limits.max_head or len(self._fields) >= limits.max_fields:
            self._fail(self._field_error(size))
        self._fields.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def _field_error(self, size: int) -> ParseError:
        limits = self.limits
        if size > limits.max_field:
            return ParseError(431, f"header line longer than {limits.max_field} bytes")
        if self._field_bytes > limits.max_head:
            return ParseError(431, "request head too large")
        return ParseError(431, f"more than {limits.max_fields} header fields")

    def on_headers_complete(self) -> None:
        self.in_head = False
        try:
            head = self._head()
        except ParseError as error:
            self._fail(error)
        self.sink.on_head(head)

    def on_body(self, data: bytes) -> None:
        self.sink.on_body(data)

    def on_message_complete(self) -> None:
        self.sink.on_body_end()

    # ------------------------------------------------------------ the rules on top

    def _head(self) -> Head:
        parser = self._parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise ParseError(505, "HTTP version not supported")
        if method == "CONNECT":
            raise ParseError(405, "CONNECT is not supported")
        url = self._url
        target = (url[0] if len(url) == 1 else b"".join(url)).decode("utf-8", "surrogateescape")
        headers = CIMultiDict(self._fields)
        hosts = len(headers.getall("Host", ()))
        if hosts > 1 or (hosts == 0 and version == HTTP_11):
            raise ParseError(400, "missing Host header" if hosts == 0 else "more than one Host header")
        absolute = _ABSOLUTE.match(target) if target[:1] != "/" else None
        if absolute is not None:  # the authority is the host; the Host field is ignored
            headers.popall("Host", None)
            headers["Host"] = absolute.group(1)
        if "Connection" in headers:
            for value in headers.getall("Connection"):
                if not _TOKEN_LIST.fullmatch(value.encode("utf-8", "surrogateescape")):
                    raise ParseError(400, "malformed Connection header")
        body_length = _body_length(headers, version)
        upgrade = parser.should_upgrade()
        if upgrade and body_length != 0:
            raise ParseError(400, "upgrade request with a body")
        keep_alive = parser.should_keep_alive() and not upgrade
        expect = version == HTTP_11 and "Expect" in headers and headers["Expect"].lower() == "100-continue"
        return Head(method, target, version, CIMultiDictProxy(headers), body_length, keep_alive, expect)


def _body_length(headers: CIMultiDict[str], version: HttpVersion) -> int:
    if "Transfer-Encoding" in headers:  # llhttp refused it together with Content-Length
        codings = headers.getall("Transfer-Encoding")
        if version == HTTP_10:
            raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        names: list[bytes] = []
        for value in codings:
            raw = value.encode("utf-8", "surrogateescape")
            if not _TOKEN_LIST.fullmatch(raw):
                raise ParseError(400, "malformed Transfer-Encoding")
            names += [name.strip(b" \t").lower() for name in raw.split(b",")]
        if names != [b"chunked"]:
            raise ParseError(501, "unsupported Transfer-Encoding (only chunked is accepted)")
        return CHUNKED
    length = headers.get("Content-Length")
    return int(length) if length is not None else 0  # digits only: llhttp checked them


def _reason(error: httptools.HttpParserError) -> str:
    """llhttp's own words, without the error code prefix httptools may add."""
    text = str(error).strip()
    return text[0].lower() + text[1:] if text else "malformed request"
