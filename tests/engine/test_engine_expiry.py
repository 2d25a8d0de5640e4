"""Lifetime: a sliding TTL restarted by touch (reads and writes, never a bare lookup),
an absolute Expires-At, no expiry while a live reader waits, and sweep_expired
reclaiming what nobody asked for. The engine's clock is a FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from engine_support import T0, fork, post, put, read_all

from durable_streams.server.engine.errors import StreamGone, StreamNotFound
from durable_streams.server.engine.expiry import Lifetime
from durable_streams.server.engine.streams import CreateResult, StreamEngine


async def test_ttl_expires_when_the_clock_reaches_it(engine, clock):
    await engine.create("/s", put(body=b"x", lifetime=Lifetime(ttl=10)))
    clock.advance(9.999)
    await engine.require("/s")  # a lookup (HEAD) does not restart the TTL
    clock.advance(0.001)
    with pytest.raises(StreamNotFound):
        await engine.require("/s")
    assert engine.stream_count == 0


async def test_ttl_slides_on_touch(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(ttl=10)))
    clock.advance(9)
    engine.touch(await engine.require("/s"))  # t0 + 9: now alive until t0 + 19
    clock.advance(9.999)
    await engine.require("/s")
    clock.advance(0.001)
    with pytest.raises(StreamNotFound):
        await engine.require("/s")


async def test_append_restarts_the_ttl(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(ttl=10)))
    clock.advance(8)
    await engine.append("/s", post(b"a"))
    clock.advance(8)
    assert (await engine.append("/s", post(b"b"))).tail == 2
    clock.advance(9.5)
    assert await read_all(engine, "/s") == b"ab"
    clock.advance(0.5)
    with pytest.raises(StreamNotFound):
        await engine.append("/s", post(b"c"))


async def test_expires_at_is_absolute(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(expires_at=T0 + 5, expires_at_text="later")))
    clock.advance(4)
    engine.touch(await engine.require("/s"))
    await engine.append("/s", post(b"a"))
    clock.advance(0.999)
    await engine.require("/s")
    clock.advance(0.001)
    with pytest.raises(StreamNotFound):
        await engine.require("/s")


async def test_expires_at_in_the_past(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(expires_at=T0 - 1)))
    with pytest.raises(StreamNotFound):
        await engine.require("/s")


async def test_no_lifetime_never_expires(engine, clock):
    await engine.create("/s", put())
    clock.advance(10 * 365 * 24 * 3600)
    await engine.require("/s")
    assert await engine.sweep_expired() == 0


async def test_create_at_an_expired_path_is_a_new_stream(engine, clock):
    await engine.create("/s", put(body=b"old", lifetime=Lifetime(ttl=10)))
    clock.advance(10)
    assert await engine.create("/s", put("application/json")) == CreateResult(True, "application/json", 0, False)
    assert await read_all(engine, "/s") == b""


async def test_live_waiter_keeps_the_stream(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(ttl=10)))
    stream = await engine.require("/s")
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(engine.wait(stream, 0, loop.time() + 5))
    await asyncio.sleep(0)
    clock.advance(60)
    assert await engine.sweep_expired() == 0
    assert await engine.require("/s") is stream
    await engine.append("/s", post(b"a"))  # wakes the waiter, at t0 + 60
    await asyncio.wait_for(waiter, 2)
    # Its idle time starts when the last reader stops waiting.
    clock.advance(9.5)
    await engine.require("/s")
    clock.advance(0.5)
    with pytest.raises(StreamNotFound):
        await engine.require("/s")


async def test_waiter_that_times_out_restarts_the_ttl(engine, clock):
    await engine.create("/s", put(lifetime=Lifetime(ttl=10)))
    stream = await engine.require("/s")
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(engine.wait(stream, 0, loop.time() + 0.02))
    await asyncio.sleep(0)
    clock.advance(30)
    await asyncio.wait_for(waiter, 2)  # touched at t0 + 30
    clock.advance(9.5)
    await engine.require("/s")
    clock.advance(0.5)
    with pytest.raises(StreamNotFound):
        await engine.require("/s")


async def test_sweep_reclaims_expired_streams(engine, clock):
    await engine.create("/ttl", put(lifetime=Lifetime(ttl=10)))
    await engine.create("/at", put(lifetime=Lifetime(expires_at=T0 + 20)))
    await engine.create("/long", put(lifetime=Lifetime(ttl=100)))
    await engine.create("/forever", put())
    clock.advance(10)
    assert await engine.sweep_expired() == 1
    assert engine.stream_count == 3
    clock.advance(10)
    assert await engine.sweep_expired() == 1
    assert await engine.sweep_expired() == 0
    assert engine.stream_count == 2
    await engine.require("/long")
    await engine.require("/forever")
    with pytest.raises(StreamNotFound):
        await engine.require("/ttl")


async def test_fork_inherits_the_ttl_value_with_its_own_window(engine, clock):
    await engine.create("/src", put(body=b"abc", lifetime=Lifetime(ttl=10)))
    await engine.create("/f", fork("/src"))
    forked = await engine.require("/f")
    clock.advance(6)
    engine.touch(forked)
    clock.advance(6)  # the source is past its TTL, the fork is not
    assert await read_all(engine, "/f") == b"abc"
    with pytest.raises((StreamGone, StreamNotFound)):
        await engine.require("/src")
    clock.advance(4)
    with pytest.raises(StreamNotFound):
        await engine.require("/f")


async def test_fork_inherits_expires_at(engine, clock):
    await engine.create("/src", put(lifetime=Lifetime(expires_at=T0 + 5)))
    await engine.create("/f", fork("/src"))
    await engine.create("/own", fork("/src", lifetime=Lifetime(ttl=100)))
    clock.advance(5)
    with pytest.raises(StreamNotFound):
        await engine.require("/f")
    await engine.require("/own")  # a fork may outlive its source


async def test_expired_fork_frees_its_deleted_source(engine, clock):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src", lifetime=Lifetime(ttl=10)))
    await engine.delete("/src")
    assert engine.stream_count == 2
    clock.advance(10)
    assert await engine.sweep_expired() == 1
    assert engine.stream_count == 0
    assert (await engine.create("/src", put())).created is True


async def test_deleted_source_is_free_once_its_fork_expired(engine, clock):
    await engine.create("/src", put(body=b"abc"))
    await engine.create("/f", fork("/src", lifetime=Lifetime(ttl=10)))
    await engine.delete("/src")
    clock.advance(10)
    # No sweep: the lookup itself drops the expired fork and then the source.
    assert await engine.create("/src", put()) == CreateResult(True, "text/plain", 0, False)
    with pytest.raises(StreamNotFound):
        await engine.require("/f")
    assert engine.stream_count == 1


async def test_touch_survives_reopen(make_store, clock):
    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    await engine.create("/s", put(lifetime=Lifetime(ttl=10)))
    clock.advance(5)
    engine.touch(await engine.require("/s"))
    await engine.close()

    engine = StreamEngine(make_store(), clock=clock)
    await engine.open()
    try:
        clock.advance(9.5)  # t0 + 14.5: alive only if the touch at t0 + 5 was kept
        await engine.require("/s")
        clock.advance(0.5)
        with pytest.raises(StreamNotFound):
            await engine.require("/s")
    finally:
        await engine.close()
