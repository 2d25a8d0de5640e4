"""Appends to one stream are queued in the store before the previous one is durable, so
they share its flushes; an append queued behind one that failed fails too, and the
stream stays exactly what was acknowledged."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time

import pytest

from durable_streams.server.engine.streams import AppendRequest, CreateRequest, StreamEngine
from durable_streams.server.store.base import Commit, StoreError, StreamConfig, StreamState
from durable_streams.server.store.file import FileStore


class SlowThenFail:
    """Writer fault seam: every fsync takes `delay`; fsyncs listed in `fail` (1-based)
    raise EIO."""

    def __init__(self, delay: float, fail: set[int] = frozenset()) -> None:
        self.delay, self.fail, self.fsyncs = delay, set(fail), 0
        self.lock = threading.Lock()

    def __call__(self, stage: str) -> None:
        if stage != "fsync":
            return
        with self.lock:
            self.fsyncs += 1
            n = self.fsyncs
        time.sleep(self.delay)
        if n in self.fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


async def _engine(tmp_path) -> tuple[StreamEngine, FileStore]:
    store = FileStore(str(tmp_path / "data"), 8)
    engine = StreamEngine(store)
    await engine.open()
    await engine.create("/s", CreateRequest(content_type="text/plain"))
    return engine, store


async def test_concurrent_appends_to_one_stream_share_flushes(tmp_path):
    engine, store = await _engine(tmp_path)
    store._writer.fault_hook = SlowThenFail(0.05)
    before = store.metrics.flush_count
    pieces = [f"<{i}>".encode() for i in range(40)]
    results = await asyncio.gather(*(engine.append("/s", AppendRequest("text/plain", p)) for p in pieces))
    flushes = store.metrics.flush_count - before
    assert flushes <= 4, flushes  # one fsync per append would be 40
    stream = await engine.require("/s")
    data = (await engine.read(stream, 0, 1 << 20)).data
    assert data == b"".join(pieces)  # queue order is landing order
    assert sorted(r.tail for r in results) == [r.tail for r in results]
    assert results[-1].tail == len(data) == stream.state.tail
    await engine.close()


async def test_appends_queued_behind_a_failed_one_fail_and_the_stream_stays_exact(tmp_path):
    engine, store = await _engine(tmp_path)
    # 1st fsync (one batch) is slow and fails: the appends queued meanwhile go in the
    # next batch, computed on tails that never landed.
    store._writer.fault_hook = SlowThenFail(0.05, fail={1})
    first = asyncio.ensure_future(engine.append("/s", AppendRequest("text/plain", b"AAAA")))
    await asyncio.sleep(0.01)  # in the failing fsync now
    behind = [asyncio.ensure_future(engine.append("/s", AppendRequest("text/plain", b"b%d" % i))) for i in range(5)]
    outcomes = await asyncio.gather(first, *behind, return_exceptions=True)
    assert all(isinstance(o, StoreError) for o in outcomes), outcomes
    stream = await engine.require("/s")
    assert stream.state.tail == 0 and stream._pending is None
    ok = await engine.append("/s", AppendRequest("text/plain", b"after"))
    assert ok.tail == 5
    assert (await engine.read(stream, 0, 1 << 20)).data == b"after"
    await engine.close()
    # and so it is on disk
    again = StreamEngine(FileStore(str(tmp_path / "data"), 8))
    await again.open()
    stream = await again.require("/s")
    assert (await again.read(stream, 0, 1 << 20)).data == b"after"
    await again.close()


async def test_store_refuses_an_append_that_does_not_start_at_the_durable_tail(tmp_path):
    store = FileStore(str(tmp_path / "data"), 8)
    await store.open()
    await store.create(StreamConfig("/s", "text/plain", 1.0, 0, {}), StreamState(tail=0))
    await store.append("/s", b"abc", Commit(tail=3))
    with pytest.raises(StoreError, match="durable tail"):
        await store.append("/s", b"xyz", Commit(tail=9))  # as if 3 bytes in between had landed
    await store.append("/s", b"def", Commit(tail=6))
    assert await store.read("/s", 0, 6) == b"abcdef"
    await store.close()
