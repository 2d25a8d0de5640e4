"""Request bodies over max_body_size are refused with 413, whether their length is
declared or they are streamed (chunked); the stream is left unchanged."""

from __future__ import annotations

import asyncio

OCTETS = {"Content-Type": "application/octet-stream"}


async def tail_of(http, url: str) -> str:
    async with http.head(url) as response:
        assert response.status == 200
        return response.headers["Stream-Next-Offset"]


async def test_declared_length_over_limit_is_413(start_server, http):
    async with start_server(max_body_size=1024) as server:
        url = server.url(server.new_path())
        async with http.put(url, headers=OCTETS) as r:
            assert r.status == 201
        before = await tail_of(http, url)
        async with http.post(url, data=b"x" * 1025, headers=OCTETS) as r:
            assert r.status == 413
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.post(url, data=b"x" * 1024, headers=OCTETS) as r:
            assert r.status == 204  # exactly at the limit is fine
        assert await tail_of(http, url) != before


async def test_chunked_body_over_limit_is_413(start_server, http):
    async with start_server(max_body_size=4096) as server:
        url = server.url(server.new_path())
        async with http.put(url, headers=OCTETS) as r:
            assert r.status == 201
        before = await tail_of(http, url)

        async def stream_body():
            for _ in range(64):
                yield b"y" * 1024

        async with http.post(url, data=stream_body(), headers=OCTETS) as r:
            assert r.status == 413
        assert await tail_of(http, url) == before


async def test_chunked_body_under_limit_is_appended(start_server, http):
    async with start_server(max_body_size=1 << 20) as server:
        url = server.url(server.new_path())
        async with http.put(url, headers=OCTETS) as r:
            assert r.status == 201

        async def stream_body():
            for i in range(10):
                yield bytes([i]) * 1000
                await asyncio.sleep(0)

        async with http.post(url, data=stream_body(), headers=OCTETS) as r:
            assert r.status == 204
        async with http.get(url) as r:
            assert await r.read() == b"".join(bytes([i]) * 1000 for i in range(10))


async def test_put_initial_body_is_limited_too(start_server, http):
    async with start_server(max_body_size=10) as server:
        url = server.url(server.new_path())
        async with http.put(url, data=b"z" * 11, headers=OCTETS) as r:
            assert r.status == 413
        async with http.head(url) as r:
            assert r.status == 404  # nothing was created
