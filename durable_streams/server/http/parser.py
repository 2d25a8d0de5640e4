"""HTTP/1.1 request framing (RFC 9112), without I/O: heads and chunked bodies.

The parser is strict where leniency lets two parties disagree about where a request
ends (request smuggling): both Content-Length and Transfer-Encoding, differing lengths,
an unknown transfer coding, line folding and control characters are refused.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy


class HttpVersion(NamedTuple):
    major: int
    minor: int


HTTP_10 = HttpVersion(1, 0)
HTTP_11 = HttpVersion(1, 1)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, obs-text, space and tab; nothing else (no CR, LF, NUL).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


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
    # body framing: a length (0 = none) or CHUNKED
    body_length: int
    keep_alive: bool
    expect_continue: bool


CHUNKED = -1


# A whole header block in one match (each line: token, colon, value without controls),
# so the common case costs one regex pass; a refusal is then explained line by line.
_FIELDS = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])")


def parse_head(block: bytes, max_line: int, max_field: int) -> Head:
    """Parse one request head: `block` is everything before the blank line."""
    text = block.decode("utf-8", "surrogateescape")
    end = text.find("\r\n")
    request_line, fields = (text, "") if end < 0 else (text[:end], text[end + 2:] + "\r\n")
    if len(request_line) > max_line:
        raise ParseError(414, f"request line longer than {max_line} bytes")
    matched = _REQUEST_LINE.fullmatch(request_line)
    if matched is None:
        _explain_request_line(request_line.encode("utf-8", "surrogateescape"))
    method, target, version_text = matched.groups()
    version = HTTP_11 if version_text == "HTTP/1.1" else HTTP_10
    pairs = []
    if fields:
        lines = fields.split("\r\n")
        lines.pop()
        if len(fields) > max_field and max(map(len, lines)) > max_field:
            raise ParseError(431, f"header line longer than {max_field} bytes")
        if _FIELDS.fullmatch(fields) is None:
            _explain_fields(lines)
        for line in lines:
            name, _, value = line.partition(":")
            pairs.append((name, value.strip(" \t")))
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    if version == HTTP_11:
        hosts = headers.getall("Host", ())
        if len(hosts) != 1:
            raise ParseError(400, "missing Host header" if not hosts else "more than one Host header")
    return Head(
        method,
        target,
        version,
        headers,
        _body_length(headers, version),
        _keep_alive(headers, version),
        version == HTTP_11 and headers.get("Expect", "").lower() == "100-continue",
    )


def _explain_request_line(request_line: bytes) -> None:
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise ParseError(400, "malformed request line")
    method, target, version_text = parts
    if not _TOKEN.fullmatch(method):
        raise ParseError(400, "malformed method")
    if not target or _BAD_TARGET.search(target):
        raise ParseError(400, "malformed request target")
    if re.fullmatch(rb"HTTP/\d\.\d", version_text):
        raise ParseError(505, "HTTP version not supported")
    raise ParseError(400, "malformed HTTP version")


def _explain_fields(lines: list[str]) -> None:
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name.encode("utf-8", "surrogateescape")):
            # also refuses obs-fold (a line starting with whitespace) and bare LF
            raise ParseError(400, "malformed header line")
        if _BAD_VALUE.search(value.encode("utf-8", "surrogateescape")):
            raise ParseError(400, "control character in header value")
    raise ParseError(400, "malformed header block")


def _body_length(headers: CIMultiDictProxy[str], version: HttpVersion) -> int:
    codings = headers.getall("Transfer-Encoding", None)
    lengths = headers.getall("Content-Length", None)
    if codings is not None:
        if lengths is not None:
            raise ParseError(400, "both Transfer-Encoding and Content-Length")
        if version == HTTP_10:
            raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        names = [c.strip().lower() for value in codings for c in value.split(",")]
        if names != ["chunked"]:
            raise ParseError(501, "unsupported Transfer-Encoding (only chunked is accepted)")
        return CHUNKED
    if lengths is None:
        return 0
    first = lengths[0]
    if any(value != first for value in lengths) or not first.isascii() or not first.isdigit() or len(first) > 18:
        raise ParseError(400, "invalid Content-Length")
    return int(first)


def _keep_alive(headers: CIMultiDictProxy[str], version: HttpVersion) -> bool:
    connection = headers.get("Connection")
    if connection is None:
        return version == HTTP_11
    tokens = {t.strip().lower() for t in connection.split(",")}
    if "close" in tokens:
        return False
    return version == HTTP_11 or "keep-alive" in tokens


class ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder; trailers are read and dropped."""

    MAX_LINE = 4096

    __slots__ = ("_state", "_remaining", "_line", "done")

    def __init__(self) -> None:
        self._state = "size"  # size | data | data_end | trailer
        self._remaining = 0
        self._line = b""
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Decode what `data` holds: (body pieces, bytes left after the body's end)."""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == "data":
                take = min(self._remaining, end - pos)
                pieces.append(data[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data_end"
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                if len(self._line) > self.MAX_LINE:
                    raise ParseError(400, "chunk line too long")
                pos = end
                break
            line = self._line + data[pos:newline + 1]
            self._line = b""
            pos = newline + 1
            if len(line) > self.MAX_LINE:
                raise ParseError(400, "chunk line too long")
            if not line.endswith(b"\r\n"):
                raise ParseError(400, "chunk line not ended by CRLF")
            line = line[:-2]
            if self._state == "size":
                size = line.split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size):
                    raise ParseError(400, "malformed chunk size")
                self._remaining = int(size, 16)
                self._state = "data" if self._remaining else "trailer"
            elif self._state == "data_end":
                if line:
                    raise ParseError(400, "chunk data longer than its size")
                self._state = "size"
            else:  # trailer fields until the blank line
                if not line:
                    self.done = True
        return pieces, data[pos:]
