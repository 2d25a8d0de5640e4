"""Expiry without waiting: the engine's clock is moved forward instead of sleeping."""

from __future__ import annotations

import time


def advance_clock(server, seconds: float) -> None:
    server.handler.engine.clock = lambda: time.time() + seconds


async def test_sweeper_reclaims_expired_streams_nobody_asked_for(server, http):
    expiring = server.url(server.new_path("ttl"))
    lasting = server.url(server.new_path("keep"))
    async with http.put(expiring, headers={"Stream-TTL": "5"}) as r:
        assert r.status == 201
    async with http.put(lasting) as r:
        assert r.status == 201
    advance_clock(server, 10)
    assert await server.handler.engine.sweep_expired() == 1
    async with http.head(expiring) as r:
        assert r.status == 404
    async with http.head(lasting) as r:
        assert r.status == 200


async def test_head_does_not_refresh_ttl_but_get_does(server, http):
    url = server.url(server.new_path("slide"))
    async with http.put(url, headers={"Stream-TTL": "10"}) as r:
        assert r.status == 201
    advance_clock(server, 8)
    async with http.head(url) as r:
        assert r.status == 200 and r.headers["Stream-TTL"] == "10"
    async with http.get(url) as r:  # refreshes: now alive until +18
        assert r.status == 200
    advance_clock(server, 16)
    async with http.head(url) as r:
        assert r.status == 200
    advance_clock(server, 19)
    async with http.head(url) as r:
        assert r.status == 404
    async with http.put(url) as r:
        assert r.status == 201  # the path is free again


async def test_expired_source_with_fork_is_soft_deleted_and_cleaned_up(server, http):
    source_path, fork_path = server.new_path("src"), server.new_path("fork")
    source = server.url(source_path)
    async with http.put(source, data=b"abc", headers={"Stream-TTL": "5"}) as r:
        assert r.status == 201
    async with http.put(server.url(fork_path), headers={"Stream-Forked-From": source_path, "Stream-TTL": "100"}) as r:
        assert r.status == 201
    advance_clock(server, 10)
    async with http.head(source) as r:
        assert r.status == 410  # expired, but its fork still reads its bytes
    async with http.put(source) as r:
        assert r.status == 409
    async with http.get(server.url(fork_path)) as r:
        assert await r.read() == b"abc"
    async with http.delete(server.url(fork_path)) as r:
        assert r.status == 204
    async with http.head(source) as r:
        assert r.status == 404  # the last fork went: the source is gone for good


async def test_memory_store_forgets_producers_idle_for_a_week(server, http):
    url = server.url(server.new_path("producer"))
    async with http.put(url, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201

    def producer(epoch, seq):
        return {"Content-Type": "text/plain", "Producer-Id": "p", "Producer-Epoch": str(epoch),
                "Producer-Seq": str(seq)}

    async with http.post(url, data=b"a", headers=producer(3, 0)) as r:
        assert r.status == 200
    async with http.post(url, data=b"b", headers=producer(0, 0)) as r:
        assert r.status == 403  # fenced: epoch 3 is known
    advance_clock(server, 8 * 24 * 3600)
    async with http.post(url, data=b"c", headers=producer(0, 0)) as r:
        assert r.status == 200  # a week later the producer is treated as new


async def test_live_readers_keep_a_stream_alive(start_server, http):
    import asyncio

    async with start_server(long_poll_timeout=60) as server:
        url = server.url(server.new_path("kept"))
        async with http.put(url, headers={"Content-Type": "text/plain", "Stream-TTL": "5"}) as r:
            tail = r.headers["Stream-Next-Offset"]

        async def reader():
            async with http.get(url, params={"offset": tail, "live": "long-poll"}) as r:
                return r.status, await r.text()

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)  # let it wait
        advance_clock(server, 10)  # idle for twice its TTL, but a reader is waiting
        async with http.head(url) as r:
            assert r.status == 200
        async with http.post(url, data=b"news", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204
        assert await asyncio.wait_for(task, 10) == (200, "news")
        advance_clock(server, 16)  # idle again past its TTL with nobody waiting
        async with http.head(url) as r:
            assert r.status == 404
