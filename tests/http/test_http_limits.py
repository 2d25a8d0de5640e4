"""The HTTP layer's defaults for exposed servers, over real sockets: a head or body that
arrives too slowly is cut with 408, partial heads cost time linear in their size, and a
response that is being sent (long-poll, SSE) is never cut by these deadlines."""

from __future__ import annotations

import asyncio
import time

from durable_streams.server.http import Response, ServerSettings, StreamResponse
from durable_streams.server.http.framer import Limits, RequestFramer
from rawhttp import get


async def ok(request):
    await request.read()
    return Response(status=200, body=b"ok")


async def test_slow_head_is_cut_with_408(serve):
    served = await serve(ok, ServerSettings(head_timeout=0.3))
    client = await served.connect()
    await client.send(b"GET / HTTP/1.1\r\nHost: test\r\n")  # never finished
    started = time.monotonic()
    resp = await client.response(timeout=5)
    assert resp.status == 408 and resp.headers["Connection"] == "close"
    assert 0.25 < time.monotonic() - started < 3
    await client.assert_closed()


async def test_head_deadline_runs_from_the_first_byte_not_the_last(serve):
    served = await serve(ok, ServerSettings(head_timeout=1.0))
    client = await served.connect()
    started = time.monotonic()
    for piece in (b"GET / HT", b"TP/1.1\r\n", b"Host: t", b"est\r\n", b"X-Slow: a"):  # over 0.5 s
        await client.send(piece)
        await asyncio.sleep(0.1)
    # Cut 1 s after the first byte; a deadline from the last byte would be 1.5 s or later.
    resp = await client.response(timeout=5)
    assert resp.status == 408 and time.monotonic() - started < 1.4


async def test_slow_body_is_cut_with_408(serve):
    served = await serve(ok, ServerSettings(min_body_rate=1000, body_rate_grace=0.3))
    client = await served.connect()
    await client.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    resp = await client.response(timeout=10)
    assert resp.status == 408
    await client.assert_closed()


async def test_body_at_a_fair_rate_is_not_cut(serve):
    served = await serve(ok, ServerSettings(min_body_rate=1000, body_rate_grace=0.2))
    client = await served.connect()
    await client.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1500\r\n\r\n")
    for _ in range(6):  # 250 bytes per 0.1 s: 2500 B/s over 0.6 s
        await client.send(b"y" * 250)
        await asyncio.sleep(0.1)
    assert (await client.response()).status == 200


async def test_a_response_being_sent_is_never_cut_by_arrival_deadlines(serve):
    async def slow_stream(request):
        response = StreamResponse()
        await response.prepare(request)
        for _ in range(8):
            await response.write(b"tick\n")
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    served = await serve(slow_stream, ServerSettings(head_timeout=0.2, body_rate_grace=0.2, keepalive_timeout=0.3))
    client = await served.connect()
    await client.send(get())
    resp = await client.response(timeout=5)
    assert resp.status == 200 and resp.body == b"tick\n" * 8


async def test_a_trickled_1_mib_head_costs_linear_time():
    """llhttp parses as bytes arrive; the old parser searched the whole buffer again on
    every read (1.4 s of CPU for this head)."""
    heads = []

    class Sink:
        def on_head(self, head):
            heads.append(head)

        def on_body(self, data):
            pass

        def on_body_end(self):
            pass

    head = (b"GET / HTTP/1.1\r\nHost: test\r\n"
            + b"".join(b"X-%02d: %s\r\n" % (i, b"v" * 10700) for i in range(98)) + b"\r\n")
    assert len(head) > 1 << 20
    framer = RequestFramer(Sink(), Limits(max_head=2 << 20))
    started = time.process_time()
    for i in range(0, len(head), 256):
        framer.feed(head[i:i + 256])
    elapsed = time.process_time() - started
    assert len(heads) == 1 and len(heads[0].headers) == 99
    assert elapsed < 0.05, f"{elapsed * 1000:.0f} ms for a 1 MiB head in 256-byte pieces"


async def test_partial_heads_are_bounded_across_connections(serve):
    served = await serve(ok, ServerSettings(max_partial_heads=200_000, max_head_size=150_000,
                                            max_field_size=150_000, max_line_size=150_000))
    first, second = await served.connect(), await served.connect()
    await first.send(b"GET / HTTP/1.1\r\nHost: test\r\nX: " + b"a" * 1000)
    await first.send(b"a" * 120_000)  # first holds ~120 kB of an open head
    await asyncio.sleep(0.05)
    await second.send(b"GET / HTTP/1.1\r\nHost: test\r\nX: " + b"b" * 1000)
    await second.send(b"b" * 120_000)  # over the server's budget: refused
    resp = await second.response(timeout=5)
    assert resp.status == 431
    await first.send(b"\r\n\r\n")  # the first head is still served
    assert (await first.response(timeout=5)).status == 200
