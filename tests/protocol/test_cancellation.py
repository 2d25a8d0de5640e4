"""A request cancelled while its write is in the store (client gone, server configured
to cancel handlers) must not leave the store and the engine disagreeing."""

from __future__ import annotations

import asyncio

from durable_streams.server.engine.streams import AppendRequest, CreateRequest, StreamEngine
from durable_streams.server.store.memory import MemoryStore


class SlowStore(MemoryStore):
    """Keeps the bytes first, then takes a while to "make them durable"."""

    async def append(self, path, data, commit):
        await super().append(path, data, commit)
        await asyncio.sleep(0.05)


async def test_cancelled_append_still_commits_consistently():
    engine = StreamEngine(SlowStore())
    await engine.open()
    await engine.create("/s", CreateRequest(content_type="text/plain"))
    task = asyncio.create_task(engine.append("/s", AppendRequest("text/plain", b"first")))
    await asyncio.sleep(0.01)  # inside the store's append
    task.cancel()
    await asyncio.sleep(0.1)
    result = await engine.append("/s", AppendRequest("text/plain", b"second"))
    stream = await engine.require("/s")
    chunk = await engine.read(stream, 0, 1 << 20)
    assert chunk.data == b"firstsecond"
    assert result.tail == len(b"firstsecond") == chunk.next
