"""What a TLS ClientHello asks for (server name and ALPN protocols), read before the handshake.

Python's `sni_callback` sees the server name but not the client's ALPN list, so it cannot
tell an ACME validator (ALPN `acme-tls/1`, RFC 8737) from an ordinary visitor to the same
name. Reading the ClientHello from the socket with MSG_PEEK, before TLS starts, can: the
bytes stay in the socket for the handshake that follows.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_EXT_ALPN = 0x0010
MAX_HELLO = 16 * 1024 + 5  # one TLS record: ClientHellos that span several are read as unknown


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None
    alpn: tuple[str, ...]


class _Short(Exception):
    """The bytes so far end inside the ClientHello: wait for more."""


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The server name and ALPN list of the ClientHello at the start of `data`.

    None: not a ClientHello (or malformed; the handshake will say so). Raises _Short while
    the record is incomplete."""
    if len(data) < 5:
        raise _Short
    if data[0] != _HANDSHAKE:
        return None
    (length,) = struct.unpack_from("!H", data, 3)
    if len(data) < 5 + length:
        if 5 + length > MAX_HELLO:
            return None
        raise _Short
    body = memoryview(data)[5:5 + length]
    try:
        return _hello(body)
    except (IndexError, struct.error, UnicodeDecodeError):
        return None


def _hello(body: memoryview) -> ClientHello | None:
    if body[0] != _CLIENT_HELLO:
        return None
    hello_len = int.from_bytes(body[1:4], "big")
    end = min(len(body), 4 + hello_len)
    pos = 4 + 2 + 32  # client_version, random
    pos += 1 + body[pos]  # session id
    (n,) = struct.unpack_from("!H", body, pos)
    pos += 2 + n  # cipher suites
    pos += 1 + body[pos]  # compression methods
    if pos >= end:
        return ClientHello(None, ())
    (ext_total,) = struct.unpack_from("!H", body, pos)
    pos += 2
    stop = min(end, pos + ext_total)
    name: str | None = None
    alpn: list[str] = []
    while pos + 4 <= stop:
        ext_type, ext_len = struct.unpack_from("!HH", body, pos)
        pos += 4
        ext = body[pos:pos + ext_len]
        pos += ext_len
        if ext_type == _EXT_SERVER_NAME and len(ext) >= 5:
            # server_name_list: length(2), then entries of type(1) length(2) name
            if ext[2] == 0:
                (name_len,) = struct.unpack_from("!H", ext, 3)
                name = bytes(ext[5:5 + name_len]).decode("ascii").lower()
        elif ext_type == _EXT_ALPN and len(ext) >= 2:
            i = 2
            while i < len(ext):
                size = ext[i]
                alpn.append(bytes(ext[i + 1:i + 1 + size]).decode("ascii", "replace"))
                i += 1 + size
    return ClientHello(name, tuple(alpn))


async def peek_client_hello(sock: socket.socket, timeout: float) -> ClientHello | None:
    """Wait (at most `timeout` seconds) until the socket holds a whole ClientHello and
    read it without consuming it. None when it does not come in time or is not one."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = sock.recv(MAX_HELLO, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            return None
        if data is not None:
            if not data:
                return None  # closed before saying anything
            try:
                return parse_client_hello(data)
            except _Short:
                pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, remaining)
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(sock.fileno())
        if data is not None:
            # more bytes arrived than last time only if the peek grows; avoid spinning on
            # a socket that stays readable with the same partial record
            await asyncio.sleep(0.005)
