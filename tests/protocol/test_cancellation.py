"""A request cancelled while its write is in the store (client gone, server configured
to cancel handlers) must not leave the store and the engine disagreeing."""

from __future__ import annotations

import asyncio

from durable_streams.server.engine.streams import AppendRequest, CreateRequest, StreamEngine
from durable_streams.server.store.memory import MemoryStore


class SlowStore(MemoryStore):
    """Takes a while to "make the bytes durable", off the caller's task (as the file
    store's writer thread does)."""

    def append(self, path, data, commit):
        async def durable():
            await asyncio.sleep(0.05)
            await MemoryStore.append(self, path, data, commit)

        return asyncio.ensure_future(durable())


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


async def test_cancelled_append_on_the_file_store_still_commits(tmp_path):
    import time

    from durable_streams.server.store.file import FileStore

    store = FileStore(str(tmp_path / "data"), 4)
    engine = StreamEngine(store)
    await engine.open()
    await engine.create("/s", CreateRequest(content_type="text/plain"))
    store._writer.fault_hook = lambda stage: time.sleep(0.05) if stage == "fsync" else None
    task = asyncio.create_task(engine.append("/s", AppendRequest("text/plain", b"first")))
    await asyncio.sleep(0.01)  # the writer thread is in its (slow) fsync
    task.cancel()
    result = await engine.append("/s", AppendRequest("text/plain", b"second"))
    assert task.cancelled() or task.done()
    stream = await engine.require("/s")
    assert (await engine.read(stream, 0, 1 << 20)).data == b"firstsecond"
    assert result.tail == len(b"firstsecond")
    await engine.close()
