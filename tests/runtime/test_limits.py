"""Connection limits: header/URL size limits, `servers { timeouts }` that never cut live
readers, and clients that disconnect from a long-poll are let go at once."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest

from .helpers import free_port, port_of, serve
from .process import request, running_server

LIVE_SITE = (
    "{{\n\tservers {{\n\t\ttimeouts {{\n\t\t\tread_body 500ms\n\t\t\tread_header 500ms\n\t\t\tidle 500ms\n\t\t}}\n\t}}\n}}\n"
    ":0 {{\n\tbind 127.0.0.1\n\troute /v1/stream/* {{\n\t\tdurable_streams {{\n"
    "\t\t\tlong_poll_timeout {long_poll}\n\t\t}}\n\t}}\n}}\n"
)


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def test_size_limits_and_malformed_requests_log_one_line(tmp_path) -> None:
    port = free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(f"{{\n\tadmin off\n}}\n:{port} {{\n\tbind 127.0.0.1\n\troute /v1/stream/* {{\n\t\tdurable_streams\n\t}}\n}}\n")
    with running_server(config, port) as proc:
        # long URLs pass by default (up to 64 KiB per line; the protocol caps paths at 1 KiB)
        long_path = "/v1/stream/" + "s" * 1000
        assert request(port, "PUT", long_path)[0] == 201
        assert request(port, "GET", long_path + "?offset=-1&pad=" + "p" * 20_000)[0] == 200
        huge_url = f"GET /v1/stream/{'x' * 100_000}?token=url-secret HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        assert _raw(port, huge_url).startswith(b"HTTP/1.1 414 ")
        huge_header = f"GET /v1/stream/a HTTP/1.1\r\nHost: a\r\nX-Big: {'h' * 100_000}\r\n\r\n".encode()
        assert _raw(port, huge_header).startswith(b"HTTP/1.1 431 ")
        assert _raw(port, b"GET /v1/stream/a HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")  # no Host
        assert request(port, "HEAD", long_path)[0] == 200  # the server is fine
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr
    assert "url-secret" not in stderr
    warnings = [line for line in stderr.splitlines() if "malformed request from 127.0.0.1" in line]
    assert len(warnings) == 3 and all('"level": "warning"' in w for w in warnings)
    assert any("missing Host header" in w for w in warnings)


@pytest.mark.asyncio
async def test_max_header_size_applies_to_url_and_headers() -> None:
    text = "{\n\tservers {\n\t\tmax_header_size 4KiB\n\t}\n}\n:0 {\n\tbind 127.0.0.1\n\trespond ok\n}\n"
    async with serve(text) as app:
        port = port_of(app)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/{'a' * 3000}") as r:
                assert r.status == 200
            async with session.get(f"http://127.0.0.1:{port}/{'a' * 5000}") as r:
                assert r.status == 414
            async with session.get(f"http://127.0.0.1:{port}/", headers={"X-Big": "b" * 5000}) as r:
                assert r.status == 431


@pytest.mark.asyncio
async def test_long_poll_outlives_idle_read_header_and_read_body_timeouts() -> None:
    async with serve(LIVE_SITE.format(long_poll="1500ms"), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/lp"
        async with aiohttp.ClientSession() as session:
            async with session.put(url) as r:
                assert r.status == 201
                tail = r.headers["Stream-Next-Offset"]
            # waits long_poll_timeout (3x every server timeout) and still gets its answer
            async with session.get(url, params={"offset": tail, "live": "long-poll"}) as r:
                assert r.status == 204


@pytest.mark.asyncio
async def test_sse_stays_open_longer_than_idle() -> None:
    async with serve(LIVE_SITE.format(long_poll="30s"), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/sse"
        async with aiohttp.ClientSession() as session:
            async with session.put(url, headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 201
            async with session.get(url, params={"offset": "-1", "live": "sse"}) as sse:
                assert sse.status == 200
                await asyncio.sleep(1.5)  # three idle periods with nothing sent
                async with session.post(url, data=b"late data", headers={"Content-Type": "text/plain"}) as r:
                    assert r.status in (200, 204)
                seen = b""
                while b"late data" not in seen:
                    seen += await asyncio.wait_for(sse.content.readany(), timeout=10)


def _live_readers(app) -> int:
    (runtime,) = [h for h in app.compiler.lifecycle if hasattr(h, "impl")]
    return runtime.impl.live_readers


@pytest.mark.asyncio
async def test_a_disconnected_long_poll_client_is_let_go() -> None:
    async with serve(LIVE_SITE.format(long_poll="60s"), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/gone"
        async with aiohttp.ClientSession() as session:
            async with session.put(url) as r:
                tail = r.headers["Stream-Next-Offset"]
        session = aiohttp.ClientSession()
        poll = asyncio.ensure_future(session.get(url, params={"offset": tail, "live": "long-poll"}))
        deadline = time.monotonic() + 10
        while _live_readers(app) == 0:
            assert time.monotonic() < deadline, "the long-poll never arrived"
            await asyncio.sleep(0.02)
        poll.cancel()
        await session.close()  # the client goes away (connection closed)
        # without handler cancellation the reader would stay for the full 60 s long-poll
        deadline = time.monotonic() + 10
        while _live_readers(app) != 0:
            assert time.monotonic() < deadline, "the server kept a reader whose client left"
            await asyncio.sleep(0.02)
