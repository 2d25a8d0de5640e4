"""wait(): a live reader returns when the stream grows past its position, closes, or
the deadline (loop clock) passes, and learns when the stream is deleted under it."""

from __future__ import annotations

import asyncio

import pytest

from engine_support import close_only, fork, post, put

from durable_streams.server.engine.errors import StreamGone, StreamNotFound


async def start_waiting(engine, path: str, position: int, timeout: float = 5.0) -> asyncio.Task:
    stream = await engine.require(path)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(engine.wait(stream, position, loop.time() + timeout))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    return task


async def test_returns_on_append(engine):
    await engine.create("/s", put(body=b"ab"))
    task = await start_waiting(engine, "/s", 2)
    await engine.append("/s", post(b"c"))
    assert await asyncio.wait_for(task, 2) is None
    assert (await engine.require("/s")).state.tail == 3


async def test_returns_on_close(engine):
    await engine.create("/s", put(body=b"ab"))
    task = await start_waiting(engine, "/s", 2)
    await engine.append("/s", close_only())
    await asyncio.wait_for(task, 2)
    stream = await engine.require("/s")
    assert (stream.state.tail, stream.state.closed) == (2, True)


async def test_returns_at_the_deadline(engine):
    await engine.create("/s", put(body=b"ab"))
    stream = await engine.require("/s")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(engine.wait(stream, 2, started + 0.05), 2)
    assert loop.time() - started >= 0.045
    assert (stream.state.tail, stream.state.closed) == (2, False)


async def test_returns_at_once_when_there_is_news(engine):
    await engine.create("/s", put(body=b"ab"))
    await engine.create("/c", put(closed=True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await engine.wait(await engine.require("/s"), 1, started + 5)  # data past position 1
    await engine.wait(await engine.require("/c"), 0, started + 5)  # closed
    assert loop.time() - started < 1


async def test_raises_not_found_when_deleted(engine):
    await engine.create("/s", put(body=b"ab"))
    task = await start_waiting(engine, "/s", 2)
    await engine.delete("/s")
    with pytest.raises(StreamNotFound):
        await asyncio.wait_for(task, 2)


async def test_raises_gone_when_soft_deleted(engine):
    await engine.create("/s", put(body=b"ab"))
    await engine.create("/f", fork("/s"))
    task = await start_waiting(engine, "/s", 2)
    await engine.delete("/s")
    with pytest.raises(StreamGone):
        await asyncio.wait_for(task, 2)


async def test_fork_waiter_ignores_source_appends(engine):
    await engine.create("/src", put(body=b"ab"))
    await engine.create("/f", fork("/src"))
    task = await start_waiting(engine, "/f", 2)
    await engine.append("/src", post(b"X"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    await engine.append("/f", post(b"c"))
    await asyncio.wait_for(task, 2)


async def test_every_waiter_wakes(engine):
    await engine.create("/s", put())
    tasks = [await start_waiting(engine, "/s", 0) for _ in range(3)]
    await engine.append("/s", post(b"a"))
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
