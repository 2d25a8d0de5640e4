"""Byte-level HTTP/1.1 client pieces for testing the server's framing over real sockets."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from multidict import CIMultiDict

TIMEOUT = 2.0  # a guard against hangs only: every wait here normally ends in milliseconds


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    head: bytes  # the status line and header lines, as received
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)  # the chunk payloads, when chunked
    framing: str = "none"  # none | length | chunked | close


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)

    async def head(self, timeout: float = TIMEOUT) -> tuple[int, str, CIMultiDict[str], bytes]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw[:-4].split(b"\r\n")
        version, status, reason = lines[0].decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            assert name and name == name.strip(), line
            headers.add(name, value.strip())
        return int(status), reason, headers, raw

    async def response(self, method: str = "GET", timeout: float = TIMEOUT) -> RawResponse:
        """Read one response (a 1xx response is returned on its own), framed as RFC 9112 says."""
        status, reason, headers, raw = await self.head(timeout)
        resp = RawResponse(status, reason, headers, raw)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return resp
        if "Transfer-Encoding" in headers:
            assert headers["Transfer-Encoding"].lower() == "chunked", headers
            assert "Content-Length" not in headers
            resp.framing = "chunked"
            while True:
                size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
                size = int(size_line[:-2].split(b";")[0], 16)
                if size == 0:
                    trailer = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
                    assert trailer == b"\r\n", trailer
                    break
                data = await asyncio.wait_for(self.reader.readexactly(size + 2), TIMEOUT)
                assert data.endswith(b"\r\n"), data
                resp.chunks.append(data[:-2])
            resp.body = b"".join(resp.chunks)
        elif "Content-Length" in headers:
            resp.framing = "length"
            resp.body = await asyncio.wait_for(self.reader.readexactly(int(headers["Content-Length"])), TIMEOUT)
        else:
            resp.framing = "close"
            resp.body = await self.read_to_eof()
        return resp

    async def read_to_eof(self) -> bytes:
        """Everything until the server closes (a reset counts as a close)."""
        parts = []
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
                if not data:
                    break
                parts.append(data)
        except ConnectionResetError:
            pass
        return b"".join(parts)

    async def assert_closed(self) -> None:
        """The server closed the connection and sent nothing more."""
        rest = await self.read_to_eof()
        assert rest == b"", rest

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


def get(path: str = "/", *, host: str = "test", headers: str = "", version: str = "1.1", method: str = "GET") -> bytes:
    host_line = f"Host: {host}\r\n" if host else ""
    return f"{method} {path} HTTP/{version}\r\n{host_line}{headers}\r\n".encode()


def post(path: str, body: bytes, *, headers: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


async def wait_until(condition, timeout: float = TIMEOUT) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout)


def sleeping_handler():
    """A handler that sleeps until cancelled: (handler, started, cancelled) events."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("not cancelled")

    return handler, started, cancelled
