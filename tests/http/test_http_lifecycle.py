"""Idle timeouts, graceful shutdown, listeners and request-body back-pressure."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile

import pytest

from durable_streams.server.http import BodyReader, HTTPServer, Response, ServerSettings
from rawhttp import TIMEOUT, RawClient, get, post, sleeping_handler, wait_until


async def hello(request):
    return Response(text="hello")



async def assert_refuses_connections(port: int) -> None:
    with pytest.raises(OSError):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        writer.close()


# ---------------------------------------------------------------- keepalive_timeout

async def test_idle_connection_without_a_request_is_closed(serve):
    served = await serve(hello, ServerSettings(keepalive_timeout=0.2))
    client = await served.connect()
    await client.assert_closed()
    await wait_until(lambda: not served.server.connections)


async def test_connection_that_sent_half_a_head_is_closed(serve):
    calls = []

    async def handler(request):
        calls.append(request)
        return Response()

    served = await serve(handler, ServerSettings(keepalive_timeout=0.2))
    client = await served.connect()
    await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    await client.assert_closed()  # no response at all
    assert calls == []


async def test_idle_keep_alive_connection_is_closed_after_its_response(serve):
    served = await serve(hello, ServerSettings(keepalive_timeout=0.2))
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.status == 200 and "Connection" not in resp.headers
    await client.assert_closed()


async def test_handler_longer_than_the_keepalive_timeout_is_not_cut(serve):
    async def slow(request):
        await asyncio.sleep(0.4)
        return Response(text="late")

    served = await serve(slow, ServerSettings(keepalive_timeout=0.2))
    client = await served.connect()
    await client.send(get("/"))
    resp = await client.response()
    assert resp.body == b"late"
    assert "Connection" not in resp.headers


# ---------------------------------------------------------------- listeners

async def test_stop_listening_keeps_open_connections(serve):
    served = await serve(hello)
    client = await served.connect()
    await client.send(get("/"))
    assert (await client.response()).status == 200
    await served.server.stop_listening()
    await assert_refuses_connections(served.port)
    await client.send(get("/"))
    assert (await client.response()).body == b"hello"


async def test_unix_socket_listener(tmp_path):
    path = str(tmp_path / "http.sock")
    if len(path) > 100:  # AF_UNIX path limit
        path = os.path.join(tempfile.mkdtemp(prefix="ds-http-"), "http.sock")
    seen = []

    async def handler(request):
        seen.append((request.remote, request.host, request.path))
        return Response(text="over unix")

    server = HTTPServer(handler)
    await server.listen_unix(path)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), TIMEOUT)
        client = RawClient(reader, writer)
        await client.send(get("/u", host="localhost") + get("/v", version="1.0", host=""))
        first = await client.response()
        assert (first.status, first.body) == (200, b"over unix")
        second = await client.response()
        assert second.body == b"over unix"
        await client.assert_closed()
        client.close()
        assert seen == [("", "localhost", "/u"), ("", "", "/v")]
    finally:
        await server.shutdown(0)


# ---------------------------------------------------------------- shutdown

async def test_shutdown_closes_idle_connections_at_once(serve):
    served = await serve(hello)
    kept_alive = await served.connect()
    await kept_alive.send(get("/"))
    assert (await kept_alive.response()).status == 200
    half = await served.connect()
    await half.send(b"GET / HTTP/1.1\r\n")
    await wait_until(lambda: len(served.server.connections) == 2)

    await asyncio.wait_for(served.server.shutdown(timeout=60), TIMEOUT)
    await kept_alive.assert_closed()
    await half.assert_closed()
    assert not served.server.connections
    await assert_refuses_connections(served.port)


async def test_shutdown_lets_an_in_flight_request_finish(serve):
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(request):
        if request.path == "/slow":
            started.set()
            await release.wait()
            await request.read()
        return Response(text=request.path)

    served = await serve(handler)
    idle = await served.connect()
    await idle.send(get("/idle"))
    assert (await idle.response()).status == 200
    busy = await served.connect()
    await busy.send(post("/slow", b"body") + get("/pipelined"))
    await asyncio.wait_for(started.wait(), TIMEOUT)

    shutdown = asyncio.create_task(served.server.shutdown(timeout=60))
    await idle.assert_closed()
    await assert_refuses_connections(served.port)
    assert not shutdown.done()
    assert len(served.server.connections) == 1

    release.set()
    resp = await busy.response()
    assert resp.status == 200
    assert resp.body == b"/slow"
    assert resp.headers["Connection"] == "close"
    await busy.assert_closed()  # the pipelined request is not started during shutdown
    await asyncio.wait_for(shutdown, TIMEOUT)
    assert not served.server.connections


async def test_shutdown_cuts_a_request_that_outlives_the_timeout(serve):
    handler, started, cancelled = sleeping_handler()
    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/forever"))
    await asyncio.wait_for(started.wait(), TIMEOUT)

    await asyncio.wait_for(served.server.shutdown(timeout=0.1), TIMEOUT)
    await client.assert_closed()  # no response
    await asyncio.wait_for(cancelled.wait(), TIMEOUT)
    assert not served.server.connections


async def test_shutdown_cuts_a_stream_that_outlives_the_timeout(serve):
    from durable_streams.server.http import StreamResponse

    started = asyncio.Event()

    async def handler(request):
        resp = StreamResponse()
        await resp.prepare(request)
        await resp.write(b"first")
        started.set()
        await asyncio.sleep(30)
        return resp

    served = await serve(handler)
    client = await served.connect()
    await client.send(get("/sse"))
    status, _, headers, _ = await client.head()
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await asyncio.wait_for(served.server.shutdown(timeout=0.1), TIMEOUT)
    rest = await client.read_to_eof()
    assert rest == b"5\r\nfirst\r\n"  # cut: no last chunk, so the client knows the body is incomplete


# ---------------------------------------------------------------- back-pressure

async def test_large_body_to_a_slow_reader_arrives_intact(serve):
    body = os.urandom(4 << 20)
    paused = []

    async def handler(request):
        await asyncio.sleep(0.1)  # the client has sent far more than the high-water mark by now
        paused.append(not request._conn.transport.is_reading())
        digest, size, pieces = hashlib.sha256(), 0, 0
        async for piece in request.content.iter_any():
            digest.update(piece)
            size += len(piece)
            pieces += 1
            if pieces % 8 == 0:
                await asyncio.sleep(0.001)
        return Response(text=f"{size} {digest.hexdigest()}")

    served = await serve(handler)
    client = await served.connect()
    sending = asyncio.create_task(client.send(post("/big", body)))
    resp = await client.response()
    await sending
    assert resp.body.decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    assert paused == [True]
    await client.send(get("/after"))  # reading resumed: the connection goes on
    assert (await client.response()).status == 200


async def test_large_chunked_body_to_a_slow_reader_arrives_intact(serve):
    pieces = [os.urandom(64 << 10) for _ in range(32)]

    async def handler(request):
        await asyncio.sleep(0.05)
        digest = hashlib.sha256()
        async for piece in request.content.iter_any():
            digest.update(piece)
            await asyncio.sleep(0)
        return Response(text=digest.hexdigest())

    served = await serve(handler)
    client = await served.connect()

    async def send() -> None:
        await client.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            await client.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        await client.send(b"0\r\n\r\n")

    sending = asyncio.create_task(send())
    resp = await client.response()
    await sending
    assert resp.body.decode() == hashlib.sha256(b"".join(pieces)).hexdigest()


async def test_ignored_body_above_the_high_water_mark_does_not_stall_the_connection(serve):
    sent = asyncio.Event()

    async def handler(request):
        if request.method == "POST":
            await sent.wait()  # answer without reading the body, once it has all arrived
        return Response(text=request.path)

    served = await serve(handler)
    client = await served.connect()
    size = BodyReader.HIGH_WATER + 1
    wire = post("/ignored", b"x" * size)
    await client.send(wire[:-1])
    await client.send(wire[-1:])  # the byte that crosses the mark also ends the body
    await asyncio.sleep(0.05)
    sent.set()
    assert (await client.response()).body == b"/ignored"
    await client.send(get("/next"))
    assert (await client.response(timeout=0.5)).body == b"/next"
