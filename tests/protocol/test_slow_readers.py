"""A reader that stops reading its SSE connection is disconnected once its frames sit in
a full buffer past the bound, while the other subscribers of the same stream receive
every event, in order, during the stall. Real sockets on both sides."""

from __future__ import annotations

import asyncio
import re
import socket

import aiohttp
import pytest

from durable_streams.server.config.model import DurableStreams
from durable_streams.server.protocol.handler import SSE_HIGH_WATER, DurableStreamsHandler

# Guards against a hang, not performance expectations.
GUARD = 30.0
APPEND_SIZE = 16 << 10
# More than the kernel can absorb for one connection (socket send buffers grow to
# 4 MiB by default on Linux), so the stalled reader's frames must back up in the server.
APPENDS = 640
PAYLOADS_PER_APPEND = 8
NORMAL_READERS = 5
TEXT = {"Content-Type": "text/plain"}
_DATA_EVENT = re.compile(rb"event: data\n((?:data:[^\n]*\n)+)\n")


def payload(i: int) -> bytes:
    return f"<{i:06d}>".encode().ljust(APPEND_SIZE, b"x")


def event_text(sse: bytes) -> bytes:
    """The stream's text as carried by the data events (each payload is a single line)."""
    return b"".join(
        line[len(b"data:"):] for block in _DATA_EVENT.findall(sse) for line in block.splitlines()
    )


async def open_stalled_reader(port: int, path: str) -> socket.socket:
    """A raw SSE client with a tiny receive buffer that reads the headers, then stops."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {path}?offset=-1&live=sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = await loop.sock_recv(sock, 1)  # byte by byte: leave the body unread
        assert piece, "server closed before answering"
        head += piece
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


async def read_to_end(sock: socket.socket) -> bytes:
    """Resume reading until the server ends the connection (EOF or reset)."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    while True:
        try:
            piece = await loop.sock_recv(sock, 1 << 16)
        except ConnectionResetError:
            break
        if not piece:
            break
        received += piece
    return bytes(received)


async def normal_reader(http: aiohttp.ClientSession, url: str, total: int, ready: asyncio.Event,
                        count: list[int], received: list[bytes], release: asyncio.Event) -> None:
    """Collect the stream's text into `received`, then stay connected until `release`."""
    async with http.get(url, params={"offset": "-1", "live": "sse"}) as r:
        assert r.status == 200
        count[0] += 1
        if count[0] == NORMAL_READERS:
            ready.set()
        sse = bytearray()
        async for piece in r.content.iter_any():
            sse += piece
            # cheap check first; parse only when enough bytes could be there
            if len(sse) >= total and len(event_text(bytes(sse))) >= total:
                received.append(event_text(bytes(sse)))
                await release.wait()
                return
    raise AssertionError("SSE connection ended before all data arrived")


async def stream_with_stalled_reader(server, http):
    """A new text stream and an SSE reader on it that never reads: (path, url, its socket)."""
    path = server.new_path("slow")
    url = server.url(path)
    async with http.put(url, headers=TEXT) as r:
        assert r.status == 201
    port = int(server.base_url.rsplit(":", 1)[1])
    return path, url, await open_stalled_reader(port, path)


async def test_stalled_sse_reader_is_cut_while_others_get_everything(start_server, http):
    settings = dict(slow_reader_timeout=5.0, max_read_bytes=APPEND_SIZE, sse_reconnect_interval=120)
    async with start_server(**settings) as server:
        _, url, stalled = await stream_with_stalled_reader(server, http)
        try:
            expected = b"".join(payload(i) for i in range(APPENDS))
            ready, count, release = asyncio.Event(), [0], asyncio.Event()
            received: list[bytes] = []
            readers = [
                asyncio.ensure_future(normal_reader(http, url, len(expected), ready, count, received, release))
                for _ in range(NORMAL_READERS)
            ]
            await asyncio.wait_for(ready.wait(), GUARD)
            for first in range(0, APPENDS, PAYLOADS_PER_APPEND):  # served as 16 KiB frames
                batch = b"".join(payload(i) for i in range(first, first + PAYLOADS_PER_APPEND))
                async with http.post(url, data=batch, headers=TEXT) as r:
                    assert r.status == 204


            async def all_received() -> None:
                while len(received) < NORMAL_READERS:
                    await asyncio.wait(readers, timeout=0.05)
                    for reader in readers:
                        if reader.done():
                            reader.result()  # surface a reader's failure now

            await asyncio.wait_for(all_received(), GUARD)
            for text in received:
                assert text == expected  # every event, in order
            # The others were served while the stalled reader still held its connection.
            assert server.handler.live_readers == NORMAL_READERS + 1

            async def cut() -> None:
                while server.handler.live_readers > NORMAL_READERS:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(cut(), GUARD)
            seen = await asyncio.wait_for(read_to_end(stalled), GUARD)
            # An abort, not a clean end: the chunked body never got its last chunk, and
            # the reader did not receive the whole stream.
            assert not seen.endswith(b"0\r\n\r\n")
            assert len(event_text(seen)) < len(expected)
            assert server.handler.live_readers == NORMAL_READERS  # the others are still served
            release.set()
            await asyncio.wait_for(asyncio.gather(*readers), GUARD)
        finally:
            release.set()
            stalled.close()


@pytest.mark.parametrize("deadline", [None, 0.3], ids=["no-deadline", "deadline-cuts-the-wait"])
async def test_stop_cuts_a_stalled_reader_and_closes_the_store(start_server, http, tmp_path, deadline):
    """stop() does not wait for a reader that stopped reading; a caller's deadline that
    cancels stop() still leaves the connection cut and the store closed."""
    data_dir = str(tmp_path / "data")
    async with start_server(slow_reader_timeout=600, max_read_bytes=APPEND_SIZE, data_dir=data_dir) as server:
        path, url, stalled = await stream_with_stalled_reader(server, http)
        try:
            expected = b"".join(payload(i) for i in range(APPENDS))
            async with http.post(url, data=expected, headers=TEXT) as r:
                assert r.status == 204

            async def backed_up() -> None:
                """The server's writer is stuck: its buffer is over the high-water mark and
                no longer changes (a writer that can still write keeps adding frames)."""
                (request,) = server.handler._live.values()
                previous = -1
                while True:
                    size = request._conn.transport.get_write_buffer_size()
                    if size > SSE_HIGH_WATER and size == previous:
                        return
                    previous = size
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(backed_up(), GUARD)
            if deadline is None:
                await asyncio.wait_for(server.handler.stop(), GUARD)
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(server.handler.stop(), deadline)
            assert server.handler.live_readers == 0
            seen = await asyncio.wait_for(read_to_end(stalled), GUARD)
            assert not seen.endswith(b"0\r\n\r\n")
            # The store was closed (its lock released): a new one opens the same data.
            reopened = DurableStreamsHandler(DurableStreams(data_dir=data_dir))
            await reopened.start()
            try:
                chunk = await reopened.engine.read(await reopened.engine.require(path), 0, 1 << 30)
                assert chunk.data == expected
            finally:
                await reopened.stop()
        finally:
            stalled.close()
