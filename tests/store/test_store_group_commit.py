"""Group commit: appends to many streams that arrive while a flush is in progress are
written and fsynced together, in one batch."""

from __future__ import annotations

import asyncio
import threading
import time

from durable_streams.server.store.base import Commit, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore

STREAMS = 200


async def test_appends_arriving_during_a_flush_share_the_next_fsync(tmp_path):
    store = FileStore(str(tmp_path))
    await store.open()
    paths = [f"/v1/stream/g{i}" for i in range(STREAMS)]
    await asyncio.gather(*(store.create(StreamConfig(p, "text/plain", time.time()), StreamState(tail=0)) for p in paths))
    writer = store._writer
    in_fsync, release = threading.Event(), threading.Event()

    def slow_first_fsync(stage: str) -> None:
        if stage == "fsync" and not release.is_set():
            in_fsync.set()
            release.wait(30)

    writer.fault_hook = slow_first_fsync
    flushes, records = store.flush_count, store.batch_records_total
    store.metrics.batch_records_max = 0  # the creates' batch does not count here
    first = asyncio.ensure_future(store.append(paths[0], b"first", Commit(tail=5)))
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, in_fsync.wait, 30)
    others = [asyncio.ensure_future(store.append(p, p.encode(), Commit(tail=len(p)))) for p in paths[1:]]
    for _ in range(3000):  # until every other append is queued behind the flush
        if writer._queue.qsize() == STREAMS - 1:
            break
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, *others)
    assert store.batch_records_total - records == STREAMS
    assert store.flush_count - flushes == 2  # the first append, then all the others together
    assert store.batch_records_max == STREAMS - 1
    got = await asyncio.gather(*(store.read(p, 0, len(p)) for p in paths[1:]))
    assert got == [p.encode() for p in paths[1:]]
    await store.close()


async def test_batches_are_bounded_in_bytes_and_keep_order(tmp_path, monkeypatch):
    from durable_streams.server.store.file import writer

    monkeypatch.setattr(writer, "MAX_BATCH_BYTES", 64)  # every few appends fill a batch
    store = FileStore(str(tmp_path), checkpoint_bytes=4096)  # and checkpoints run meanwhile
    await store.open()
    paths = [f"/v1/stream/b{i}" for i in range(20)]
    await asyncio.gather(*(store.create(StreamConfig(p, "text/plain", time.time()), StreamState(tail=0)) for p in paths))

    async def writer_task(path: str) -> None:
        tail = 0
        for n in range(30):
            chunk = f"{path}:{n};".encode()
            tail += len(chunk)
            await store.append(path, chunk, Commit(tail=tail))

    await asyncio.gather(*(writer_task(p) for p in paths))
    assert store.flush_count > 20 and store.metrics.checkpoints > 0
    await store.close()
    store = FileStore(str(tmp_path))
    streams = {s.config.path: s for s in await store.open()}
    for path in paths:
        expected = b"".join(f"{path}:{n};".encode() for n in range(30))
        assert streams[path].state.tail == len(expected)
        assert await store.read(path, 0, len(expected)) == expected
    await store.close()
